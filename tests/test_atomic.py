"""Atomic writes: a failure leaves the previous file, or nothing, and no temporary file."""

import errno
import os

from digitlab.shared.errors import UserError

import pytest

from digitlab.files.atomic import atomic_path, write_json


def test_failure_midway_keeps_the_previous_file_and_no_temporary(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("previous")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as temporary:
            temporary.write_text("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "previous"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_temporary_keeps_the_suffix_so_writers_pick_the_format(tmp_path):
    with atomic_path(tmp_path / "model.keras") as temporary:
        assert temporary.suffix == ".keras" and temporary.parent == tmp_path
        temporary.write_text("x")
    assert (tmp_path / "model.keras").read_text() == "x"


def test_nan_is_refused_in_json(tmp_path):
    with pytest.raises(ValueError):
        write_json(tmp_path / "m.json", {"loss": float("nan")})
    assert not any(tmp_path.iterdir())


def test_unwritable_folder_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(UserError, match="cannot write to"):
        write_json(blocker / "sub" / "m.json", {})


def test_full_disk_is_a_clear_error_and_keeps_the_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "stats.json"
    target.write_text("previous")

    def disk_full(*args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(UserError, match="the disk is full"):
        write_json(target, {"a": 1})
    assert target.read_text() == "previous" and [p.name for p in tmp_path.iterdir()] == ["stats.json"]
