"""The results server: a ResultStore and the gRPC services that serve it."""

from .app import DEFAULT_CAPABILITIES, ResultsServer, serve
from .store import ExecutionError, Job, JobState, JobWriter, ResultStore, Stream, StreamWriter

__all__ = ["DEFAULT_CAPABILITIES", "ExecutionError", "Job", "JobState", "JobWriter", "ResultStore",
           "ResultsServer", "Stream", "StreamWriter", "serve"]
