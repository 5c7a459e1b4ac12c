"""Checkpoints: atomic writes, one clear error for every unloadable file, and the ``.prev`` fallback."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
import torch

from autoprog.checkpoint import (
    CheckpointFallbackWarning,
    load_checkpoint,
    load_latest_checkpoint,
    previous_path,
    save_checkpoint,
)
from autoprog.errors import AutoprogError, CheckpointError

MARKER_ENV = "AUTOPROG_TEST_MARKER"


def _touch_marker() -> None:  # what a malicious checkpoint would run while being unpickled
    Path(os.environ[MARKER_ENV]).write_text("code ran")


class Payload:
    """A class whose unpickling calls a function: the test proves it never runs."""

    def __reduce__(self):
        return (_touch_marker, ())


class Plain:
    """A harmless custom class: still refused, since any class's unpickling could run code."""

    def __init__(self) -> None:
        self.value = 1


def state(step: int = 3) -> dict:
    return {
        "model": {"w": torch.arange(6.0).view(2, 3), "b": torch.zeros(2)},
        "step": step,
        "config": {"lr": 1e-3, "name": "x", "none": None},
    }


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys() and a["step"] == b["step"] and a["config"] == b["config"]
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k])


def test_round_trip_and_no_temp_file_left(tmp_path):
    path = save_checkpoint(state(), tmp_path / "sub" / "last.pt")
    assert path == tmp_path / "sub" / "last.pt"
    assert_same(load_checkpoint(path), state())
    save_checkpoint(state(4), path)  # replacing an existing one
    assert load_checkpoint(path)["step"] == 4
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]


def test_failed_write_leaves_neither_temp_file_nor_damage(tmp_path):
    path = save_checkpoint(state(1), tmp_path / "last.pt")
    with pytest.raises(Exception):  # noqa: B017 - whatever torch raises for an unpicklable object
        save_checkpoint({"f": lambda: 0}, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
    assert load_checkpoint(path)["step"] == 1


def test_saved_file_has_ordinary_permissions(tmp_path):
    path = save_checkpoint(state(), tmp_path / "last.pt")
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_truncated_file_is_a_checkpoint_error_naming_the_path(tmp_path):
    path = save_checkpoint(state(), tmp_path / "last.pt")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    message = str(e.value)
    assert str(path) in message and "truncated" in message and "\n" not in message
    assert isinstance(e.value, AutoprogError)


@pytest.mark.parametrize(
    "content,reason",
    [
        (os.urandom(4096), "not a checkpoint written by torch.save"),
        (b"", "empty"),
        (b"hello, not a checkpoint", "not a checkpoint written by torch.save"),
    ],
)
def test_garbage_is_a_checkpoint_error(tmp_path, content, reason):
    path = tmp_path / "junk.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    assert str(path) in str(e.value) and reason in str(e.value) and "\n" not in str(e.value)


def test_missing_file_and_non_dict(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    torch.save(torch.ones(2), tmp_path / "tensor.pt")
    with pytest.raises(CheckpointError, match="holds a Tensor, not a checkpoint dict"):
        load_checkpoint(tmp_path / "tensor.pt")


def test_pickled_object_is_refused_without_running_its_code(tmp_path, monkeypatch):
    marker = tmp_path / "marker"
    monkeypatch.setenv(MARKER_ENV, str(marker))
    path = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.ones(1)}, "payload": Payload()}, path)
    assert not marker.exists()  # saving does not run it; only unpickling would
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    message = str(e.value)
    assert str(path) in message and "refused" in message and "_touch_marker" in message
    assert "\n" not in message
    assert not marker.exists()
    with pytest.raises(CheckpointError):  # the fallback loader refuses it as well
        load_latest_checkpoint(path)
    assert not marker.exists()


def test_plain_custom_class_is_refused(tmp_path):
    path = tmp_path / "plain.pt"
    torch.save({"obj": Plain()}, path)
    with pytest.raises(CheckpointError, match=r"pickled Python object \(.*Plain\)"):
        load_checkpoint(path)


def test_keep_previous_rotates_the_last_one(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(state(1), path, keep_previous=True)
    assert not previous_path(path).exists()  # nothing to keep yet
    save_checkpoint(state(2), path, keep_previous=True)
    save_checkpoint(state(3), path, keep_previous=True)
    assert previous_path(path) == tmp_path / "last.pt.prev"
    assert load_checkpoint(path)["step"] == 3 and load_checkpoint(previous_path(path))["step"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "last.pt.prev"]


def test_keep_previous_does_not_rotate_a_damaged_file_over_a_good_prev(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(state(1), path, keep_previous=True)
    save_checkpoint(state(2), path, keep_previous=True)
    path.write_bytes(path.read_bytes()[:100])  # the newest got damaged
    save_checkpoint(state(3), path, keep_previous=True)
    assert load_checkpoint(path)["step"] == 3 and load_checkpoint(previous_path(path))["step"] == 1


def test_latest_falls_back_to_prev_with_a_warning(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(state(1), path, keep_previous=True)
    save_checkpoint(state(2), path, keep_previous=True)
    assert load_latest_checkpoint(path)["step"] == 2  # healthy: the newest, no warning
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.warns(CheckpointFallbackWarning, match="truncated") as record:
        loaded = load_latest_checkpoint(path)
    assert loaded["step"] == 1
    assert str(previous_path(path)) in str(record[0].message)
    messages: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a log callback replaces the warning
        assert load_latest_checkpoint(path, log=messages.append)["step"] == 1
    assert len(messages) == 1 and str(path) in messages[0]


def test_latest_falls_back_when_the_newest_is_missing(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(state(1), path, keep_previous=True)
    save_checkpoint(state(2), path, keep_previous=True)
    path.unlink()  # e.g. a crash between the two renames of keep_previous
    with pytest.warns(CheckpointFallbackWarning, match="does not exist"):
        assert load_latest_checkpoint(path)["step"] == 1


def test_latest_raises_when_neither_loads(tmp_path):
    path = tmp_path / "last.pt"
    path.write_bytes(b"junk")
    with pytest.raises(CheckpointError) as e:
        load_latest_checkpoint(path)
    message = str(e.value)
    assert message.startswith("no loadable checkpoint") and "\n" not in message
    assert str(path) in message and str(previous_path(path)) in message
