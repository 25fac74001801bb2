"""qm_xarray: Quantum Machines result streams, faithfully and lazily, from a results server into analysis.

Public surface (see docs/ and shared design): `ResultStore` and `serve` (the results server),
the simulator, and (in later layers) the client, the results API and the lazy xarray layer.
"""

from __future__ import annotations

from ._version import __version__

from .errors import (  # noqa: E402
    DataFetchingError,
    QmInvalidSchemaError,
    QmQuaException,
    QMConnectionError,
    QMTimeoutError,
    StreamProcessingDataLossError,
)
from .client import ConnectionDetails, JobResultApi, JobResultServiceApi, QopCaps, ServerCapabilities  # noqa: E402
from .connect import Connection, Job, connect  # noqa: E402
from .lazy import JobSnapshot, open_dataset, refresh, snapshot, to_dask, watch  # noqa: E402
from .persist import export_zarr  # noqa: E402
from .producer import RemoteStore  # noqa: E402
from .results import (  # noqa: E402
    BaseSingleStreamFetcher,
    SingleStreamMultipleResultFetcher,
    SingleStreamSingleResultFetcher,
    StreamsManager,
)
from .server import JobWriter, ResultsServer, ResultStore, StreamWriter, serve  # noqa: E402
from .simulate import EXPERIMENTS, Simulation, simulate  # noqa: E402

__all__ = [
    "BaseSingleStreamFetcher",
    "Connection",
    "ConnectionDetails",
    "DataFetchingError",
    "Job",
    "JobResultApi",
    "JobResultServiceApi",
    "QopCaps",
    "ServerCapabilities",
    "SingleStreamMultipleResultFetcher",
    "SingleStreamSingleResultFetcher",
    "StreamsManager",
    "JobSnapshot",
    "connect",
    "export_zarr",
    "open_dataset",
    "refresh",
    "snapshot",
    "to_dask",
    "watch",
    "EXPERIMENTS",
    "JobWriter",
    "QMConnectionError",
    "QMTimeoutError",
    "QmInvalidSchemaError",
    "QmQuaException",
    "RemoteStore",
    "ResultStore",
    "ResultsServer",
    "Simulation",
    "StreamProcessingDataLossError",
    "StreamWriter",
    "__version__",
    "serve",
    "simulate",
]
