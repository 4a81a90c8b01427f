"""The kernel cache: a generated source file changed on disk after it was written is detected
by the hash in its name and regenerated, never imported as it is; an unwritable cache falls back
to a private one with a warning, and a failed write leaves no temporary file."""
from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import pytest
import torch

from tiletune.kernels import runtime
from tiletune.kernels.task import Task, TaskSpec


@pytest.fixture
def fresh_process(tmp_path, monkeypatch):
    """A private cache directory and the runtime's per-process caches emptied, as a new
    process that finds files an earlier process wrote would see them."""
    monkeypatch.setenv("TILETUNE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(runtime, "_MODULES", {})
    monkeypatch.setattr(runtime, "_VERIFIED", set(), raising=False)
    return tmp_path


def add_source():
    task = Task(TaskSpec.make("add", {"N": 3, "D": 37}, "float32"))
    return task.source(task.space.default(), for_interpreter=True)


@pytest.mark.parametrize("tamper", ["prepend", "replace", "truncate"])
def test_a_tampered_cached_source_is_regenerated_and_its_code_never_runs(fresh_process, monkeypatch, tamper):
    src = add_source()
    path = runtime.source_file(src)
    assert path.read_text() == src.text
    marker = fresh_process / "tampered-code-ran"
    payload = f"open({str(marker)!r}, 'w').close()\nraise SystemExit('tampered')\n"
    text = {"prepend": payload + src.text, "replace": payload, "truncate": src.text[: len(src.text) // 2]}[tamper]
    path.write_text(text)
    # a later process (fresh per-process caches) finds the changed file
    monkeypatch.setattr(runtime, "_MODULES", {})
    monkeypatch.setattr(runtime, "_VERIFIED", set(), raising=False)

    x, y = torch.randn(3, 37), torch.randn(3, 37)
    out = torch.full((3, 37), float("nan"))
    runtime.launch(src, [x, y], out, {"N": 3, "D": 37})

    assert not marker.exists()
    assert path.read_text() == src.text
    torch.testing.assert_close(out, x + y)


def test_an_intact_cached_source_is_reused_without_rewriting(fresh_process, monkeypatch):
    src = add_source()
    path = runtime.source_file(src)
    before = path.stat().st_mtime_ns
    monkeypatch.setattr(runtime, "_VERIFIED", set(), raising=False)
    assert runtime.source_file(src) == path
    assert path.stat().st_mtime_ns == before


def test_a_file_changed_after_its_check_is_still_not_what_runs(fresh_process, monkeypatch):
    """The module is compiled from the generated text itself, so neither a file changed between
    the check and the import nor a planted bytecode file next to it is executed."""
    src = add_source()
    path = runtime.source_file(src)  # checked: this process trusts the file from now on
    marker = fresh_process / "tampered-code-ran"
    path.write_text(f"open({str(marker)!r}, 'w').close()\n" + src.text)
    pycache = path.parent / "__pycache__"
    pycache.mkdir(exist_ok=True)
    (pycache / f"{path.stem}.cpython-312.pyc").write_bytes(b"planted")

    module = runtime.load_module(src)

    assert not marker.exists()
    assert callable(module.launch)


@pytest.fixture
def unwritable_cache(tmp_path, monkeypatch):
    """$TILETUNE_CACHE_DIR through a regular file (unwritable even for root), with the
    runtime's per-process caches emptied and temporary directories made under tmp_path."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("TILETUNE_CACHE_DIR", str(blocker / "kernels"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    for name, empty in (("_MODULES", {}), ("_VERIFIED", set()), ("_WRITABLE", set()), ("_FALLBACK", {})):
        monkeypatch.setattr(runtime, name, empty, raising=False)
    return tmp_path


def test_an_unwritable_cache_warns_once_and_falls_back_to_a_private_one(unwritable_cache):
    src = add_source()
    with pytest.warns(runtime.KernelCacheWarning, match=r"a-file/kernels cannot be written.*TILETUNE_CACHE_DIR"):
        path = runtime.source_file(src)
    assert path.parent.parent == unwritable_cache and path.parent.name.startswith("tiletune-kernels-")
    assert path.read_text() == src.text
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per process, not per kernel
        assert runtime.cache_dir() == path.parent
        x, y = torch.randn(3, 37), torch.randn(3, 37)
        out = torch.full((3, 37), float("nan"))
        runtime.launch(src, [x, y], out, {"N": 3, "D": 37})
    torch.testing.assert_close(out, x + y)


def test_a_failed_write_leaves_no_temporary_file_and_falls_back(fresh_process, monkeypatch):
    monkeypatch.setattr(runtime, "_WRITABLE", set(), raising=False)
    monkeypatch.setattr(runtime, "_FALLBACK", {}, raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(fresh_process))
    configured = fresh_process / "cache"
    real_replace = os.replace

    def replace(src, dst):
        if Path(dst).parent == configured:
            raise PermissionError(13, "Permission denied")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    src = add_source()
    with pytest.warns(runtime.KernelCacheWarning, match="Permission denied"):
        path = runtime.source_file(src)
    assert path.parent != configured and path.read_text() == src.text
    assert list(configured.glob(".tmp-*")) == []


def test_a_private_cache_that_cannot_be_written_either_is_a_clear_error(unwritable_cache, monkeypatch):
    def no_temp(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tempfile, "mkdtemp", no_temp)
    with pytest.raises(runtime.KernelCacheError, match=r"a-file/kernels cannot be written.*set TILETUNE_CACHE_DIR"):
        runtime.source_file(add_source())
