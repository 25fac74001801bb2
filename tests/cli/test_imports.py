"""The command starts without the analysis stack: `serve`, `close`, `jobs` need no xarray."""

from __future__ import annotations

import subprocess
import sys


def test_importing_the_command_does_not_import_xarray_or_matplotlib():
    code = "import sys, qm_xarray.cli; print(sorted(m for m in ('xarray', 'matplotlib') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out
