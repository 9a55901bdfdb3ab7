"""The update math, one module per optimizer: ``adam`` and ``sgd``.

Each holds its foreach math (run by the "loop" and "foreach" backends), the call of torch's
fused op for it and that op's probe, and what a step plan needs to know of it (state keys,
lazy state, the group keys that shape a plan). The Triton kernels (``scaled_decay.kernels``)
mirror the same math; ``scaled_decay.dispatch`` runs whichever a plan chose.
"""

from . import adam, sgd

__all__ = ["adam", "sgd"]
