"""``python -m forecasting``: see forecasting.cli."""

import sys

from .cli import main

if __name__ == "__main__":  # worker processes (forkserver) re-import this module
    sys.exit(main())
