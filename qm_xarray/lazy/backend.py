"""The xarray engine "qm": `xr.open_dataset(job, engine="qm")` (a thin entrypoint over a snapshot)."""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any

from xarray.backends import BackendEntrypoint

from .. import _tokens

__all__ = ["QmBackendEntrypoint", "OPEN_PARAMETERS"]

OPEN_PARAMETERS = (
    "filename_or_obj", "drop_variables", "streams", "dims", "coords", "align", "item_dim",
    "timestamps", "wait", "timeout", "chunk_bytes", "on_dataloss",
    # xarray's decoders: accepted so that passing them does not fail; results need no decoding
    "mask_and_scale", "decode_times", "decode_timedelta", "use_cftime", "concat_characters",
    "decode_coords",
)


class QmBackendEntrypoint(BackendEntrypoint):
    """Open a job of a QM results server as a Dataset: one variable per result stream."""

    description = "Quantum Machines result streams from a results server (qm-xarray)"
    url = "https://github.com/qm-xarray/qm-xarray"
    open_dataset_parameters = OPEN_PARAMETERS

    def open_dataset(  # type: ignore[override]
        self,
        filename_or_obj: Any,
        *,
        drop_variables: str | Iterable[str] | None = None,
        streams: Sequence[str] | None = None,
        dims: Mapping[str, Sequence[str]] | None = None,
        coords: Mapping[Hashable, Any] | None = None,
        align: bool | Sequence[str] | None = None,
        item_dim: str = "item",
        timestamps: str = "coord",
        wait: int | str | None = None,
        timeout: float | None = None,
        chunk_bytes: int | None = None,
        on_dataloss: str = "warn",
        mask_and_scale: Any = None,
        decode_times: Any = None,
        decode_timedelta: Any = None,
        use_cftime: Any = None,
        concat_characters: Any = None,
        decode_coords: Any = None,
    ) -> Any:
        from .layout import LayoutOptions, build_dataset
        from .snapshot import default_streams, resolve_job, snapshot

        job = resolve_job(filename_or_obj, timeout)
        if streams is None:
            streams = default_streams(filename_or_obj)
        snap = snapshot(job, streams=streams, wait=wait, timeout=timeout)
        drop = [drop_variables] if isinstance(drop_variables, str) else list(drop_variables or ())
        options = LayoutOptions(dims=dims or {}, coords=coords or {}, align=align, item_dim=item_dim,
                                timestamps=timestamps, chunk_bytes=chunk_bytes,
                                on_dataloss=on_dataloss, drop_variables=drop)
        ds = build_dataset(snap, options)
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
        ds.encoding["qm_open_kwargs"] = {
            "streams": streams, "dims": dims, "coords": coords, "align": align, "item_dim": item_dim,
            "timestamps": timestamps, "chunk_bytes": chunk_bytes, "on_dataloss": on_dataloss,
            "drop_variables": drop_variables}
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
