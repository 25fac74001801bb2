"""One table each for severities and capability strings, and both ends of the wire agree on them."""

from __future__ import annotations

import pytest

import qm_xarray as qx
from qm_xarray.capability_names import CHUNK_STREAMING, RESULTS_CAPABILITIES
from qm_xarray.client.capabilities import QopCaps
from qm_xarray.errors import QmValueError
from qm_xarray.execution_errors import SEVERITY_CODES, SEVERITY_NAMES, ExecutionError, check_severity
from qm_xarray.server import DEFAULT_CAPABILITIES, ResultsServer
from qm_xarray.wire.pb.qm.grpc.v2 import job_api_pb2 as v2
from qm_xarray.wire.pb.qm.pb import job_results_pb2 as v1


def test_severity_numbers_are_those_of_both_protocols() -> None:
    v2_success = v2.GetJobErrorsResponse.GetJobErrorsResponseSuccess
    for name, code in SEVERITY_CODES.items():
        assert getattr(v1.GetJobErrorsResponse, name.upper()) == code
        assert getattr(v2_success, name.upper()) == code
        assert SEVERITY_NAMES[code] == name
    assert len(v1.GetJobErrorsResponse.ExecutionErrorSeverity.values()) == len(SEVERITY_CODES)


@pytest.mark.parametrize("severity", ["fatal", "", "ERROR", None, ["error"]])
def test_one_check_for_every_path(severity: object) -> None:
    message = f"severity must be 'error' or 'warning', got {severity!r}"
    with pytest.raises(QmValueError) as caught:
        check_severity(severity)
    assert str(caught.value) == message
    with pytest.raises(QmValueError, match="severity must be"):
        qx.ResultStore().create_job().add_error("x", severity=severity)
    assert ExecutionError.create("x", 3, "warning") == ExecutionError("x", 3, "warning")
    assert not ExecutionError("x", 3, "warning").is_error and ExecutionError("x").is_error


def test_one_list_of_capability_strings() -> None:
    assert DEFAULT_CAPABILITIES == RESULTS_CAPABILITIES == tuple(str(c) for c in QopCaps.all())
    with ResultsServer(chunk_streaming=False) as server:
        assert CHUNK_STREAMING not in server.capabilities
        assert set(server.capabilities) == set(RESULTS_CAPABILITIES) - {CHUNK_STREAMING}
