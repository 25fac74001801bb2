"""Four simulated QUA experiments with physically plausible data, as a QUA program would save them.

- `rabi`: power Rabi sweep; averaged I/Q per amplitude (`save`), raw per-iteration buffers
  (`save_all`) and an iteration counter.
- `single_shot`: ground/excited readout; I, Q and the thresholded state of every shot.
- `adc_trace`: raw ADC traces (12-bit integers) of a readout pulse, with timestamps.
- `sweep_2d`: resonator spectroscopy versus flux; one 2-D buffer per averaging iteration.

Voltages are in volts as QUA's demodulation gives them (order 1e-4); times in nanoseconds.

Each describes its results (`Experiment.metadata()`): the sweep values along the buffer axes
(drive amplitude in V, flux bias in V by readout frequency in Hz, time in ns, the shot index), the
item axes' names (`repetition` of an averaging loop, `shot`, `acquisition`), and units and long
names on every stream.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from .base import Experiment, StreamDecl

__all__ = ["EXPERIMENTS", "EXPERIMENT_CLASSES", "AdcTrace", "PowerRabi", "SingleShot", "Sweep2D"]

REPETITION = "repetition"  # the item axis of the raw buffers of an averaging loop
RESONATOR_FREQUENCY = 7.0e9  # Hz: the bare readout resonator that `sweep_2d` sweeps around
ADC_UNITS = "ADC units"  # the 12-bit ADC's integer counts

# Readout blobs of the ground and excited states (volts) and the width of one shot's blob.
GROUND = np.array([-2.0e-4, 1.0e-4])
EXCITED = np.array([2.0e-4, 1.5e-4])
SHOT_SIGMA = 1.0e-4


def _positive(name: str, value: Any) -> int:
    number = int(value)
    if number < 1:
        raise ValueError(f"{name} must be >= 1, got {value!r}")
    return number


def _coord(dim: str, values: Any, units: str, long_name: str) -> tuple[str, np.ndarray, dict[str, str]]:
    return dim, np.asarray(values), {"units": units, "long_name": long_name}


def _stream(dims: tuple[str, ...] | None, units: str, long_name: str) -> dict[str, Any]:
    """A stream's description (a 0-d `save` stream has no axes: `dims` None)."""
    return {"units": units, "long_name": long_name, **({} if dims is None else {"dims": dims})}


def _shots(rng: np.random.Generator, p_excited: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Projective readout: the state drawn with probability `p_excited`, then a Gaussian blob."""
    excited = rng.random(p_excited.shape) < p_excited
    centre = np.where(excited[..., None], EXCITED, GROUND)
    iq = centre + rng.normal(0.0, SHOT_SIGMA, centre.shape)
    return iq, excited


class PowerRabi(Experiment):
    """Power Rabi: P(excited) = sin^2(pi a / 2 a_pi), averaged over `n_avg` iterations.

    The drive amplitude `a` is swept over `n_amplitudes` values from 0 to 1.99 V; `a_pi` (V) is
    the amplitude of a pi pulse.
    """

    name = "rabi"
    description = "power Rabi sweep: running-average I/Q per amplitude (save), raw buffers (save_all)"
    unit = "iterations"
    default_rate = 100.0
    parameter_units: ClassVar[Mapping[str, str]] = {"a_pi": "V"}

    def __init__(self, seed: int = 0, n_amplitudes: int = 50, n_avg: int = 200,
                 a_pi: float = 0.8) -> None:
        super().__init__(seed)
        self.n_amplitudes = _positive("n_amplitudes", n_amplitudes)
        self.n_avg = _positive("n_avg", n_avg)
        self.a_pi = float(a_pi)
        self.amplitudes = np.linspace(0.0, 1.99, self.n_amplitudes)  # V
        self.p_excited = np.sin(np.pi * self.amplitudes / (2 * self.a_pi)) ** 2
        self._sum = np.zeros((self.n_amplitudes, 2))

    @property
    def n_steps(self) -> int:
        return self.n_avg

    def streams(self) -> list[StreamDecl]:
        n, shape = self.n_avg, (self.n_amplitudes,)
        return [StreamDecl("I", "<f8", shape, single=True, expected_count=1),
                StreamDecl("Q", "<f8", shape, single=True, expected_count=1),
                StreamDecl("I_all", "<f8", shape, expected_count=n),
                StreamDecl("Q_all", "<f8", shape, expected_count=n),
                StreamDecl("iteration", "<i8", single=True, expected_count=1)]

    def _generate(self, rng: np.random.Generator, start: int, stop: int) -> dict[str, np.ndarray]:
        p = np.broadcast_to(self.p_excited, (stop - start, self.n_amplitudes))
        iq, _ = _shots(rng, p)
        return {"iq": iq}

    def _items(self, raw: dict[str, np.ndarray], start: int, stop: int) -> dict[str, Any]:
        iq = raw["iq"]
        self._sum += iq.sum(axis=0)
        mean = self._sum / stop
        return {"I": mean[:, 0], "Q": mean[:, 1], "I_all": iq[..., 0], "Q_all": iq[..., 1],
                "iteration": np.int64(stop - 1)}

    def _describe(self) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        coords = {"amplitude": _coord("amplitude", self.amplitudes, "V", "drive amplitude")}
        sweep, raw = ("amplitude",), (REPETITION, "amplitude")
        return coords, {"I": _stream(sweep, "V", "I quadrature, running average"),
                        "Q": _stream(sweep, "V", "Q quadrature, running average"),
                        "I_all": _stream(raw, "V", "I quadrature"),
                        "Q_all": _stream(raw, "V", "Q quadrature"),
                        "iteration": _stream(None, "", "iteration")}


class SingleShot(Experiment):
    """Single-shot readout of a qubit prepared in |e> half of the time, with T1 decay."""

    name = "single_shot"
    description = "single-shot readout: I, Q (save_all) and thresholded bool state per shot"
    unit = "shots"
    default_rate = 2500.0
    block_steps = 1024

    def __init__(self, seed: int = 0, n_shots: int = 5000, p_decay: float = 0.05) -> None:
        super().__init__(seed)
        self.n_shots = _positive("n_shots", n_shots)
        self.p_decay = float(p_decay)
        self.threshold = float(GROUND[0] + EXCITED[0]) / 2

    @property
    def n_steps(self) -> int:
        return self.n_shots

    def streams(self) -> list[StreamDecl]:
        n = self.n_shots
        return [StreamDecl("I", "<f8", expected_count=n), StreamDecl("Q", "<f8", expected_count=n),
                StreamDecl("state", "|b1", expected_count=n)]

    def _generate(self, rng: np.random.Generator, start: int, stop: int) -> dict[str, np.ndarray]:
        prepared = (np.arange(start, stop) % 2).astype(bool)  # shots alternate |g>, |e>
        iq, _ = _shots(rng, np.where(prepared, 1.0 - self.p_decay, 0.0))
        return {"iq": iq}

    def _items(self, raw: dict[str, np.ndarray], start: int, stop: int) -> dict[str, Any]:
        iq = raw["iq"]
        return {"I": iq[:, 0], "Q": iq[:, 1], "state": iq[:, 0] > self.threshold}

    def _describe(self) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        coords = {"shot": _coord("shot", np.arange(self.n_shots, dtype=np.int64), "", "shot index")}
        return coords, {"I": _stream(("shot",), "V", "I quadrature"),
                        "Q": _stream(("shot",), "V", "Q quadrature"),
                        "state": _stream(("shot",), "", "qubit state")}


class AdcTrace(Experiment):
    """Raw ADC traces of a readout pulse: offset, ring-up, intermediate frequency, 12-bit ADC.

    One sample per ns (1 GS/s); `intermediate_frequency` in Hz; acquisitions every `period_ns`.
    """

    name = "adc_trace"
    description = "raw ADC traces: int16 buffer per acquisition with timestamps (save_all)"
    unit = "acquisitions"
    default_rate = 100.0
    block_steps = 16
    parameter_units: ClassVar[Mapping[str, str]] = {"intermediate_frequency": "Hz", "period_ns": "ns"}

    def __init__(self, seed: int = 0, n_acquisitions: int = 200, n_samples: int = 1000,
                 intermediate_frequency: float = 50e6, period_ns: int = 10_000) -> None:
        super().__init__(seed)
        self.n_acquisitions = _positive("n_acquisitions", n_acquisitions)
        self.n_samples = _positive("n_samples", n_samples)
        self.intermediate_frequency = float(intermediate_frequency)
        self.period_ns = _positive("period_ns", period_ns)
        self.time = np.arange(self.n_samples, dtype=np.int64)  # ns since the window opened
        t = np.arange(self.n_samples, dtype=float)  # 1 GS/s: one sample per ns
        time_of_flight, ring_up = 0.2 * self.n_samples, 0.05 * self.n_samples + 1
        envelope = np.where(t >= time_of_flight, 1 - np.exp(-(t - time_of_flight) / ring_up), 0.0)
        self.signal = 30.0 + 400.0 * envelope * np.cos(2 * np.pi * self.intermediate_frequency * t * 1e-9)
        self._sum = np.zeros(self.n_samples)

    @property
    def n_steps(self) -> int:
        return self.n_acquisitions

    def streams(self) -> list[StreamDecl]:
        n = self.n_acquisitions
        return [StreamDecl("adc", "<i2", (self.n_samples,), timestamps=True, expected_count=n),
                StreamDecl("adc_avg", "<f8", (self.n_samples,), single=True, expected_count=1)]

    def _generate(self, rng: np.random.Generator, start: int, stop: int) -> dict[str, np.ndarray]:
        phase_jitter = rng.normal(0.0, 0.02, (stop - start, 1))
        trace = self.signal * (1 + phase_jitter) + rng.normal(0.0, 25.0, (stop - start, self.n_samples))
        return {"adc": np.clip(np.rint(trace), -2048, 2047).astype("<i2")}

    def _items(self, raw: dict[str, np.ndarray], start: int, stop: int) -> dict[str, Any]:
        adc = raw["adc"]
        self._sum += adc.sum(axis=0, dtype=float)
        records = np.empty(stop - start, dtype=[("value", "<i2", (self.n_samples,)), ("timestamp", "<i8")])
        records["value"] = adc
        records["timestamp"] = 1_000 + np.arange(start, stop, dtype="<i8") * self.period_ns
        return {"adc": records, "adc_avg": self._sum / stop}

    def _describe(self) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        coords = {"time": _coord("time", self.time, "ns", "time")}
        return coords, {"adc": _stream(("acquisition", "time"), ADC_UNITS, "raw ADC signal"),
                        "adc_avg": _stream(("time",), ADC_UNITS, "ADC signal, running average")}


class Sweep2D(Experiment):
    """Resonator spectroscopy versus flux: a Lorentzian dip whose frequency follows the flux.

    The flux bias is swept over `n_flux` values from -0.5 to 0.5 V (one flux quantum per volt),
    the readout frequency over `n_freq` values within 6 MHz of the bare resonator (7 GHz).
    """

    name = "sweep_2d"
    description = "resonator spectroscopy vs flux: 2-D I/Q buffer per averaging iteration (save_all)"
    unit = "iterations"
    default_rate = 20.0
    block_steps = 8

    def __init__(self, seed: int = 0, n_flux: int = 30, n_freq: int = 60, n_avg: int = 40) -> None:
        super().__init__(seed)
        self.n_flux = _positive("n_flux", n_flux)
        self.n_freq = _positive("n_freq", n_freq)
        self.n_avg = _positive("n_avg", n_avg)
        self.flux = np.linspace(-0.5, 0.5, self.n_flux)            # V, one flux quantum per volt
        self.detuning = np.linspace(-6e6, 6e6, self.n_freq)         # Hz around the bare resonator
        self.frequency = RESONATOR_FREQUENCY + self.detuning        # Hz
        shift = 3e6 * np.sqrt(np.abs(np.cos(np.pi * (self.flux - 0.05))))  # dispersive pull
        kappa = 1.5e6
        x = (self.detuning[None, :] - shift[:, None]) / (kappa / 2)
        s21 = 1 - 0.8 / (1 + 1j * x)                                  # notch-type dip
        self.s21 = 3e-4 * s21 * np.exp(1j * 2 * np.pi * self.detuning[None, :] * 40e-9)

    @property
    def n_steps(self) -> int:
        return self.n_avg

    def streams(self) -> list[StreamDecl]:
        n, shape = self.n_avg, (self.n_flux, self.n_freq)
        return [StreamDecl("I", "<f8", shape, expected_count=n),
                StreamDecl("Q", "<f8", shape, expected_count=n),
                StreamDecl("iteration", "<i8", single=True, expected_count=1)]

    def _generate(self, rng: np.random.Generator, start: int, stop: int) -> dict[str, np.ndarray]:
        shape = (stop - start, self.n_flux, self.n_freq)
        noise = rng.normal(0.0, 5e-5, shape) + 1j * rng.normal(0.0, 5e-5, shape)
        return {"s21": self.s21[None] + noise}

    def _items(self, raw: dict[str, np.ndarray], start: int, stop: int) -> dict[str, Any]:
        s21 = raw["s21"]
        return {"I": s21.real, "Q": s21.imag, "iteration": np.int64(stop - 1)}

    def _describe(self) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        coords = {"flux": _coord("flux", self.flux, "V", "flux bias"),
                  "frequency": _coord("frequency", self.frequency, "Hz", "readout frequency")}
        raw = (REPETITION, "flux", "frequency")
        return coords, {"I": _stream(raw, "V", "I quadrature"), "Q": _stream(raw, "V", "Q quadrature"),
                        "iteration": _stream(None, "", "iteration")}


EXPERIMENT_CLASSES: dict[str, type[Experiment]] = {
    cls.name: cls for cls in (PowerRabi, SingleShot, AdcTrace, Sweep2D)
}
EXPERIMENTS: dict[str, str] = {name: cls.description for name, cls in EXPERIMENT_CLASSES.items()}
