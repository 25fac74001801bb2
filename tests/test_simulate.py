"""Simulated experiments: schemas, counts, physics, determinism, faults, remote writing."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

import numpy as np
import pytest

import qm_xarray as qx
from qm_xarray.errors import JobFinishedError
from qm_xarray.server.store import JobState
from qm_xarray.simulator import EXPERIMENT_CLASSES, Simulation, simulate

FAST = math.inf
SMALL = {  # size options that keep every run tiny
    "rabi": {"n_amplitudes": 21, "n_avg": 40},
    "single_shot": {"n_shots": 3000},
    "adc_trace": {"n_acquisitions": 20, "n_samples": 300},
    "sweep_2d": {"n_flux": 6, "n_freq": 11, "n_avg": 10},
}
SCHEMAS = {  # stream: (dtype, shape, single, timestamps)
    "rabi": {"I": ("<f8", (21,), True, False), "Q": ("<f8", (21,), True, False),
             "I_all": ("<f8", (21,), False, False), "Q_all": ("<f8", (21,), False, False),
             "iteration": ("<i8", (), True, False)},
    "single_shot": {"I": ("<f8", (), False, False), "Q": ("<f8", (), False, False),
                    "state": ("|b1", (), False, False)},
    "adc_trace": {"adc": ("<i2", (300,), False, True), "adc_avg": ("<f8", (300,), True, False)},
    "sweep_2d": {"I": ("<f8", (6, 11), False, False), "Q": ("<f8", (6, 11), False, False),
                 "iteration": ("<i8", (), True, False)},
}


@pytest.fixture(scope="module")
def store() -> qx.ResultStore:
    return qx.ResultStore()


@pytest.fixture(scope="module")
def address(store: qx.ResultStore) -> Iterator[str]:
    with qx.serve(store, port=0) as server:
        yield server.address


def _run(store: qx.ResultStore, name: str, **options: object) -> tuple[Simulation, qx.server.store.Job]:
    sim = simulate(name, store, rate=options.pop("rate", FAST), **{**SMALL[name], **options})
    return sim, store.job(sim.job_id)


def test_experiments_listed() -> None:
    assert set(qx.EXPERIMENTS) == {"rabi", "single_shot", "adc_trace", "sweep_2d"}
    assert all(isinstance(text, str) and text for text in qx.EXPERIMENTS.values())
    assert set(EXPERIMENT_CLASSES) == set(qx.EXPERIMENTS)


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_experiment_streams_and_counts(name: str, store: qx.ResultStore) -> None:
    sim, job = _run(store, name)
    assert sim.state == "done" and job.state is JobState.DONE and not job.has_dataloss
    assert list(job.streams) == list(SCHEMAS[name])
    for stream_name, (dtype, shape, single, timestamps) in SCHEMAS[name].items():
        stream = job.stream(stream_name)
        assert stream.layout.dtype == np.dtype(dtype), stream_name
        assert stream.layout.shape == shape and stream.layout.timestamps is timestamps
        assert stream.single is single
        assert stream.expected_count == (1 if single else sim.n_steps)
        assert stream.count == stream.expected_count


def test_rabi_is_physical(store: qx.ResultStore) -> None:
    sim, job = _run(store, "rabi", n_amplitudes=41, n_avg=400)
    p = sim.experiment.p_excited
    I_avg = job.stream("I").read_array()[0]
    assert np.corrcoef(I_avg, p)[0, 1] > 0.98  # I follows the excited population, cos^2 of amplitude
    I_all = job.stream("I_all").read_array()
    np.testing.assert_allclose(I_all.mean(axis=0), I_avg, rtol=1e-9, atol=1e-15)
    assert job.stream("iteration").read_array()[0] == 399
    # the running average's noise shrinks as 1/sqrt(n)
    residual = np.std(I_avg - (-2e-4 + 4e-4 * p))
    assert residual < 0.25 * np.std(I_all[0] - (-2e-4 + 4e-4 * p))


def test_single_shot_blobs_and_threshold(store: qx.ResultStore) -> None:
    sim, job = _run(store, "single_shot")
    I, state = job.stream("I").read_array(), job.stream("state").read_array()
    np.testing.assert_array_equal(state, I > sim.experiment.threshold)
    ground, excited = state[0::2].mean(), state[1::2].mean()  # shots alternate |g>, |e>
    assert ground < 0.1 and 0.8 < excited < 0.99


def test_adc_traces_are_12_bit_with_timestamps(store: qx.ResultStore) -> None:
    sim, job = _run(store, "adc_trace")
    records = job.stream("adc").read_array()
    values, stamps = records["value"], records["timestamp"]
    assert values.min() >= -2048 and values.max() <= 2047 and np.ptp(values) > 300
    assert np.all(np.diff(stamps) == sim.experiment.period_ns)
    np.testing.assert_allclose(job.stream("adc_avg").read_array()[0], values.mean(axis=0))


def test_sweep_2d_dip_follows_flux(store: qx.ResultStore) -> None:
    sim, job = _run(store, "sweep_2d", n_flux=9, n_freq=41, n_avg=20)
    I, Q = job.stream("I").read_array(), job.stream("Q").read_array()
    magnitude = np.abs((I + 1j * Q).mean(axis=0))
    dips = sim.experiment.detuning[np.argmin(magnitude, axis=1)]
    assert np.ptp(dips) > 1e6  # the resonance moves with flux


def test_deterministic_whatever_the_batching(store: qx.ResultStore) -> None:
    _, a = _run(store, "rabi", seed=3)
    _, b = _run(store, "rabi", seed=3, rate=400.0)  # paced: other batch boundaries
    _, c = _run(store, "rabi", seed=4)
    np.testing.assert_array_equal(a.stream("I_all").read_array(), b.stream("I_all").read_array())
    np.testing.assert_allclose(a.stream("I").read_array(), b.stream("I").read_array(), rtol=1e-12)
    assert not np.array_equal(a.stream("I_all").read_array(), c.stream("I_all").read_array())


def test_rate_paces_the_run(store: qx.ResultStore) -> None:
    start = time.monotonic()
    _, job = _run(store, "sweep_2d", rate=40.0)  # 10 iterations at 40/s
    assert time.monotonic() - start >= 0.2  # paced: 10 iterations at 40/s take 0.25 s or more
    assert job.stream("I").count == 10


def test_dataloss_keeps_the_job_going(store: qx.ResultStore) -> None:
    sim, job = _run(store, "single_shot", dataloss_at=0.3)
    assert sim.state == "done" and job.state is JobState.DONE and job.has_dataloss
    assert job.stream("I").count == 3000


def test_execution_error_closes_the_job(store: qx.ResultStore) -> None:
    sim, job = _run(store, "rabi", error_at=0.5)
    assert sim.state == sim.planned_state == "failed"
    assert job.state is JobState.CLOSED and job.has_execution_errors
    assert len(job.errors) == 1 and "rabi" in job.errors[0].message
    assert job.stream("I_all").count == 20 and job.stream("I").count == 1


def test_cancel_mid_run(store: qx.ResultStore) -> None:
    sim, job = _run(store, "adc_trace", cancel_at=0.25, dataloss_at=0.1)
    assert sim.state == "cancelled" and job.state is JobState.CLOSED
    assert job.has_dataloss and not job.errors
    assert job.stream("adc").count == 5


def test_error_before_any_data(store: qx.ResultStore) -> None:
    sim, job = _run(store, "sweep_2d", error_at=0.0)
    assert sim.state == "failed" and job.stream("I").count == 0 and job.state is JobState.CLOSED


def test_background_run_stop_and_join(store: qx.ResultStore) -> None:
    sim = Simulation("single_shot", store, rate=1000.0, n_shots=100_000, job_id="sim-stop")
    assert sim.job_id is None
    sim.start()
    assert sim.job_id == "sim-stop" and store.job("sim-stop").state is JobState.RUNNING
    time.sleep(0.1)
    sim.stop()
    assert sim.join(5.0)
    assert sim.state == "cancelled" and store.job("sim-stop").state is JobState.CLOSED
    assert 0 < store.job("sim-stop").stream("I").count < 100_000
    with pytest.raises(RuntimeError):
        sim.run()


def test_producer_failure_is_reraised(store: qx.ResultStore) -> None:
    sim = Simulation("single_shot", store, rate=1000.0, n_shots=100_000).start()
    store.writer(sim.job_id).finish()  # someone else ends the job: appends now fail
    with pytest.raises(JobFinishedError):
        while not sim.join(5.0):
            pass
    assert sim.state == "crashed"


def test_writes_into_a_remote_server(store: qx.ResultStore, address: str) -> None:
    sim = simulate("adc_trace", address, rate=FAST, job_id="sim-remote", seed=5, **SMALL["adc_trace"])
    job = store.job("sim-remote")
    assert sim.state == "done" and job.state is JobState.DONE
    local = simulate("adc_trace", store, rate=FAST, seed=5, **SMALL["adc_trace"])
    assert job.stream("adc").read_array().tobytes() == \
        store.job(local.job_id).stream("adc").read_array().tobytes()
    sim = simulate("rabi", qx.RemoteStore(address), rate=FAST, background=True, cancel_at=0.5,
                   **SMALL["rabi"])
    assert sim.join(10.0) and sim.state == "cancelled"
    assert store.job(sim.job_id).stream("I_all").count == 20


@pytest.mark.parametrize("kwargs, error", [
    ({"experiment": "nope"}, ValueError),
    ({"n_bogus": 3}, TypeError),
    ({"n_avg": 0}, ValueError),
    ({"rate": 0}, ValueError),
    ({"error_at": 1.5}, ValueError),
    ({"cancel_at": -0.1}, ValueError),
])
def test_bad_options(kwargs: dict, error: type, store: qx.ResultStore) -> None:
    options = {"experiment": "rabi", **kwargs}
    with pytest.raises(error):
        Simulation(options.pop("experiment"), store, **options)


def test_bad_target() -> None:
    with pytest.raises(TypeError):
        Simulation("rabi", object())
    with pytest.raises(ValueError):
        Simulation("rabi", "not an address")


def test_allow_holds_the_run_at_what_was_allowed(store: qx.ResultStore) -> None:
    """A run released part by part (as the demo does) writes no further than allowed."""
    sim = Simulation("rabi", store, rate=math.inf, n_avg=40)
    sim.allow(10)
    sim.start()
    deadline = time.monotonic() + 30
    while sim.steps_done < 10 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not sim.join(0.2)  # held: still running
    assert sim.steps_done == 10 and store.job(sim.job_id).state is JobState.RUNNING
    sim.allow(sim.n_steps)
    assert sim.join(30) and sim.state == "done" and sim.steps_done == sim.n_steps


def test_a_held_run_waits_instead_of_spinning():
    """Held by `allow`, the run sleeps until allowed more (a busy loop would starve readers)."""
    import math
    import threading
    import time

    from qm_xarray.simulator import Simulation

    sim = Simulation("rabi", qx.ResultStore(), rate=math.inf, n_avg=20)
    sim.allow(5)
    waits = []
    real_wait = sim._wake.wait

    def counted(timeout=None):
        waits.append(timeout)
        return real_wait(timeout)

    sim._wake.wait = counted  # type: ignore[method-assign]
    sim.start()
    held = threading.Event()
    for _ in range(500):  # bounded: until the run has written what it may
        if sim.steps_done == 5:
            held.set()
            break
        time.sleep(0.01)
    assert held.is_set()
    time.sleep(0.3)
    assert len(waits) < 50 and all(w >= 0.001 for w in waits)  # ~0.1 s waits, never a busy loop
    sim.allow(20)
    sim.join(30)
    assert sim.state == "done" and sim.steps_done == 20
