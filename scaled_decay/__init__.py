"""scaled_decay: torch optimizers whose weight decay is decoupled and scaled per tensor.

- Optimizers: `SGD`, `Adam`, `AdamW`, and `with_scaled_decay` for any other torch optimizer;
  `DECAY_MODES` lists the values of their `decay_mode` argument.
- Rules: `FanIn`, `ParamCount`, `StepsPerEpoch`, `MuonShape` (how the decay scales per
  tensor), `Timescale` (the decay given as an EMA timescale) and `WeightDecayScheduler`.
- Grouping and reports: `param_groups` (which tensors decay) with `ParamGroups` and
  `DecaySplit`, and `decay_report` with `DecayReport`, `DecayRow` and `GroupSummary`.
- Integrations: `trainer_factory` (Hugging Face Trainer), `register_timm_optimizers`, and
  `register_module` (fan-in of your own module types).
- Diagnostics: `EquilibriumMonitor` with `EquilibriumReport` and `EquilibriumRow`.

Example:
    >>> import scaled_decay as sd
    >>> opt = sd.AdamW(sd.param_groups(model, weight_decay=0.1), lr=1e-3, decay_scaling="fan_in")
    >>> print(opt.decay_report())
"""

# Optimizers
from .adam import Adam, AdamW
from .modes import DECAY_MODES
from .sgd import SGD
from .wrap import with_scaled_decay

# Rules: how the decay scales with each tensor, and how it is given or scheduled
from .decay_schedule import WeightDecayScheduler
from .rules import FanIn, MuonShape, ParamCount, StepsPerEpoch
from .timescale import Timescale

# Grouping and reports: which tensors decay, and by how much
from .frameworks import decay_report
from .groups import DecaySplit, ParamGroups, param_groups
from .report import DecayReport, DecayRow, GroupSummary

# Integrations: Hugging Face Trainer, timm, and module types of your own
from .frameworks import register_timm_optimizers, trainer_factory
from .modules import register_module

# Diagnostics: the weights' equilibrium norm and angular update
from .equilibrium import EquilibriumMonitor, EquilibriumReport, EquilibriumRow

__version__ = "0.2.0"

__all__ = [
    # optimizers
    "DECAY_MODES",
    "SGD",
    "Adam",
    "AdamW",
    "with_scaled_decay",
    # rules
    "FanIn",
    "MuonShape",
    "ParamCount",
    "StepsPerEpoch",
    "Timescale",
    "WeightDecayScheduler",
    # grouping and reports
    "DecayReport",
    "DecayRow",
    "DecaySplit",
    "GroupSummary",
    "ParamGroups",
    "decay_report",
    "param_groups",
    # integrations
    "register_module",
    "register_timm_optimizers",
    "trainer_factory",
    # diagnostics
    "EquilibriumMonitor",
    "EquilibriumReport",
    "EquilibriumRow",
]
