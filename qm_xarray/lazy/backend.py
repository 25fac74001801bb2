"""The xarray engine "qm": `xr.open_dataset(job, engine="qm")` (a thin entrypoint over a snapshot)."""

from __future__ import annotations

import warnings
from typing import Any

from xarray.backends import BackendEntrypoint

from .. import _tokens
from .options import OPEN_PARAMETERS

__all__ = ["QmBackendEntrypoint", "OPEN_PARAMETERS"]


class QmBackendEntrypoint(BackendEntrypoint):
    """Open a job of a QM results server as a Dataset: one variable per result stream.

    The options are those of `OpenOptions` (lazy/options.py), plus `wait` and `timeout` for this
    snapshot; xarray's decoder arguments are accepted and ignored (results need no decoding).
    """

    description = "Quantum Machines result streams from a results server (qm-xarray)"
    url = "https://github.com/qm-xarray/qm-xarray"
    open_dataset_parameters = OPEN_PARAMETERS

    def open_dataset(
        self,
        filename_or_obj: Any,
        *,
        wait: int | str | None = None,
        timeout: float | None = None,
        mask_and_scale: Any = None,
        decode_times: Any = None,
        decode_timedelta: Any = None,
        use_cftime: Any = None,
        concat_characters: Any = None,
        decode_coords: Any = None,
        **options: Any,
    ) -> Any:
        from .layout import build_dataset
        from .options import OpenOptions
        from .snapshots import default_streams, resolve_job, snapshot

        opts = OpenOptions.of(options)
        job = resolve_job(filename_or_obj, timeout)
        if opts.streams is None and default_streams(filename_or_obj) is not None:
            opts = OpenOptions.of({**opts.kwargs(), "streams": default_streams(filename_or_obj)})
        snap = snapshot(job, streams=opts.streams, wait=wait, timeout=timeout)
        ds = build_dataset(snap, opts)
        if isinstance(filename_or_obj, str):
            if not snap.final:
                warnings.warn(
                    "opened a running job by its address string: dask names made from a string "
                    "cannot tell two snapshots apart; open a Job object (qx.connect(...).job(id)) "
                    "to combine snapshots of a growing job", UserWarning, stacklevel=3)
        else:
            _remember_snapshot(filename_or_obj, snap)
            if job is not filename_or_obj:  # a qm-qua object, read through our Job
                _remember_snapshot(job, snap)
        ds.encoding["qm_open_options"] = opts
        ds.encoding["qm_job"] = job
        return ds

    def guess_can_open(self, filename_or_obj: Any) -> bool:
        """Our Job or StreamsManager, a `qm://` string, or qm-qua's job objects, StreamsManager
        and fetchers (by class name and module: no I/O, no import of qm-qua)."""
        if isinstance(filename_or_obj, str):
            return filename_or_obj.startswith("qm://")
        cls = type(filename_or_obj)
        if cls.__name__ in ("Job", "StreamsManager") and cls.__module__.startswith("qm_xarray"):
            return True
        if not any(c.__module__.split(".")[0] == "qm" for c in cls.__mro__):
            return False  # checked before importing our client: xarray asks this of every file
        from ..client.qmqua import kind_of

        return kind_of(filename_or_obj) in ("job", "streams", "fetcher")


def _remember_snapshot(obj: Any, snap: Any) -> None:
    """xarray tokenizes the opened object after this returns: give it this snapshot's identity."""
    _tokens.remember(obj, snap.__dask_tokenize__())
