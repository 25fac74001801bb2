"""dask.distributed: a real LocalCluster of two worker processes reads a lazy dataset.

The graph carries connection details only; each worker process opens its own gRPC channel (from
its per-process pool) the first time it fetches, and the data RPCs reach the server from there.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest
import xarray as xr

from qm_xarray.testing import STREAM_KINDS, StreamKind, make_job

distributed = pytest.importorskip("distributed")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

N = 20_000


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                  dashboard_address=None, silence_logs=logging.ERROR,
                                  worker_class=distributed.Nanny) as cluster:
        with distributed.Client(cluster, set_as_default=False) as c:
            c.wait_for_workers(2, timeout=60)
            yield c


@pytest.fixture(scope="module")
def data(recorded):
    kinds = {"I": StreamKind("<f8"), "img": STREAM_KINDS["img"], "ts": STREAM_KINDS["ts"]}
    job, written = make_job(recorded.store, counts={"I": N, "img": 2000, "ts": 3000}, kinds=kinds, seed=5)
    return job.id, written


def test_reductions_on_worker_processes_equal_numpy(recorded, data, client):
    job_id, written = data
    ds = xr.open_dataset(recorded.job(job_id), engine="qm", chunks={}, chunk_bytes=8 * 2000)
    assert ds.I.data.numblocks == (10,) and ds.img.data.numblocks[0] > 1
    recorded.clear()
    total = client.compute(ds.I.sum().data).result()
    assert float(total) == pytest.approx(written["I"].sum(), rel=1e-12)
    bounds = np.cumsum((0, *ds.I.chunks[0])).tolist()
    assert recorded.spans("I") == list(zip(bounds[:-1], bounds[1:]))  # every chunk, once

    mean = client.compute(ds.img.mean("img_item").data).result()
    np.testing.assert_allclose(mean, written["img"].mean(axis=0), rtol=1e-12)
    peak = client.compute(ds.img.isel(img_dim_1=slice(1, 4)).max(("img_dim_0", "img_dim_1")).data).result()
    np.testing.assert_array_equal(peak, written["img"][:, :, 1:4].max(axis=(1, 2)))
    stamps = client.compute((ds.ts_timestamp.diff("ts_item")).sum().data).result()
    assert int(stamps) == int(np.diff(written["ts"]["timestamp"]).sum())


def test_each_worker_process_opens_its_own_channel(recorded, data, client):
    job_id, written = data
    ds = xr.open_dataset(recorded.job(job_id), engine="qm", chunks={}, chunk_bytes=8 * 1000)
    workers = sorted(client.scheduler_info()["workers"])
    assert len(workers) == 2
    recorded.clear()
    for i, worker in enumerate(workers):  # pin a fetch on each worker
        part = ds.I[i * 1000:(i + 1) * 1000].sum().data
        value = client.compute(part, workers=[worker], allow_other_workers=False).result()
        assert float(value) == pytest.approx(written["I"][i * 1000:(i + 1) * 1000].sum())
    assert recorded.spans("I") == [(0, 1000), (1000, 2000)]  # the data RPCs reached the server

    def pool_targets():  # on each worker (nested: pickled by value): its pid and pooled channels
        import os

        from qm_xarray.client.connection import _POOL

        return os.getpid(), sorted(d.target for d in _POOL._channels)

    pools = client.run(pool_targets)
    pids = {pid for pid, _ in pools.values()}
    assert len(pids) == 2 and os.getpid() not in pids
    for worker, (_, targets) in pools.items():
        assert targets == [recorded.address], (worker, targets)  # one channel, opened there
