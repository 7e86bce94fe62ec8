"""Allows ``python -m batchgen`` wherever the console script is not on PATH."""

import sys

from batchgen.cli import main

sys.exit(main())
