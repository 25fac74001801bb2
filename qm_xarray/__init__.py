"""qm_xarray: Quantum Machines result streams, faithfully and lazily, from a results server into analysis.

The public names below load on first use (PEP 562), so that importing the package — which xarray
does for every installed engine — stays cheap. Layers, bottom up: `ResultStore`/`serve` (the
results server), the simulator and remote producer, the client (`connect`, `StreamsManager`...),
the lazy layer (`open_dataset`, `to_dask`, `snapshot`, `refresh`, `watch`) and `export_zarr`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy_names import lazy_names
from ._version import __version__
from .errors import (
    DataFetchingError,
    QmInvalidSchemaError,
    QmQuaException,
    QMConnectionError,
    QMTimeoutError,
    StreamProcessingDataLossError,
)

_LAZY = {
    ".client": ("AuthenticationError", "ConnectionDetails", "JobResultApi", "JobResultServiceApi",
                "QopCaps", "ServerCapabilities", "ServerInfo", "TlsCredentials"),
    ".client.discovery": ("ClusterNotFoundError", "ServerUnreachableError"),
    ".client.retry": ("ServerUnavailableError",),
    ".session": ("Connection", "Job", "as_job", "connect"),
    ".lazy": ("JobSnapshot", "open_dataset", "refresh", "snapshot", "to_dask", "watch"),
    ".persist": ("export_zarr",),
    ".producer": ("RemoteStore",),
    ".results": ("BaseSingleStreamFetcher", "SingleStreamMultipleResultFetcher",
                 "SingleStreamSingleResultFetcher", "StreamsManager"),
    ".server": ("JobWriter", "ResultsServer", "ResultStore", "StreamWriter", "serve"),
    ".simulator": ("EXPERIMENTS", "Simulation", "simulate"),
}
_WHERE = {name: module for module, names in _LAZY.items() for name in names}

__all__ = ["DataFetchingError", "QMConnectionError", "QMTimeoutError", "QmInvalidSchemaError",
           "QmQuaException", "StreamProcessingDataLossError", "__version__", *sorted(_WHERE)]


__getattr__, __dir__ = lazy_names(__name__, globals(), _WHERE)


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from .client import (
        AuthenticationError,
        ConnectionDetails,
        JobResultApi,
        JobResultServiceApi,
        QopCaps,
        ServerCapabilities,
        ServerInfo,
        TlsCredentials,
    )
    from .client.discovery import ClusterNotFoundError, ServerUnreachableError
    from .client.retry import ServerUnavailableError
    from .session import Connection, Job, as_job, connect
    from .lazy import JobSnapshot, open_dataset, refresh, snapshot, to_dask, watch
    from .persist import export_zarr
    from .producer import RemoteStore
    from .results import (
        BaseSingleStreamFetcher,
        SingleStreamMultipleResultFetcher,
        SingleStreamSingleResultFetcher,
        StreamsManager,
    )
    from .server import JobWriter, ResultsServer, ResultStore, StreamWriter, serve
    from .simulator import EXPERIMENTS, Simulation, simulate
