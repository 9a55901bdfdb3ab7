"""torch.compile support: hyperparameters that stay tensors while Dynamo traces the step.

In eager mode the math takes Python floats (``lr``, Adam's step count ``t``): a 0-d tensor
``lr`` is read once per step with ``.item()``, so it gives the same numbers as a float lr.
Under ``torch.compile`` reading a tensor's value would break the graph and bake the value
in (one recompile per new value); there the math keeps them as tensors instead, as
torch.optim does, so an LR scheduler that changes a tensor lr in place never recompiles.
"""

from __future__ import annotations

import torch

__all__ = ["is_compiling", "scalar"]


def is_compiling() -> bool:
    """True while Dynamo traces (``torch.compiler.is_compiling``)."""
    return torch.compiler.is_compiling()


def scalar(x):
    """A hyperparameter as the math takes it: a float in eager, the tensor when compiling."""
    if isinstance(x, torch.Tensor) and not is_compiling():
        return x.item()
    return x
