"""The kernel cache: a generated source file changed on disk after it was written is detected
by the hash in its name and regenerated, never imported as it is."""
from __future__ import annotations

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
