"""Reductions and normalisations: against the reference evaluator and torch, through the
interpreter, at odd shapes, every axis of 4-D tensors, fp32 and fp16, default and other configs."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

import tiletune
from tiletune.errors import LoweringError
from tiletune.kernels.library import BUILTINS, FAMILIES
from tiletune.kernels.families import default_schedule
from tiletune.kernels.lower import lower

D4 = dict(A=2, B=3, C=5, D=7)
DTYPES = ("float32", "float16")


def smallest(space):
    """The default config with the smallest reduce chunk: the loop runs several times."""
    return space.default().replace(BLOCK_RED=space.knob("BLOCK_RED").choices()[0])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("axes", [(0,), (1,), (2,), (3,), (1, 2), (0, 1, 2, 3)])
def test_sum_and_max_over_any_axes_of_4d(lowered, dtype, axes):
    for name in ("sum4d", "amax4d"):
        graph = BUILTINS[name].with_attrs(axes=axes).graph(dtype)
        for config in (None, smallest):
            k = lowered(graph, D4, config)
            assert k.check().ok, (k.config, k.check().reason)


@pytest.mark.parametrize("axis", [0, 1, 2, 3])
def test_argmax_and_argmin_match_torch_with_ties(lowered, axis):
    x = torch.randint(0, 3, (2, 3, 5, 7)).float()  # many ties: the first index must win
    for name, fn in (("argmax4d", torch.argmax), ("argmin4d", torch.argmin)):
        graph = BUILTINS[name].with_attrs(axis=axis).graph("float32")
        for config in (None, smallest):
            got = lowered(graph, D4, config).run([x])
            assert torch.equal(got, fn(x, dim=axis)), (name, axis)


def test_means_and_norms_match_torch(lowered):
    x = torch.randn(2, 3, 5, 7)
    for name, want in (("mean4d", x.double().mean(3)), ("l1_norm", x.double().abs().sum(3)),
                       ("l2_norm", torch.linalg.vector_norm(x.double(), dim=3)),
                       ("frobenius_norm", torch.linalg.matrix_norm(x.double())),
                       ("sum4d", x.double().sum(3))):
        for config in (None, smallest):
            got = lowered(BUILTINS[name].graph("float32"), D4, config).run([x])
            torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dims", [dict(N=1), dict(N=17), dict(N=70001)])
def test_sum_to_a_scalar_split_across_programs(lowered, dtype, dims):
    graph = BUILTINS["sum_all"].graph(dtype)
    k = lowered(graph, dims)
    assert k.check().ok, k.check().reason
    if "SPLIT" in k.config.values:
        split = lowered(graph, dims, SPLIT=4, BLOCK_RED=1024)
        assert "sum_all_combine" in split.src.text
        v = split.check()
        assert v.ok, v.reason


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dim", [0, 1, 2, 3])
@pytest.mark.slow
def test_softmax_log_softmax_and_l2_normalize_along_any_dim(lowered, dtype, dim):
    x = torch.randn(2, 3, 5, 17).to(getattr(torch, dtype))
    for name, want in (("softmax_nd", torch.softmax(x.double(), dim)),
                       ("log_softmax_nd", torch.log_softmax(x.double(), dim)),
                       ("l2_normalize", torch.nn.functional.normalize(x.double(), dim=dim))):
        graph = BUILTINS[name].with_attrs(dim=dim).graph(dtype)
        dims = dict(A=2, B=3, C=5, D=17)
        for config in (None, smallest):
            got = lowered(graph, dims, config).run([x])
            tol = 1e-5 if dtype == "float32" else 2e-3
            torch.testing.assert_close(got.double(), want, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", DTYPES)
def test_looped_softmax_runs_twice_with_a_masked_tail(lowered, dtype):
    graph = BUILTINS["softmax"].graph(dtype)
    assert lowered(graph, dict(N=1, D=1), smallest).check().ok
    for dims in (dict(N=3, D=17), dict(N=5, D=33)):
        k = lowered(graph, dims, BLOCK_RED=16, BLOCK_ROWS=1)
        assert "for red_start" in k.src.text
        assert k.check().ok, k.check().reason
    for name, dims in (("layernorm", dict(N=3, D=17)), ("rmsnorm", dict(N=4, D=33))):
        k = lowered(BUILTINS[name].graph(dtype), dims, BLOCK_RED=16, BLOCK_ROWS=2)
        assert k.check().ok, k.check().reason


@pytest.mark.parametrize("dtype", DTYPES)
def test_instance_group_and_batch_norm_match_torch(lowered, dtype):
    t = getattr(torch, dtype)
    tol = 1e-4 if dtype == "float32" else 3e-3
    x = torch.randn(2, 6, 5, 3).to(t)
    for config in (None, smallest):
        got = lowered(BUILTINS["instancenorm"].graph(dtype), dict(N=2, C=6, H=5, W=3), config).run([x])
        torch.testing.assert_close(got.double(), torch.nn.functional.instance_norm(x.double()), rtol=tol, atol=tol)
        w, b = torch.randn(6).to(t), torch.randn(6).to(t)
        got = lowered(BUILTINS["groupnorm"].graph(dtype), dict(N=2, G=3, CG=2, HW=15), config).run(
            [x.reshape(2, 3, 2, 15), w.reshape(3, 2), b.reshape(3, 2)])
        want = torch.nn.functional.group_norm(x.double(), 3, w.double(), b.double())
        torch.testing.assert_close(got.double().reshape(2, 6, 5, 3), want, rtol=tol, atol=tol)
    rm, rv = torch.randn(6).to(t), torch.rand(6).to(t) + 0.5
    got = lowered(BUILTINS["batchnorm"].graph(dtype), dict(N=2, C=6, H=5, W=3)).run([x, rm, rv, w, b])
    want = torch.nn.functional.batch_norm(x.double(), rm.double(), rv.double(), w.double(), b.double())
    torch.testing.assert_close(got.double(), want, rtol=tol, atol=tol)


def test_split_of_a_normalisation_is_refused_with_the_reason():
    from tiletune import tensorexpr as te

    @te.operator
    def partial_rows(N, D, E):
        """An output over a slice of the row while a reduction needs the whole row, with SPLIT."""
        x = te.placeholder((N, D), "float32", name="x")
        k = te.reduce_axis(D, name="k")
        s = te.compute((N,), lambda i: te.sum(x[i, k], axis=k), name="s")
        y = te.compute((N, D), lambda i, j: x[i, j] / s[i], name="y")
        return [x], y

    graph = partial_rows.graph()
    schedule = default_schedule(graph, dict(N=2, D=8, E=1))
    schedule.split_k("red", 4)
    with pytest.raises(LoweringError, match="SPLIT=4 splits a reduction across programs"):
        lower(graph, schedule.resolve(schedule.space().default()))


# Compiled as the tuner's compile step does: with the launch specialization (constants, launch
# flags, aligned arguments) the launcher would give the kernel at these dims.
COMPILE = r'''
import json, sys
from tiletune.kernels.compile import aot_compile
from tiletune.kernels.runtime import load_module
from tiletune.kernels.task import TaskSpec
out = {}
for name, dims in json.loads(sys.argv[1]).items():
    task = TaskSpec.make(name, dims, "float16").build()
    src = task.source(task.space.default())
    constants, aligned = task.specialization(src)
    signature = {**src.signature, **{n: "constexpr" for n in constants}}
    fn = getattr(load_module(src), src.kernel_name)
    usage = aot_compile(fn, signature, {**src.constexprs, **constants}, num_warps=src.num_warps,
                        num_stages=src.num_stages, aligned=aligned)
    out[name] = usage.registers
print(json.dumps(out))
'''


@pytest.mark.slow
def test_every_builtin_of_the_family_compiles_for_sm90(tmp_path):
    cases = {n: (D4 if "A" in BUILTINS[n].dim_names else
                 {d: 8 for d in BUILTINS[n].dim_names}) for m in ("reductions", "normalizations")
             for n in FAMILIES[m].__all__}
    cases["sum_all"] = {"N": 1 << 20}  # split across programs
    env = {**os.environ, "TRITON_INTERPRET": "0", "TRITON_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-c", COMPILE, json.dumps(cases)], capture_output=True, text=True,
                          env=env, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    registers = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(registers) == set(cases) and all(r > 0 for r in registers.values())


@pytest.mark.slow
def test_autotune_a_looped_softmax_on_the_simulated_h100(tmp_path):
    report = tiletune.autotune("softmax_nd", {"A": 1, "B": 4, "C": 3, "D": 5000}, dtype="float16",
                               device="sim-h100", trials=4, db=tmp_path / "t.db", workers=1)
    assert report.trials == 4 and report.statuses.get("ok", 0) >= 1, report.reasons
