"""`qm_xarray.files.write_atomic`: all or nothing, no scratch file left behind."""

from __future__ import annotations

import os

import pytest

from qm_xarray.files import write_atomic


@pytest.mark.parametrize("sync", [False, True])
def test_replaces_the_contents(tmp_path, sync):
    target = tmp_path / "f.json"
    target.write_bytes(b"old")
    write_atomic(target, b"new", sync=sync)
    assert target.read_bytes() == b"new" and os.listdir(tmp_path) == ["f.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_scratch(tmp_path, monkeypatch):
    target = tmp_path / "f.json"
    target.write_bytes(b"old")

    def broken(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError, match="No space"):
        write_atomic(target, b"new")
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["f.json"]
