"""asv benchmarks of qm_xarray (see README.md)."""
