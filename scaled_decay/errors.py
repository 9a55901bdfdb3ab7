"""Exception types for bad input: a ValueError, and also what torch.optim raises.

Bad input is a ``ValueError`` naming the argument and the value; torch.optim raises
``TypeError`` for a value of the wrong type (``lr="0.1"``), ``IndexError`` for a one-element
``betas`` and ``RuntimeError`` for some combinations (``fused=True, foreach=True``). Code
written against torch.optim catches those types, so where torch raises one of them the
package raises a class that is both a ValueError and torch's type.
"""

from __future__ import annotations

__all__ = ["ArgumentIndexError", "ArgumentRuntimeError", "ArgumentTypeError"]


class ArgumentTypeError(ValueError, TypeError):
    """A bad argument of the wrong type (torch.optim: TypeError)."""


class ArgumentIndexError(ValueError, IndexError):
    """A sequence argument with too few entries (torch.optim: IndexError)."""


class ArgumentRuntimeError(ValueError, RuntimeError):
    """A bad argument torch.optim rejects with RuntimeError."""
