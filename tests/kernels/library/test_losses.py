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


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dims", (dict(N=1, C=1), dict(N=3, C=17), dict(N=13, C=131)))
def test_cross_entropy_and_kl_div_match_the_reference(lowered, dtype, dims):
    graphs = (BUILTINS["cross_entropy"].graph(dtype), BUILTINS["kl_div"].graph(dtype),
              BUILTINS["kl_div"].with_attrs(log_target=True).graph(dtype))
    for graph in graphs:
        for config in (None, smallest):
            k = lowered(graph, dims, config)
            v = k.check()
            assert v.ok, (graph.name, k.config, v.reason)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_matches_torch_with_ignored_targets(lowered, dtype):
    t = getattr(torch, dtype)
    dims = dict(N=11, C=37)
    x = (3 * torch.randn(11, 37)).to(t)
    target = torch.randint(0, 37, (11,))
    target[[2, 7]] = -100  # torch's ignore_index
    want = F.cross_entropy(x.double(), target)
    graph = BUILTINS["cross_entropy"].graph(dtype)
    # the default, the smallest chunk (the online logsumexp loops), one row per program
    for config, values in ((None, {}), (smallest, {}), (None, dict(BLOCK_ROWS=1, BLOCK_RED=16))):
        k = lowered(graph, dims, config, **values)
        got = k.run([x, target])
        assert got.dtype == t and got.shape == ()
        torch.testing.assert_close(got.double(), want, rtol=tolerance(dtype), atol=tolerance(dtype))
    assert "cross_entropy_combine" in k.src.text and "for red_start" in k.src.text
    everything_ignored = k.run([x, torch.full((11,), -100)])
    assert torch.isnan(everything_ignored)  # as torch: a mean over no rows


@pytest.mark.slow
def test_cross_entropy_combines_many_row_programs(lowered):
    """More partials than the combining kernel reads in one iteration: its loop runs."""
    dims = dict(N=1100, C=3)
    k = lowered(BUILTINS["cross_entropy"].graph("float32"), dims, BLOCK_ROWS=1)
    x, target = torch.randn(1100, 3), torch.randint(0, 3, (1100,))
    torch.testing.assert_close(k.run([x, target]).double(), F.cross_entropy(x.double(), target), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", DTYPES)
def test_kl_div_matches_torch_batchmean(lowered, dtype):
    t = getattr(torch, dtype)
    dims = dict(N=5, C=67)
    x = torch.randn(5, 67).log_softmax(1).to(t)
    p = torch.randn(5, 67).softmax(1)
    zeroed = p.clone()
    zeroed[0, :3] = 0.0  # zero probabilities add nothing, as torch's xlogy
    for log_target, target in ((False, zeroed.to(t)), (True, p.log().to(t))):
        want = F.kl_div(x.double(), target.double(), reduction="batchmean", log_target=log_target)
        graph = BUILTINS["kl_div"].with_attrs(log_target=log_target).graph(dtype)
        for config in (None, smallest):
            got = lowered(graph, dims, config).run([x, target])
            torch.testing.assert_close(got.double(), want, rtol=tolerance(dtype), atol=tolerance(dtype))


def test_a_total_over_rows_with_a_non_scalar_output_is_refused():
    from tiletune import tensorexpr as te
    from tiletune.errors import LoweringError
    from tiletune.kernels.lower import lower
    from tiletune.kernels.families import default_schedule

    @te.operator
    def centred_by_total(N, D):
        """Row sums, their total, and an output per row: one kernel cannot write rows after a total."""
        x = te.placeholder((N, D), "float32", name="x")
        k = te.reduce_axis(D, name="k")
        s = te.compute((N,), lambda n: te.sum(x[n, k], axis=k), name="s")
        i = te.reduce_axis(N, name="i")
        total = te.compute((), lambda: te.sum(s[i], axis=i), name="total")
        return [x], te.compute((N,), lambda n: s[n] - total[()], name="y")

    graph = centred_by_total.graph()
    with pytest.raises(LoweringError, match="total 'total' reduces the rows of 's' but the output 'y' has axes"):
        schedule = default_schedule(graph, dict(N=4, D=8))
        lower(graph, schedule.resolve(schedule.space().default()))


COMPILE = r'''
import json, sys
from tiletune.kernels.compile import aot_compile
from tiletune.kernels.library import FAMILIES
from tiletune.kernels.lower import lower
from tiletune.kernels.runtime import load_module
from tiletune.kernels.families import default_schedule
out = {}
for name, dims in json.loads(sys.argv[1]).items():
    graph = getattr(FAMILIES["losses"], name).graph("float16")
    s = default_schedule(graph, dims)
    src = lower(graph, s.resolve(s.space().default()))
    fn = getattr(load_module(src), src.kernel_name)
    usage = aot_compile(fn, src.signature, src.constexprs, num_warps=src.num_warps, num_stages=src.num_stages)
    out[name] = usage.registers
print(json.dumps(out))
'''


@pytest.mark.slow
def test_every_builtin_of_the_family_compiles_for_sm90(tmp_path):
    cases = {"mse_loss": dict(N=64, D=4099), "huber_loss": dict(N=8, D=4096),
             "cross_entropy": dict(N=64, C=4099), "kl_div": dict(N=32, C=1000)}
    assert set(cases) == set(FAMILIES["losses"].__all__)
    env = {**os.environ, "TRITON_INTERPRET": "0", "TRITON_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-c", COMPILE, json.dumps(cases)], capture_output=True, text=True,
                          env=env, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    registers = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(registers) == set(cases) and all(r > 0 for r in registers.values())


@pytest.mark.slow
def test_autotune_cross_entropy_on_the_simulated_h100(tmp_path):
    report = tiletune.autotune("cross_entropy", {"N": 64, "C": 1000}, dtype="float16",
                               device="sim-h100", trials=3, db=tmp_path / "t.db", workers=1)
    assert report.trials == 3 and report.statuses.get("ok", 0) >= 1, report.reasons
