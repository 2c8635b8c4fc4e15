"""``python -m robrep ...`` is the ``robrep`` command (also usable with ``torchrun -m robrep``)."""

import sys

from .cli import main

sys.exit(main())
