"""The zarr side of an export: template, appends along item dimensions, commit marker, repair.

Layout: the same variables, dims, coords and attrs as `xr.open_dataset(job, engine="qm")`, written
by xarray once (the template, zero items), then grown with zarr directly. The root attribute
`qm_committed` ({item dim: count}) is written only after the data it covers, so an interrupted
export is repaired on resume by cutting every array back to its committed count.

Whatever xarray writes (the template, variables of streams declared later) is written into a
hidden sibling directory first and moved into place with one rename per array or store, so a kill
never leaves a half-made template, and xarray never rewrites the root attributes of a live store
(`to_zarr(mode="a")` replaces them, which would drop the commit marker).
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
import zarr
from zarr.codecs import BloscCodec

from ..errors import QmValueError
from ..files import write_atomic

__all__ = ["ExportStore", "default_compressors", "NotOurStoreError"]

COMMITTED = "qm_committed"
COMPLETE = "qm_export_complete"


class NotOurStoreError(QmValueError):
    """The path holds something that is not a qm-xarray export (or an export of another job)."""


def default_compressors(compression: str | None) -> Any:
    """"default": Blosc zstd level 3 with byte shuffle; None or "none": no compression."""
    if compression in (None, "none"):
        return None
    if compression == "default":
        return [BloscCodec(cname="zstd", clevel=3, shuffle="shuffle")]
    raise QmValueError(f"compression must be 'default' or None, got {compression!r}")


class ExportStore:
    """A zarr v3 group on disk that holds one job's export."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    # -- reading state -----------------------------------------------------------------------
    def exists(self) -> bool:
        return (self.path / "zarr.json").exists()

    def group(self, mode: str = "r+") -> zarr.Group:
        return zarr.open_group(str(self.path), mode=mode, zarr_format=3)  # type: ignore[arg-type]

    def attrs(self) -> dict[str, Any]:
        return dict(self.group("r").attrs)

    def is_consolidated(self) -> bool:
        return "consolidated_metadata" in json.loads((self.path / "zarr.json").read_text())

    def dimension_names(self) -> dict[str, tuple[str, ...]]:
        """The dimensions of every array, by name."""
        return {str(name): _dimension_names(array) for name, array in self.group("r").arrays()}

    def committed(self) -> dict[str, int] | None:
        """Committed item counts per item dimension; None if the template was never finished."""
        value = self.attrs().get(COMMITTED)
        return None if value is None else {k: int(v) for k, v in value.items()}

    def check_job(self, job_id: str) -> None:
        attrs = self.attrs()
        if attrs.get("qm_job_id") != job_id:
            raise NotOurStoreError(
                f"{self.path} holds {'job ' + repr(attrs['qm_job_id']) if 'qm_job_id' in attrs else 'no qm-xarray export'}"
                f", not job {job_id!r}; choose another path")

    # -- writing -------------------------------------------------------------------------------
    def _scratch(self) -> Path:
        """A hidden sibling directory for xarray writes, emptied first (a killed run may leave one)."""
        scratch = self.path.parent / f".{self.path.name}.qm-partial"
        shutil.rmtree(scratch, ignore_errors=True)
        return scratch

    def write_template(self, ds: xr.Dataset, item_dims: dict[str, int], compressors: Any) -> None:
        """Write every variable with zero items (metadata, coords, `save` values), marked as
        committed at zero, beside the target; then move it into place in one rename."""
        empty = ds.isel({dim: slice(0, 0) for dim in item_dims}).load()
        encoding = {}
        for name, var in empty.variables.items():
            if var.ndim == 0 and name not in empty.data_vars and name not in empty.coords:
                continue
            enc: dict[str, Any] = {"compressors": compressors}
            if var.ndim:
                chunks = [item_dims.get(d, ds.sizes[d]) if d in item_dims else max(ds.sizes[d], 1)
                          for d in var.dims]
                enc["chunks"] = tuple(max(int(c), 1) for c in chunks)
            encoding[name] = enc
        self.path.parent.mkdir(parents=True, exist_ok=True)
        scratch = self._scratch()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=UserWarning)
            empty.to_zarr(str(scratch), mode="w-", consolidated=False, zarr_format=3,
                          encoding=encoding)
        zarr.open_group(str(scratch), mode="r+", zarr_format=3).attrs.update(
            {COMMITTED: dict.fromkeys(item_dims, 0)})
        if self.path.is_dir() and not any(self.path.iterdir()):
            self.path.rmdir()  # an empty directory made for the export
        os.replace(scratch, self.path)

    def add_variables(self, ds: xr.Dataset, encoding: dict[str, dict[str, Any]]) -> None:
        """Add (or replace) the variables of `ds`, with whatever items they hold, one rename per
        array; the root attributes are not touched. A replaced array is moved out of the way first
        (a kill in between leaves it missing, and the next run adds it again)."""
        scratch = self._scratch()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", category=UserWarning)
                ds.drop_attrs(deep=False).to_zarr(str(scratch), mode="w-", consolidated=False,
                                                   zarr_format=3, encoding=encoding)
            for name in map(str, ds.variables):
                if (scratch / name).is_dir():
                    if (self.path / name).exists():
                        os.replace(self.path / name, scratch / f"{name}.old")
                    os.replace(scratch / name, self.path / name)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def set_attrs(self, attrs: dict[str, Any]) -> None:
        self.group().update_attributes(attrs)  # one metadata write (attrs.update: one per key)

    def set_variable_attrs(self, attrs: dict[str, dict[str, Any]]) -> None:
        """Update the attributes of variables whose stored ones differ (e.g. `qm_count`)."""
        group = self.group()
        for name, array in group.arrays():
            new = attrs.get(name)
            if new and any(array.attrs.get(k) != v for k, v in new.items()):
                array.update_attributes(new)

    def repair(self, committed: dict[str, int]) -> list[str]:
        """Cut arrays along item dims back to the committed counts; returns what was repaired."""
        repaired = []
        for name, array in self.group().arrays():
            dims = _dimension_names(array)
            if dims and dims[0] in committed and array.shape[0] != committed[dims[0]]:
                array.resize((committed[dims[0]], *array.shape[1:]))
                repaired.append(name)
        return repaired

    def append(self, dim: str, start: int, data: dict[str, np.ndarray]) -> None:
        """Write items `[start, start + n)` of every variable along item dimension `dim`."""
        group = self.group()
        for name, values in data.items():
            # every chunk we write holds data: skip zarr's comparison of each with the fill value
            array = _array(group, name).with_config({"write_empty_chunks": True})
            stop = start + len(values)
            if array.shape[0] != stop:
                array.resize((stop, *array.shape[1:]))
            step = array.chunks[0]
            pos = start
            while pos < stop:  # one write per chunk: zarr encodes it without an extra copy
                end = min(stop, (pos // step + 1) * step)
                array[pos:end] = values[pos - start:end - start]
                pos = end

    def overwrite(self, data: dict[str, np.ndarray]) -> None:
        """Replace whole (non-growing) variables, e.g. the current value of `save` streams."""
        group = self.group()
        for name, values in data.items():
            array = _array(group, name)
            values = np.asarray(values)
            if array.shape != values.shape:
                array.resize(values.shape)
            array[...] = values

    def finalize(self, attrs: dict[str, Any]) -> None:
        """Final attrs, then consolidated metadata so `xr.open_zarr` needs no listing."""
        self.set_attrs({**attrs, COMPLETE: True})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            zarr.consolidate_metadata(str(self.path))

    def unfinalize(self) -> None:
        """Before changing a finalized store: drop the consolidated metadata it would contradict."""
        meta_path = self.path / "zarr.json"
        meta = json.loads(meta_path.read_text())
        if "consolidated_metadata" in meta:
            meta.pop("consolidated_metadata")
            write_atomic(meta_path, json.dumps(meta).encode())


def _array(group: zarr.Group, name: str) -> zarr.Array[Any]:
    """The array `name` of the store (a group there would be a foreign store)."""
    array = group[name]
    if not isinstance(array, zarr.Array):
        raise NotOurStoreError(f"{name!r} in the store is a group, not an array of an export")
    return array


def _dimension_names(array: zarr.Array[Any]) -> tuple[str, ...]:
    """The dimension names of a zarr v3 array (none for v2 arrays)."""
    return tuple(str(d) for d in getattr(array.metadata, "dimension_names", None) or ())
