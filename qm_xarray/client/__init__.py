"""Client side: connection details, the v1/v2 results service clients, capabilities."""

from .api_v1 import JobResultServiceApi
from .api_v2 import JobResultApi
from .capabilities import Capability, QopCaps, ServerCapabilities
from .connection import ConnectionDetails, TlsCredentials, close_channels, parse_address
from .deadlines import VERY_LONG_TIME
from .errors import AuthenticationError, map_rpc_error
from .jobs import JobsClient, JobSummary, StreamSummary
from .models import Header, JobResultItemSchema, JobResultState, SchemaItem, ServerInfo

__all__ = ["VERY_LONG_TIME", "AuthenticationError", "Capability", "ConnectionDetails", "Header",
           "JobResultApi", "JobResultItemSchema", "JobResultServiceApi", "JobResultState",
           "JobSummary", "JobsClient", "QopCaps", "SchemaItem", "ServerCapabilities", "ServerInfo",
           "StreamSummary", "TlsCredentials", "close_channels", "map_rpc_error", "parse_address"]
