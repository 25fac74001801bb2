"""Tokens on every RPC of every service, a separate producer token, TLS, loopback by default."""

from __future__ import annotations

import time
import warnings

import grpc
import numpy as np
import pytest

import qm_xarray as qx
from qm_xarray.testing import embedded_server, make_job
from qm_xarray.wire.pb.qm.grpc.v2 import job_api_pb2
from qm_xarray.wire.pb.qm.pb import job_results_pb2
from qm_xarray.wire.pb.qm_xarray.v1 import control_pb2

TOKEN, PRODUCER = "reader-secret", "producer-secret"


def every_rpc():
    for module in (job_results_pb2, job_api_pb2, control_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                yield f"/{service.full_name}/{method.name}", method


RPCS = list(every_rpc())


def call(channel, path, method, metadata):
    kind = (method.client_streaming, method.server_streaming)
    if kind == (False, False):
        return channel.unary_unary(path)(b"", timeout=5, metadata=metadata)
    if kind == (False, True):
        return list(channel.unary_stream(path)(b"", timeout=5, metadata=metadata))
    return channel.stream_unary(path)(iter([b""]), timeout=5, metadata=metadata)


@pytest.fixture(scope="module")
def guarded():
    store = qx.ResultStore()
    job, _ = make_job(store, counts=5)
    with embedded_server(store, token=TOKEN, producer_token=PRODUCER) as srv:
        with grpc.insecure_channel(srv.address) as channel:
            yield srv, channel, job


def test_every_rpc_is_counted():
    assert len(RPCS) == 5 + 9 + 4 + 6  # v1, v2 results subset, JobsService, ProducerService


@pytest.mark.parametrize(("path", "method"), RPCS, ids=[p.rsplit(".", 1)[-1] for p, _ in RPCS])
@pytest.mark.parametrize("metadata", [(), (("authorization", "Bearer nope"),),
                                      (("authorization", TOKEN),)], ids=["none", "wrong", "no-bearer"])
def test_no_or_wrong_token_is_unauthenticated(guarded, path, method, metadata):
    _, channel, _ = guarded
    with pytest.raises(grpc.RpcError) as info:
        call(channel, path, method, metadata)
    assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize(("path", "method"), RPCS, ids=[p.rsplit(".", 1)[-1] for p, _ in RPCS])
def test_the_right_token_passes(guarded, path, method):
    _, channel, _ = guarded
    token = PRODUCER if "ProducerService" in path else TOKEN
    try:
        call(channel, path, method, (("authorization", f"Bearer {token}"),))
    except grpc.RpcError as exc:  # empty requests may be refused, but not for the token
        assert exc.code() is not grpc.StatusCode.UNAUTHENTICATED


def test_reader_token_cannot_produce_and_clients_send_tokens(guarded):
    srv, _, job = guarded
    with pytest.raises(PermissionError):
        qx.RemoteStore(srv.address, token=TOKEN).create_job()
    writer = qx.RemoteStore(srv.address, token=PRODUCER).create_job()
    writer.add_stream("I").append(np.arange(3.0))
    resumed = qx.RemoteStore(srv.address, token=PRODUCER).writer(writer.id)  # a producer resumes
    assert resumed.stream("I").count == 3
    sm = qx.connect(srv.address, token=TOKEN).job(writer.id).result_handles
    assert sm["I"].fetch_all(flat_struct=True).tolist() == [0.0, 1.0, 2.0]
    with pytest.raises(qx.QMConnectionError):
        qx.connect(srv.address, token="nope").job(job.id).result_handles  # noqa: B018


def test_tls_round_trip():
    from qm_xarray.testing.tls import self_signed_certificate

    cert, key = self_signed_certificate()
    store = qx.ResultStore()
    job, written = make_job(store, counts=20)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # TLS on: no warning even beyond loopback
        server = qx.serve(store, host="0.0.0.0", port=0, tls=(cert, key), token=TOKEN)
    try:
        address = f"127.0.0.1:{server.port}"
        sm = qx.connect(address, tls=cert, token=TOKEN).job(job.id).result_handles
        assert sm["I"].fetch_all(flat_struct=True).tobytes() == written["I"].tobytes()
        with pytest.raises(qx.QMConnectionError):  # plaintext to a TLS port ("socket closed")
            qx.connect(address, timeout=3).job(job.id).result_handles  # noqa: B018
        wrong_ca, _ = self_signed_certificate()
        start = time.monotonic()
        with pytest.raises(qx.QMConnectionError, match="(?i)certificate"):  # not retried
            qx.connect(address, tls=wrong_ca, timeout=30).job(job.id).result_handles  # noqa: B018
        assert time.monotonic() - start < 10
    finally:
        server.stop()
