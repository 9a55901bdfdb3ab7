"""scaled_decay: torch optimizers whose weight decay is decoupled and scaled per tensor.

>>> import scaled_decay as sd
>>> opt = sd.AdamW(sd.param_groups(model, weight_decay=0.1), lr=1e-3, decay_scaling="fan_in")
>>> print(opt.decay_report())
"""

from .adam import Adam, AdamW
from .decay_schedule import WeightDecayScheduler
from .equilibrium import EquilibriumMonitor, EquilibriumReport, EquilibriumRow
from .frameworks import decay_report, register_timm_optimizers, trainer_factory
from .groups import DecaySplit, ParamGroups, param_groups
from .modes import DECAY_MODES
from .modules import register_module
from .report import DecayReport, DecayRow, GroupSummary
from .rules import FanIn, MuonShape, ParamCount, StepsPerEpoch
from .sgd import SGD
from .timescale import Timescale
from .wrap import with_scaled_decay

__version__ = "0.1.0"

__all__ = [
    "DECAY_MODES",
    "SGD",
    "Adam",
    "AdamW",
    "DecayReport",
    "DecayRow",
    "DecaySplit",
    "EquilibriumMonitor",
    "EquilibriumReport",
    "EquilibriumRow",
    "FanIn",
    "GroupSummary",
    "MuonShape",
    "ParamCount",
    "ParamGroups",
    "StepsPerEpoch",
    "Timescale",
    "WeightDecayScheduler",
    "decay_report",
    "param_groups",
    "register_module",
    "register_timm_optimizers",
    "trainer_factory",
    "with_scaled_decay",
]
