"""`OpenOptions`: the options of engine "qm", defined and checked once.

`xr.open_dataset(job, engine="qm", **options)`, `qx.refresh`, `qx.watch`, `qx.export_zarr` and
the CLI take exactly these, with the same checks; the engine's parameter list is derived from
them. `check_interval` is the one rule for the polling interval of `watch` and `export_zarr`.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from ..errors import QmTypeError, QmValueError

__all__ = ["OpenOptions", "OPTION_NAMES", "PER_OPEN", "XARRAY_DECODERS", "OPEN_PARAMETERS",
           "check_interval"]

TIMESTAMPS = ("coord", "variable", "drop")
ON_DATALOSS = ("warn", "raise", "ignore")


def _names(value: Any, what: str) -> tuple[str, ...]:
    names = (value,) if isinstance(value, str) else tuple(value)
    if not all(isinstance(n, str) for n in names):
        raise QmTypeError(f"{what} must be stream names (strings), got {value!r}")
    return names


@dataclass(frozen=True)
class OpenOptions:
    """How a job becomes a Dataset (docs/lazy.md): which streams, their dims and coords, aligned
    item axes, timestamps, chunk size, and what data loss does."""

    streams: tuple[str, ...] | None = None
    drop_variables: tuple[str, ...] = ()
    dims: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    coords: Mapping[Hashable, Any] = field(default_factory=dict)
    align: bool | tuple[str, ...] | None = None
    item_dim: str = "item"
    timestamps: str = "coord"
    chunk_bytes: int | None = None
    on_dataloss: str = "warn"

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if self.streams is not None:
            set_(self, "streams", _names(self.streams, "streams"))
        set_(self, "drop_variables", _names(self.drop_variables or (), "drop_variables"))
        if not isinstance(self.dims, Mapping):
            raise QmTypeError(f"dims must map stream names to axis names, got {self.dims!r}")
        set_(self, "dims", {k: _names(v, f"dims of {k!r}") for k, v in self.dims.items()})
        if not isinstance(self.coords, Mapping):
            raise QmTypeError(f"coords must map names to values, got {type(self.coords).__name__}")
        if self.align not in (None, True, False):
            set_(self, "align", _names(self.align, "align"))
        if not isinstance(self.item_dim, str) or not self.item_dim:
            raise QmValueError(f"item_dim must be a dimension name, got {self.item_dim!r}")
        if self.timestamps not in TIMESTAMPS:
            raise QmValueError(f"timestamps must be 'coord', 'variable' or 'drop', got {self.timestamps!r}")
        if self.on_dataloss not in ON_DATALOSS:
            raise QmValueError(f"on_dataloss must be 'warn', 'raise' or 'ignore', got {self.on_dataloss!r}")
        if self.chunk_bytes is not None and (isinstance(self.chunk_bytes, bool) or not isinstance(
                self.chunk_bytes, int) or self.chunk_bytes <= 0):
            raise QmValueError(f"chunk_bytes must be a positive number of bytes, got {self.chunk_bytes!r}")

    @classmethod
    def of(cls, options: Mapping[str, Any]) -> OpenOptions:
        """From keyword arguments; an unknown name is a QmTypeError that lists the known ones
        (None values mean the default)."""
        unknown = sorted(set(options) - set(OPTION_NAMES))
        if unknown:
            raise QmTypeError(f"unknown option(s) {unknown} of engine 'qm'; it takes {list(OPTION_NAMES)}"
                              f" (and {list(PER_OPEN)} per call)")
        return cls(**{k: v for k, v in options.items()
                      if v is not None or k in ("streams", "align", "chunk_bytes")})

    def kwargs(self) -> dict[str, Any]:
        """The keyword arguments that open the same way again."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


OPTION_NAMES = tuple(f.name for f in fields(OpenOptions))
PER_OPEN = ("wait", "timeout")  # what to wait for before this snapshot, and for how long
# xarray's decoders: accepted so that passing them does not fail; results need no decoding
XARRAY_DECODERS = ("mask_and_scale", "decode_times", "decode_timedelta", "use_cftime",
                   "concat_characters", "decode_coords")
OPEN_PARAMETERS = ("filename_or_obj", *OPTION_NAMES, *PER_OPEN, *XARRAY_DECODERS)


def check_interval(every: Any, what: str = "every") -> float:
    """Seconds between two polls of a running job: a positive, finite number."""
    if isinstance(every, bool) or not isinstance(every, (int, float)) or not 0 < every < math.inf:
        raise QmValueError(f"{what} must be a positive number of seconds, got {every!r}")
    return float(every)

