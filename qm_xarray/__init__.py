"""qm_xarray: Quantum Machines result streams, faithfully and lazily, from a results server into analysis.

The public names below load on first use (PEP 562), so that importing the package — which xarray
does for every installed engine — stays cheap. Layers, bottom up: `ResultStore`/`serve` (the
results server), the simulator and remote producer, the client (`connect`, `StreamsManager`...),
the lazy layer (`open_dataset`, `to_dask`, `snapshot`, `refresh`, `watch`) and `export_zarr`.
`__all__` lists them; `_LAZY` says where each lives (a test checks that the two, the imports for
type checkers below and the list in docs/architecture.md agree).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy_names import lazy_names
from ._version import __version__
from .errors import (
    DataFetchingError,
    InvalidArgumentError,
    JobFailedError,
    JobFinishedError,
    JobNotFoundError,
    QmIndexError,
    QmInvalidSchemaError,
    QmKeyError,
    QmQuaException,
    QMConnectionError,
    QMTimeoutError,
    QmTypeError,
    QmValueError,
    StreamNotFoundError,
    StreamProcessingDataLossError,
)

__all__ = [
    # errors (imported eagerly: they are small and user code catches them)
    "DataFetchingError", "InvalidArgumentError", "JobFailedError", "JobFinishedError",
    "JobNotFoundError", "QMConnectionError", "QMTimeoutError", "QmIndexError",
    "QmInvalidSchemaError", "QmKeyError", "QmQuaException", "QmTypeError", "QmValueError",
    "StreamNotFoundError", "StreamProcessingDataLossError", "__version__",
    # client
    "AuthenticationError", "ClusterNotFoundError", "ConnectionDetails", "JobResultApi",
    "JobResultServiceApi", "QopCaps", "ServerCapabilities", "ServerInfo", "ServerUnavailableError",
    "ServerUnreachableError", "TlsCredentials",
    # session
    "Connection", "Job", "MetadataNotKeptError", "as_job", "connect", "describe",
    # metadata
    "Coordinate", "JobMetadata", "StreamMetadata",
    # results (the seed API)
    "BaseSingleStreamFetcher", "SingleStreamMultipleResultFetcher", "SingleStreamSingleResultFetcher",
    "StreamsManager",
    # lazy
    "CaptureInterruptedWarning", "JobSnapshot", "open_dataset", "refresh", "snapshot", "to_dask", "watch",
    # plots
    "live_plot",
    # persistence
    "export_zarr",
    # relay
    "CaptureResult", "Origin", "Relay", "capture",
    # server, producer, simulator
    "JobWriter", "RemoteStore", "ResultStore", "ResultsServer", "StreamSpec", "StreamWriter", "serve",
    "EXPERIMENTS", "Simulation", "simulate",
]

_LAZY = {
    ".client": ("AuthenticationError", "ConnectionDetails", "JobResultApi", "JobResultServiceApi",
                "QopCaps", "ServerCapabilities", "ServerInfo", "TlsCredentials"),
    ".client.discovery": ("ClusterNotFoundError", "ServerUnreachableError"),
    ".client.retry": ("ServerUnavailableError",),
    ".session": ("Connection", "Job", "MetadataNotKeptError", "as_job", "connect", "describe"),
    ".metadata": ("Coordinate", "JobMetadata", "StreamMetadata"),
    ".lazy": ("CaptureInterruptedWarning", "JobSnapshot", "open_dataset", "refresh", "snapshot", "to_dask", "watch"),
    ".persist": ("export_zarr",),
    ".relay": ("CaptureResult", "Relay", "capture"),
    ".origin": ("Origin",),
    ".plot": ("live_plot",),
    ".producer": ("RemoteStore",),
    ".results": ("BaseSingleStreamFetcher", "SingleStreamMultipleResultFetcher",
                 "SingleStreamSingleResultFetcher", "StreamsManager"),
    ".server": ("JobWriter", "ResultsServer", "ResultStore", "StreamWriter", "serve"),
    ".simulator": ("EXPERIMENTS", "Simulation", "simulate"),
    ".streams": ("StreamSpec",),
}
_WHERE = {name: module for module, names in _LAZY.items() for name in names}

__getattr__, __dir__ = lazy_names(__name__, globals(), _WHERE)


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly and re-exported
    from .client import AuthenticationError as AuthenticationError
    from .client import ConnectionDetails as ConnectionDetails
    from .client import JobResultApi as JobResultApi
    from .client import JobResultServiceApi as JobResultServiceApi
    from .client import QopCaps as QopCaps
    from .client import ServerCapabilities as ServerCapabilities
    from .client import ServerInfo as ServerInfo
    from .client import TlsCredentials as TlsCredentials
    from .client.discovery import ClusterNotFoundError as ClusterNotFoundError
    from .client.discovery import ServerUnreachableError as ServerUnreachableError
    from .client.retry import ServerUnavailableError as ServerUnavailableError
    from .lazy import CaptureInterruptedWarning as CaptureInterruptedWarning
    from .lazy import JobSnapshot as JobSnapshot
    from .lazy import open_dataset as open_dataset
    from .lazy import refresh as refresh
    from .lazy import snapshot as snapshot
    from .lazy import to_dask as to_dask
    from .lazy import watch as watch
    from .plot import live_plot as live_plot
    from .persist import export_zarr as export_zarr
    from .origin import Origin as Origin
    from .relay import CaptureResult as CaptureResult
    from .relay import Relay as Relay
    from .relay import capture as capture
    from .producer import RemoteStore as RemoteStore
    from .results import BaseSingleStreamFetcher as BaseSingleStreamFetcher
    from .results import SingleStreamMultipleResultFetcher as SingleStreamMultipleResultFetcher
    from .results import SingleStreamSingleResultFetcher as SingleStreamSingleResultFetcher
    from .results import StreamsManager as StreamsManager
    from .server import JobWriter as JobWriter
    from .server import ResultsServer as ResultsServer
    from .server import ResultStore as ResultStore
    from .server import StreamWriter as StreamWriter
    from .server import serve as serve
    from .metadata import Coordinate as Coordinate
    from .metadata import JobMetadata as JobMetadata
    from .metadata import StreamMetadata as StreamMetadata
    from .session import Connection as Connection
    from .session import Job as Job
    from .session import MetadataNotKeptError as MetadataNotKeptError
    from .session import as_job as as_job
    from .session import connect as connect
    from .session import describe as describe
    from .simulator import EXPERIMENTS as EXPERIMENTS
    from .simulator import Simulation as Simulation
    from .simulator import simulate as simulate
    from .streams import StreamSpec as StreamSpec
