"""``python -m forecasting``: see forecasting.cli."""

import sys

from .cli import main

sys.exit(main())
