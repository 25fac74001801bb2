"""The simulator describes its experiments: every simulated job opens with physical coordinates,
units and long names, written through a local store or a remote producer alike."""

from __future__ import annotations

import inspect
import json
import math
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import xarray as xr

import qm_xarray as qx
from qm_xarray.simulator import EXPERIMENT_CLASSES, PowerRabi, Simulation, SingleShot, simulate
from qm_xarray.simulator.base import COORDS_BUDGET, PRODUCER
from qm_xarray.testing import embedded_server

SMALL: dict[str, dict[str, Any]] = {  # parameters that keep every run tiny
    "rabi": {"n_amplitudes": 21, "n_avg": 12},
    "single_shot": {"n_shots": 600},
    "adc_trace": {"n_acquisitions": 8, "n_samples": 120},
    "sweep_2d": {"n_flux": 5, "n_freq": 9, "n_avg": 6},
}
# what each experiment's dataset must show: dims of every variable, its units ("" = none), and
# each coordinate's dimension, units and long name
EXPECTED: dict[str, dict[str, Any]] = {
    "rabi": {
        "dims": {"I": ("amplitude",), "Q": ("amplitude",), "I_all": ("repetition", "amplitude"),
                 "Q_all": ("repetition", "amplitude"), "iteration": ()},
        "units": {"I": "V", "Q": "V", "I_all": "V", "Q_all": "V", "iteration": ""},
        "coords": {"amplitude": ("amplitude", "V", "drive amplitude")},
    },
    "single_shot": {
        "dims": {"I": ("shot",), "Q": ("shot",), "state": ("shot",)},
        "units": {"I": "V", "Q": "V", "state": ""},
        "coords": {"shot": ("shot", "", "shot index")},
    },
    "adc_trace": {
        "dims": {"adc": ("acquisition", "time"), "adc_avg": ("time",)},
        "units": {"adc": "ADC units", "adc_avg": "ADC units"},
        "coords": {"time": ("time", "ns", "time"), "adc_timestamp": ("acquisition", None, "adc timestamp")},
    },
    "sweep_2d": {
        "dims": {"I": ("repetition", "flux", "frequency"), "Q": ("repetition", "flux", "frequency"),
                 "iteration": ()},
        "units": {"I": "V", "Q": "V", "iteration": ""},
        "coords": {"flux": ("flux", "V", "flux bias"), "frequency": ("frequency", "Hz", "readout frequency")},
    },
}
LONG_NAMES = {"iteration": "iteration", "state": "qubit state"}


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[qx.ResultStore, str]]:
    store = qx.ResultStore()
    with embedded_server(store) as server:
        yield store, server.address


def producer(kind: str, served: tuple[qx.ResultStore, str]) -> Any:
    store, address = served
    return store if kind == "local" else qx.RemoteStore(address)


def open_job(address: str, job_id: str, **options: Any) -> xr.Dataset:
    return xr.open_dataset(qx.connect(address).job(job_id), engine="qm", **options)  # type: ignore[arg-type]


def sweep_values(sim: Simulation, coord: str, count: int) -> np.ndarray:
    """The physical values the experiment swept along `coord` (the first `count` along items)."""
    exp: Any = sim.experiment
    if coord == "shot":
        return np.arange(count)
    if coord == "time":
        return np.arange(exp.n_samples)
    attribute = {"amplitude": "amplitudes", "flux": "flux", "frequency": "frequency"}[coord]
    return np.asarray(getattr(exp, attribute))


def check_described(ds: xr.Dataset, sim: Simulation) -> None:
    name = sim.experiment.name
    expected = EXPECTED[name]
    assert set(ds.data_vars) == set(expected["dims"])
    for var, dims in expected["dims"].items():
        da = ds[var]
        assert da.dims == dims, var
        assert da.attrs.get("units", "") == expected["units"][var], var
        assert da.attrs.get("long_name"), f"{var} has no long_name"
        assert da.attrs["long_name"] == LONG_NAMES.get(var, da.attrs["long_name"])
    for coord, (dim, units, long_name) in expected["coords"].items():
        c = ds.coords[coord]
        assert c.dims == (dim,), coord
        assert c.attrs.get("long_name") == long_name, coord
        if units is not None:
            assert c.attrs.get("units", "") == units, coord
            np.testing.assert_array_equal(c.values, sweep_values(sim, coord, ds.sizes[dim]))
    # every dimension of a buffer axis has its physical coordinate
    for var in ds.data_vars:
        for dim in ds[var].dims:
            if dim not in ("repetition", "acquisition"):
                assert dim in ds.coords, f"dimension {dim!r} of {var!r} has no coordinate"
    assert ds.attrs["experiment"] == name and ds.attrs["producer"] == PRODUCER
    assert json.loads(ds.attrs["parameters"]) == sim.experiment.parameter_values()


@pytest.mark.parametrize("kind", ["local", "remote"])
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_experiment_opens_with_physical_axes(name: str, kind: str,
                                                   served: tuple[qx.ResultStore, str]) -> None:
    sim = simulate(name, producer(kind, served), rate=math.inf, **SMALL[name])
    assert sim.state == "done"
    ds = open_job(served[1], str(sim.job_id))
    check_described(ds, sim)
    # the values are those of the streams, only labelled
    stream = next(str(v) for v in ds.data_vars if ds[v].attrs["qm_save_mode"] == "save_all")
    raw = served[0].job(str(sim.job_id)).stream(stream).read_array()
    values = raw["value"] if raw.dtype.names else raw
    np.testing.assert_array_equal(ds[stream].values, values)


def test_the_sweep_values_are_physical(served: tuple[qx.ResultStore, str]) -> None:
    store, address = served
    rabi = simulate("rabi", store, rate=math.inf, **SMALL["rabi"])
    amplitude = open_job(address, str(rabi.job_id)).amplitude
    assert amplitude.values[0] == 0.0 and 1.9 < amplitude.values[-1] < 2.0  # V
    sweep = simulate("sweep_2d", store, rate=math.inf, **SMALL["sweep_2d"])
    ds = open_job(address, str(sweep.job_id))
    assert ds.flux.values.min() == -0.5 and ds.flux.values.max() == 0.5
    assert np.all(np.abs(ds.frequency.values - 7.0e9) <= 6e6)  # Hz, around the resonator
    adc = simulate("adc_trace", store, rate=math.inf, **SMALL["adc_trace"])
    ds = open_job(address, str(adc.job_id))
    assert np.all(np.diff(ds.time.values) == 1) and ds.time.attrs["units"] == "ns"  # 1 GS/s
    assert np.all(np.diff(ds.adc_timestamp.values) == adc.experiment.parameter_values()["period_ns"])


def test_a_run_held_half_way_opens_with_its_part_of_the_shots(served: tuple[qx.ResultStore, str]) -> None:
    """The shot coordinate is kept for the whole run; a growing job shows the part it has."""
    address = served[1]
    sim = Simulation("single_shot", qx.RemoteStore(address), rate=math.inf, n_shots=1000)
    sim.allow(400)
    sim.start()
    try:
        deadline = time.monotonic() + 60
        while sim.steps_done < 400 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sim.steps_done == 400
        ds = open_job(address, str(sim.job_id))
        assert ds.sizes["shot"] == 400 and ds.attrs["qm_job_state"] == "running"
        np.testing.assert_array_equal(ds.shot.values, np.arange(400))
        assert ds.state.attrs["long_name"] == "qubit state"
    finally:
        sim.allow(sim.n_steps)
        assert sim.join(60) and sim.state == "done"
    ds = open_job(address, str(sim.job_id))
    assert ds.sizes["shot"] == 1000 and ds.shot.values[-1] == 999


def test_a_cancelled_run_keeps_its_description(served: tuple[qx.ResultStore, str]) -> None:
    store, address = served
    sim = simulate("sweep_2d", store, rate=math.inf, cancel_at=0.5, **SMALL["sweep_2d"])
    ds = open_job(address, str(sim.job_id))
    assert sim.state == "cancelled" and ds.sizes["repetition"] == 3
    check_described(ds, sim)


def test_a_coordinate_too_large_to_keep_is_left_out_and_its_axis_still_named(
        served: tuple[qx.ResultStore, str]) -> None:
    store, address = served
    n_shots = COORDS_BUDGET // 8 + 1  # one int64 too many for the budget
    meta = SingleShot(n_shots=n_shots).metadata()
    assert "shot" not in meta["coords"] and meta["streams"]["I"]["dims"] == ("shot",)
    sim = simulate("single_shot", store, rate=math.inf, n_shots=n_shots)
    ds = open_job(address, str(sim.job_id))
    assert ds.I.dims == ("shot",) and "shot" not in ds.coords and ds.I.attrs["units"] == "V"


def test_explicit_options_still_win(served: tuple[qx.ResultStore, str]) -> None:
    store, address = served
    sim = simulate("rabi", store, rate=math.inf, **SMALL["rabi"])
    ds = open_job(address, str(sim.job_id), dims={"I_all": ("n", "a")})
    assert ds.I_all.dims == ("n", "a") and ds.I.dims == ("amplitude",)


@pytest.mark.parametrize("name", sorted(EXPERIMENT_CLASSES))
def test_metadata_names_every_axis_of_every_stream(name: str) -> None:
    """`dims` of each stream: the item axis first (save_all), then the buffer axes, as `dims=`."""
    exp: Any = EXPERIMENT_CLASSES[name](**SMALL[name])
    meta = exp.metadata()
    assert set(meta) == {"attrs", "coords", "streams"}
    decls = {d.name: d for d in exp.streams()}
    assert set(meta["streams"]) == set(decls)
    for stream, desc in meta["streams"].items():
        decl = decls[stream]
        axes = len(decl.shape) + (0 if decl.single else 1)
        assert len(desc.get("dims", ())) == axes, stream
        assert isinstance(desc["units"], str) and desc["long_name"], stream
    for coord, (dim, values, attrs) in meta["coords"].items():
        assert attrs["long_name"] and np.asarray(values).ndim == 1, coord
    json.dumps(meta["attrs"])  # plain JSON values


@pytest.mark.parametrize("name", sorted(EXPERIMENT_CLASSES))
def test_parameters_come_from_the_signature(name: str) -> None:
    cls = EXPERIMENT_CLASSES[name]
    signature = inspect.signature(cls).parameters
    assert cls.parameters() == {p: v.default for p, v in signature.items() if p != "seed"}
    assert set(cls.parameter_units) <= set(cls.parameters())
    values = cls(seed=7).parameter_values()
    assert values == {"seed": 7, **cls.parameters()}  # every parameter is kept under its name


@pytest.mark.parametrize("kind", ["local", "remote"])
def test_a_refused_description_ends_the_job_it_created(kind: str, served: tuple[qx.ResultStore, str]) -> None:
    """A description the server refuses fails the run before any item, and leaves no job running."""

    class Misdescribed(PowerRabi):
        def _describe(self) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
            coords, streams = super()._describe()
            return coords, {**streams, "I_all": {"dims": ("amplitude",)}}  # one axis too few

    sim = Simulation(Misdescribed(n_avg=5), producer(kind, served), rate=math.inf)
    with pytest.raises(ValueError, match="I_all"):
        sim.run()
    job = served[0].job(str(sim.job_id))
    assert sim.state == "crashed" and job.state.value != "running"
    assert job.stream("I_all").count == 0
