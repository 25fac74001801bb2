"""`qm_xarray.plot`: the form of each kind of data (I and Q or magnitude and phase of averaged
sweeps, an image per quantity of 2-D sweeps, IQ blobs and a state histogram of single shots, ADC
traces against time), labels from the data's long names and units, data loss and errors in the
title, and the format its file's suffix names, written atomically (the CLI's `plot -o` is in
test_cli.py)."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
import xarray as xr

from qm_xarray.errors import QmValueError
from qm_xarray.plot import (
    N_TRACES,
    Plan,
    draw,
    formats,
    iq_partner,
    new_figure,
    output_format,
    plan,
    plot,
    title,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

pytest.importorskip("matplotlib")

# the first bytes of each format (SVG: an XML declaration, or the <svg> element itself)
MAGIC = {"png": (b"\x89PNG\r\n\x1a\n",), "jpg": (b"\xff\xd8\xff",), "jpeg": (b"\xff\xd8\xff",),
         "pdf": (b"%PDF",), "svg": (b"<?xml", b"<svg")}


def dataset() -> xr.Dataset:
    values = np.sin(np.linspace(0, 6, 40))
    return xr.Dataset({"I": xr.DataArray(values, dims=("I_dim_0",), attrs={"qm_save_mode": "save"})},
                      attrs={"qm_job_id": "j"})


def test_the_formats_are_the_agg_canvas_ones() -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    known = formats()
    assert known == FigureCanvasAgg(Figure()).get_supported_filetypes()
    assert {"png", "jpg", "jpeg", "svg", "pdf"} <= set(known)
    assert "bmp" not in known  # what the errors below count on


@pytest.mark.parametrize("suffix", ["png", "jpg", "jpeg", "pdf", "svg", "PNG", "Jpg", "JPEG", "Pdf", "SVG"])
def test_the_suffix_names_the_format(tmp_path: Path, suffix: str) -> None:
    out = tmp_path / f"plot.{suffix}"
    assert output_format(out) == suffix.lower()
    assert plot(dataset(), out, width_px=320, height_px=240).kind == "line"
    data = out.read_bytes()
    assert data.startswith(MAGIC[suffix.lower()]), data[:16]
    if suffix.lower() == "png":  # the pixel formats keep the size asked for
        assert struct.unpack(">II", data[16:24]) == (320, 240)


def test_other_agg_formats_are_written_too(tmp_path: Path) -> None:
    magic = {"gif": b"GIF8", "tif": (b"II*\x00", b"MM\x00*"), "eps": b"%!PS-Adobe", "ps": b"%!PS"}
    for suffix, start in magic.items():
        if suffix not in formats():
            continue
        out = tmp_path / f"plot.{suffix}"
        plot(dataset(), out)
        assert out.read_bytes().startswith(start), (suffix, out.read_bytes()[:16])


@pytest.mark.parametrize("name, said", [
    ("plot.bmp", "no format is called .bmp"),
    ("plot.BMP", "no format is called .BMP"),
    ("plot.png.txt", "no format is called .txt"),
    ("plot", "has no suffix"),
    ("plot.", "has no suffix"),
    (".png", "has no suffix"),  # a hidden file named .png, as pathlib reads it
])
def test_an_unknown_or_missing_suffix_is_a_clear_error(tmp_path: Path, name: str, said: str) -> None:
    out = tmp_path / name
    with pytest.raises(QmValueError) as caught:
        plot(dataset(), out)
    text = str(caught.value)
    assert said in text and str(out) in text and "\n" not in text
    assert ".png" in text and ".jpg" in text and ".svg" in text and ".pdf" in text  # what it can write
    assert not out.exists()  # checked before anything is drawn or written


# ------------------------------------------------------------------------- the forms of the plots
def var(values: object, dims: tuple[str, ...], mode: str, **attrs: object) -> xr.DataArray:
    return xr.DataArray(np.asarray(values), dims=dims, attrs={"qm_save_mode": mode, **attrs})


def drawn(ds: xr.Dataset, **options: object) -> tuple[Plan, Figure]:
    """The plan of `ds` and the figure drawn from it (Agg, not written)."""
    p = plan(ds, **options)  # type: ignore[arg-type]
    fig = new_figure()
    draw(fig, p, ds)
    return p, fig


def rabi(iq_units: tuple[str, str] = ("V", "V")) -> xr.Dataset:
    """A Rabi sweep as the simulator describes it: averaged I, Q along a drive amplitude in V,
    raw I_all, Q_all per repetition."""
    amp = xr.DataArray(np.linspace(0, 2, 30), dims="amplitude", attrs={"units": "V", "long_name": "drive amplitude"})
    rng = np.random.default_rng(1)
    i, q = 2e-4 * np.cos(np.pi * amp.values), 1e-4 * np.sin(np.pi * amp.values)
    raw = (rng.normal(size=(8, 30)), rng.normal(size=(8, 30)))
    return xr.Dataset({
        "I": var(i, ("amplitude",), "save", units=iq_units[0], long_name="I quadrature"),
        "Q": var(q, ("amplitude",), "save", units=iq_units[1], long_name="Q quadrature"),
        "I_all": var(raw[0], ("repetition", "amplitude"), "save_all", units="V"),
        "Q_all": var(raw[1], ("repetition", "amplitude"), "save_all", units="V"),
        "iteration": var(7, (), "save")}, coords={"amplitude": amp},
        attrs={"qm_job_id": "rabi-1", "qm_job_state": "done"})


def test_iq_partners() -> None:
    assert [iq_partner(n) for n in ("I", "I_all", "I1", "qubit_I", "I_avg_2", "Ix", "adc", "II")] == \
        ["Q", "Q_all", "Q1", "qubit_Q", "Q_avg_2", None, None, None]


def test_an_averaged_sweep_draws_i_and_q_together() -> None:
    p, fig = drawn(rabi())
    assert (p.kind, p.what, p.view) == ("line", "I and Q", "iq")
    assert [str(a.name) for a in p.arrays] == ["I", "Q"]
    (ax,) = fig.axes  # same units: one panel, two lines
    assert len(ax.get_lines()) == 2 and [t.get_text() for t in ax.get_legend().get_texts()] == \
        ["I quadrature", "Q quadrature"]
    assert ax.get_xlabel() == "drive amplitude [V]"
    assert ax.get_ylabel() == "I, Q [µV]"  # 2e-4 V drawn as 200 µV
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), rabi().I.values * 1e6)
    assert fig.get_suptitle() == "rabi-1: I and Q (done)"

    plain = rabi()[["I", "Q"]]
    for name in ("I", "Q"):
        plain[name].attrs.pop("qm_save_mode")
    assert plan(plain).kind == "line"  # no save mode, along a sweep (a coordinate with units)
    assert plan(plain.drop_vars("amplitude")).kind == "iq"  # no save mode, no sweep: shots

    p, fig = drawn(rabi(("V", "mV")))  # different units: two panels
    assert p.kind == "line" and len(fig.axes) == 2
    assert [ax.get_ylabel() for ax in fig.axes] == ["I quadrature [µV]", "Q quadrature [mV]"]


def test_a_pair_of_save_all_buffers_is_averaged_over_its_items() -> None:
    ds = rabi().drop_vars(["I", "Q"])
    p, _ = drawn(ds)
    assert (p.kind, p.what) == ("line", "I_all and Q_all, mean over 8 items")
    np.testing.assert_allclose(p.arrays[0].values, ds.I_all.values.mean(axis=0))
    assert plan(rabi(), ["I_all", "Q_all"], reduce="last").what == "I_all and Q_all, last of 8 items"
    assert plan(rabi(), ["I_all"], view="iq").what == "I_all and Q_all, mean over 8 items"  # its partner
    assert plan(rabi(), ["Q_all"], view="iq").what == "I_all and Q_all, mean over 8 items"
    assert plan(rabi(), ["I_all"]).what == "I_all, mean over 8 items"  # one stream, view auto: alone
    p = plan(rabi(), ["I_all", "Q_all"], reduce="none")
    assert p.kind == "image" and len(p.arrays) == 2


def test_magnitude_and_phase() -> None:
    ds = rabi()
    phase = np.linspace(0, 3 * np.pi, 30)  # more than pi: wraps unless unwrapped
    ds["I"].values, ds["Q"].values = 3e-4 * np.cos(phase), 3e-4 * np.sin(phase)
    p, fig = drawn(ds, view="magphase")
    assert (p.kind, p.what, p.view) == ("line", "magnitude and phase of I, Q", "magphase")
    mag, ph = p.arrays
    np.testing.assert_allclose(mag.values, 3e-4)
    np.testing.assert_allclose(ph.values, phase, atol=1e-12)  # unwrapped, in rad
    assert (mag.attrs["units"], ph.attrs["units"]) == ("V", "rad")
    assert [ax.get_ylabel() for ax in fig.axes] == ["magnitude [µV]", "phase [rad]"]
    assert fig.axes[1].get_xlabel() == "drive amplitude [V]"


def sweep_2d() -> xr.Dataset:
    flux = xr.DataArray(np.linspace(-0.5, 0.5, 6), dims="flux", attrs={"units": "V", "long_name": "flux bias"})
    freq = xr.DataArray(7e9 + np.linspace(-6e6, 6e6, 9), dims="frequency",
                        attrs={"units": "Hz", "long_name": "readout frequency"})
    rng = np.random.default_rng(2)
    dims = ("repetition", "flux", "frequency")
    return xr.Dataset({"I": var(rng.normal(size=(4, 6, 9)) * 1e-4, dims, "save_all", units="V", long_name="I quadrature"),
                       "Q": var(rng.normal(size=(4, 6, 9)) * 1e-4, dims, "save_all", units="V", long_name="Q quadrature"),
                       "iteration": var(3, (), "save")}, coords={"flux": flux, "frequency": freq})


@pytest.mark.parametrize("view, names, bars", [("auto", ["I", "Q"], ["I quadrature [µV]", "Q quadrature [µV]"]),
                                               ("magphase", ["magnitude", "phase"], ["magnitude [µV]", "phase [rad]"])])
def test_a_2d_sweep_draws_an_image_per_quantity(view: str, names: list[str], bars: list[str]) -> None:
    p, fig = drawn(sweep_2d(), view=view)
    assert p.kind == "image" and [str(a.name) for a in p.arrays] == names
    assert p.what.endswith("mean over 4 items")
    images, colorbars = fig.axes[:2], fig.axes[2:]
    assert len(colorbars) == 2 and [c.get_ylabel() for c in colorbars] == bars  # labelled from the data
    assert [ax.get_xlabel() for ax in images] == ["readout frequency [GHz]"] * 2
    assert images[0].get_ylabel() == "flux bias [mV]"
    i, q = (sweep_2d()[n].mean("repetition").values for n in ("I", "Q"))
    np.testing.assert_allclose(p.arrays[0].values, i if view == "auto" else np.hypot(i, q))


def shots(n: int = 400, state: bool = True) -> xr.Dataset:
    rng = np.random.default_rng(3)
    excited = rng.random(n) < 0.3
    i = np.where(excited, 2e-4, -2e-4) + rng.normal(0, 5e-5, n)
    q = np.where(excited, 1.5e-4, 1e-4) + rng.normal(0, 5e-5, n)
    data = {"I": var(i, ("shot",), "save_all", units="V", long_name="I quadrature"),
            "Q": var(q, ("shot",), "save_all", units="V", long_name="Q quadrature")}
    if state:
        data["state"] = var(excited, ("shot",), "save_all", long_name="qubit state")
    return xr.Dataset(data, attrs={"qm_job_id": "shots-1", "qm_job_state": "running"})


def test_single_shots_are_iq_blobs_with_an_equal_aspect_and_a_state_histogram() -> None:
    ds = shots()
    p, fig = drawn(ds)
    assert (p.kind, p.what) == ("iq", "Q vs I, 400 shots, coloured by state")
    blobs, hist = fig.axes
    assert blobs.get_aspect() == 1.0 and blobs.get_adjustable() == "datalim"
    assert (blobs.get_xlabel(), blobs.get_ylabel()) == ("I quadrature [µV]", "Q quadrature [µV]")
    heights = [b.get_height() for b in hist.patches]
    assert heights == [int((~ds.state.values).sum()), int(ds.state.values.sum())]  # shots per state
    assert hist.get_xlabel() == "qubit state" and hist.get_title() == f"P(1) = {ds.state.values.mean():.3f}"
    with pytest.raises(QmValueError, match="single shots"):
        plan(ds, view="magphase")


def test_single_shots_without_state_are_projected_on_the_blobs_axis() -> None:
    p, fig = drawn(shots(state=False))
    assert (p.kind, p.what, p.color) == ("iq", "Q vs I, 400 shots", None)
    blobs, hist = fig.axes
    assert blobs.get_aspect() == 1.0
    assert sum(b.get_height() for b in hist.patches) == 400
    assert hist.get_xlabel().startswith("I rotated by ") and hist.get_xlabel().endswith("° [µV]")


def adc(dim: str = "time", units: str = "ns", name: str = "adc") -> xr.Dataset:
    rng = np.random.default_rng(4)
    t = xr.DataArray(np.arange(100), dims=dim, attrs={"units": units, "long_name": "time"})
    return xr.Dataset({name: var(rng.integers(-500, 500, (12, 100)).astype("<i2"), ("acquisition", dim), "save_all",
                                 units="ADC units", long_name="raw ADC signal")}, coords={dim: t})


def test_adc_traces_are_drawn_against_time() -> None:
    p, fig = drawn(adc())
    assert (p.kind, p.what) == ("trace", f"adc, {N_TRACES} of 12 traces and their mean")
    (ax,) = fig.axes
    lines = ax.get_lines()
    assert len(lines) == N_TRACES + 1  # the last few, and the mean of all
    np.testing.assert_allclose(lines[-1].get_ydata(), adc().adc.values.astype(float).mean(axis=0))
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("time [ns]", "raw ADC signal [ADC units]")
    # recognised by the units of the buffer axis, or by a name like time/adc
    assert plan(adc(dim="t", units="ns", name="raw")).kind == "trace"
    assert plan(adc(dim="adc_time", units="", name="raw")).kind == "trace"
    assert plan(adc(dim="sample", units="", name="adc1")).kind == "trace"
    assert plan(adc(dim="x", units="", name="raw")).kind == "line"  # not time: the mean
    assert plan(adc(), reduce="mean").kind == "line" and plan(adc(), reduce="none").kind == "image"


def test_data_loss_and_execution_errors_are_marked_in_the_title() -> None:
    ds = rabi()
    ds.attrs.update(qm_has_dataloss=1, qm_execution_errors=json.dumps(
        [{"code": 7, "severity": "error", "message": "boom"},
         {"code": 2, "severity": "warning", "message": "x" * 200}]))
    _, fig = drawn(ds)
    first, second = fig.get_suptitle().split("\n")
    assert first == "rabi-1: I and Q (done)"
    assert second.startswith("DATA LOSS; error 7: boom; warning 2: xxx") and len(second) < 120
    fig = new_figure()
    draw(fig, plan(ds), ds, title_text="my title")  # a title of one's own keeps the marks
    assert fig.get_suptitle().startswith("my title\nDATA LOSS")
    assert title(None, plan(rabi())) == "I and Q"
    ended = ds.assign_attrs(qm_job_state="closed")  # the protocol's "closed": failed or cancelled, as info says
    assert title(ended, plan(ended)).startswith("rabi-1: I and Q (failed)\n")
    quiet = ended.assign_attrs(qm_execution_errors="[]")
    assert title(quiet, plan(quiet)).startswith("rabi-1: I and Q (cancelled)\nDATA LOSS")


def test_bad_views_and_pairs() -> None:
    with pytest.raises(QmValueError, match="view must be one of auto, iq, magphase"):
        plan(rabi(), view="polar")
    with pytest.raises(QmValueError, match="draws an I/Q pair, and there is none"):
        plan(adc(), view="magphase")
    with pytest.raises(QmValueError, match="has no partner stream"):
        plan(adc(), ["adc"], view="iq")
    with pytest.raises(QmValueError, match="not an I/Q pair: shapes"):
        plan(rabi(), ["I", "Q_all"], reduce="none")


def test_a_file_is_replaced_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "p.png"
    plot(rabi(), out)
    before = out.read_bytes()
    from matplotlib.figure import Figure as MplFigure

    def broken(self: MplFigure, *args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt  # Ctrl-C while writing the next image
    monkeypatch.setattr(MplFigure, "savefig", broken)
    with pytest.raises(KeyboardInterrupt):
        plot(shots(), out)
    assert out.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["p.png"]
