"""Test-wide setup.

Triton fixes per process, when triton.language is first imported, whether kernels are
interpreted. The suite runs generated kernels on CPU tensors, so it interprets, except in a
GPU run (`pytest -m gpu`), which compiles for the device. Tests marked `gpu` skip without CUDA.
"""
import os

import pytest


def pytest_configure(config: pytest.Config) -> None:
    gpu_run = "gpu" in (config.getoption("markexpr", "") or "") and "not gpu" not in config.getoption("markexpr", "")
    os.environ.setdefault("TRITON_INTERPRET", "0" if gpu_run else "1")
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    if torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") == "0":
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU and a compiling process (run: pytest -m gpu)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _private_caches(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Generated sources go to a per-session directory, not the user's cache."""
    monkeypatch.setenv("TILETUNE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "kernel-cache"))
