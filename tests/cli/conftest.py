"""Fixtures for the user-facing surface: an operator declared in a user's own file."""
from __future__ import annotations

from pathlib import Path

import pytest

RMSNORM_SOURCE = '''\
import tiletune as tt
from tiletune import tensorexpr as te


@tt.operator
def rmsnorm(N, D):
    x = te.placeholder((N, D), "float32", name="x")
    w = te.placeholder((D,), "float32", name="w")
    k = te.reduce_axis(D, name="k")
    ms = te.compute((N,), lambda i: te.sum(x[i, k] * x[i, k], axis=k), name="ms")
    y = te.compute((N, D), lambda i, j: x[i, j] * te.rsqrt(ms[i] / D + 1e-6) * w[j], name="y")
    return [x, w], y


not_an_operator = 3
'''


@pytest.fixture(scope="module")
def rmsnorm_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The README's rmsnorm declared in a user's file (plus an attribute that is no operator),
    as `tiletune autotune path/to/file.py:rmsnorm` and `tiletune.load` find it."""
    path = tmp_path_factory.mktemp("user") / "user_ops.py"
    path.write_text(RMSNORM_SOURCE)
    return path


@pytest.fixture(scope="module")
def private_kernel_cache(tmp_path_factory: pytest.TempPathFactory):
    """The suite's private kernel cache for module-scoped fixtures, which run before the
    function-scoped autouse fixture that sets it."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TILETUNE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "kernel-cache"))
        yield
