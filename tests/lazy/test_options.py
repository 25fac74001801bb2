"""OpenOptions: one definition and one check of the engine's options, used by the engine,
refresh, watch, export_zarr and the CLI alike."""

from __future__ import annotations

import pytest

import qm_xarray as qx
from qm_xarray.cli import main
from qm_xarray.lazy.options import OpenOptions, check_interval


def test_options_are_normalised_and_checked():
    opts = OpenOptions.of({"streams": ["I"], "drop_variables": "Q", "dims": {"I": "shot"}, "align": ["I"]})
    assert (opts.streams, opts.drop_variables, opts.dims, opts.align) == (("I",), ("Q",), {"I": ("shot",)},
                                                                          ("I",))
    assert OpenOptions.of(opts.kwargs()) == opts
    for bad, match in [({"timestamps": "x"}, "timestamps must be"), ({"on_dataloss": "x"}, "on_dataloss"),
                       ({"chunk_bytes": 0}, "chunk_bytes must be"), ({"item_dim": ""}, "item_dim"),
                       ({"streams": [1]}, "stream names")]:
        with pytest.raises((ValueError, TypeError), match=match):
            OpenOptions.of(bad)
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['dim'\]"):
        OpenOptions.of({"dim": {}})


@pytest.mark.parametrize("every", [0, -1, float("inf"), "1", True])
def test_one_rule_for_the_polling_interval(every):
    with pytest.raises(ValueError, match="every must be a positive number of seconds"):
        check_interval(every)


def test_watch_and_export_check_their_arguments_before_any_io(tmp_path):
    job = qx.Connection(qx.ConnectionDetails("127.0.0.1", 1)).job("nowhere")  # never contacted
    with pytest.raises(qx.QmValueError, match="every must be a positive"):
        qx.watch(job, every=-1)
    with pytest.raises(qx.QmValueError, match="timeout must be positive"):
        qx.watch(job, timeout=-1)
    with pytest.raises(qx.QmTypeError, match="unknown option"):
        qx.watch(job, colour="red")
    with pytest.raises(qx.QmValueError, match="every must be a positive"):
        qx.export_zarr(job, tmp_path / "x.zarr", every=0)
    with pytest.raises(qx.QmValueError, match="timeout must be positive"):
        qx.export_zarr(job, tmp_path / "x.zarr", timeout=-1)
    with pytest.raises(qx.QmValueError, match="timestamps must be"):
        qx.export_zarr(job, tmp_path / "x.zarr", timestamps="nope")
    assert not (tmp_path / "x.zarr").exists()


def test_the_cli_uses_the_same_rule(capsys):
    assert main(["export", "j", "x.zarr", "--every", "0"]) == 2
    assert "--every must be a positive number of seconds, got 0.0" in capsys.readouterr().err
