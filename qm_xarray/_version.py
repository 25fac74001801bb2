"""The package version (a leaf module: every layer may import it)."""

__version__ = "0.1.0"
IMPLEMENTATION = "qm-xarray"  # the name our server gives of itself (GetInfo, GetServerInfo)
