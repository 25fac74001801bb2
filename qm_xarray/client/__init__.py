"""Client side: connection details, the v1/v2 results service clients, capabilities."""

from .connection import ConnectionDetails, close_channels, parse_address
from .errors import AuthenticationError, map_rpc_error
from .jobs import JobsClient, JobSummary, ServerInfo, StreamSummary

__all__ = ["AuthenticationError", "ConnectionDetails", "JobSummary", "JobsClient", "ServerInfo",
           "StreamSummary", "close_channels", "map_rpc_error", "parse_address"]
