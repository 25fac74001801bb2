"""The QM capability strings (qm-qua's `QopCaps`) that matter to the results API.

Written once for both ends: the server advertises them (`server/app.py`) and the client reads
what they switch on (`client/capabilities.py`). Facts: wire-protocol.md section c.
"""

from __future__ import annotations

__all__ = ["JOB_STREAMING_STATE", "CHUNK_STREAMING", "MULTIPLE_STREAMS_FETCHING", "QOP3",
           "RESULTS_CAPABILITIES"]

JOB_STREAMING_STATE = "qm.job_streaming_state"  # the job state comes from the state request
CHUNK_STREAMING = "qm.chunk_streaming"  # v2 data in chunks and summaries
MULTIPLE_STREAMS_FETCHING = "qm.multiple_streams_fetching"  # v2 fetches of several streams at once
QOP3 = "__qop3"  # a QOP 3 (implies job_streaming_state)

RESULTS_CAPABILITIES = (JOB_STREAMING_STATE, CHUNK_STREAMING, MULTIPLE_STREAMS_FETCHING, QOP3)
