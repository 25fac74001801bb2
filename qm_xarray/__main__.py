"""`python -m qm_xarray`: the `qm-xarray` command (the package `qm_xarray.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
