"""scaled_decay: torch optimizers whose weight decay is decoupled and scaled per tensor.

>>> import scaled_decay as sd
>>> opt = sd.AdamW(sd.param_groups(model, weight_decay=0.1), lr=1e-3, decay_scaling="fan_in")
>>> print(opt.decay_report())
"""
from .adam import Adam, AdamW
from .equilibrium import EquilibriumMonitor, EquilibriumReport, EquilibriumRow
from .groups import param_groups
from .modes import DECAY_MODES
from .report import DecayReport, DecayRow
from .rules import FanIn, ParamCount, StepsPerEpoch
from .sgd import SGD

__version__ = "0.1.0"

__all__ = [
    "SGD", "Adam", "AdamW", "FanIn", "ParamCount", "StepsPerEpoch", "param_groups",
    "DecayReport", "DecayRow", "DECAY_MODES", "EquilibriumMonitor", "EquilibriumReport",
    "EquilibriumRow",
]
