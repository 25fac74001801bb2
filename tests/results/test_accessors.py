"""The documented accessors the layers above read a StreamsManager and its handles through
(instead of their private members)."""

from __future__ import annotations

import pickle

import numpy as np

import qm_xarray as qx
from qm_xarray.testing import embedded_server, make_job


def test_a_manager_and_its_handles_expose_what_the_lazy_layer_reads():
    store = qx.ResultStore()
    make_job(store, 5, job_id="acc")
    with embedded_server(store) as server:
        res = qx.connect(server.address).job("acc").result_handles
        assert isinstance(res.results_service, qx.JobResultApi) and res.results_service.version == 2
        assert res.server_capabilities.supports_multiple_streams_fetching
        handle = res.get("c")
        assert handle.results_service is res.results_service
        assert handle.schema_item.name == "c" and handle.schema_item.shape == (1,)
        flat, nested = handle.header(), handle.header(flat_struct=False)
        assert (flat.count_so_far, flat.shape, nested.shape) == (5, (3,), (1,))
        service = pickle.loads(pickle.dumps(handle.results_service))  # what dask workers get
        buf, count = service.fetch_range(flat, 1, 3)
        np.testing.assert_array_equal(np.asarray(buf).view("<i8").reshape(2, 3),
                                      handle.fetch(slice(1, 3), flat_struct=True))
