"""``python -m scaled_decay.transfer``: the same as ``scaled-decay transfer``."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
