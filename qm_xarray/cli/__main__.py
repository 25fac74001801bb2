"""`python -m qm_xarray.cli`: the `qm-xarray` command (as `python -m qm_xarray`)."""

import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())
