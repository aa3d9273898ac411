"""``python -m experiments ...`` is the ``fedkit`` console script."""

import sys

from experiments.cli import main

if __name__ == "__main__":
    sys.exit(main())
