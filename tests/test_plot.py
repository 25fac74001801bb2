"""`qm_xarray.plot.plot` writes the format its file's suffix names (the CLI's `plot -o` is in
test_cli.py)."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from qm_xarray.errors import QmValueError
from qm_xarray.plot import formats, output_format, plot

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
