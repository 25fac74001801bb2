"""`python -m qm_xarray`: the `qm-xarray` command."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
