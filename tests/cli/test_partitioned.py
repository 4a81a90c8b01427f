"""Operators no one kernel holds load as one operator: tiletune splits them into kernels
(`kernels.parts`), tunes those under one budget, stores each kernel's configs in the DB,
shows each kernel and why the graph was cut, and runs them in order from one call.

The blocks (`fused_blocks.py`) are the ones model authors found refused as one operator; each
is checked against torch's own functions in the interpreter at shapes no tile divides."""
from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

import tiletune as tt
from tiletune.cli import main
from tiletune.kernels.library import resolve_operator
from tiletune.kernels.parts import is_split, partition_of
from tiletune.tensorexpr.partition import is_anchor
from tiletune.tuning_db import TuningDB

BLOCKS = Path(__file__).with_name("fused_blocks.py")


def ref(name: str) -> str:
    return f"{BLOCKS}:{name}"


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "not tuned: using the default config"
        yield


def _randn(*shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed + len(shape)))


def _matmul_gelu_softmax(a, b, bias):
    return torch.softmax(F.gelu(a @ b + bias), dim=-1) * 0.5


def _conv_gn(x, w, gamma, beta, groups):
    y = F.conv2d(x, w, padding=1)
    return F.group_norm(y, groups, gamma.reshape(-1), beta.reshape(-1), eps=1e-5)


def _conv_gn_act_res(x, w, res, gamma, beta):
    return F.hardswish(torch.tanh(_conv_gn(x, w, gamma, beta, gamma.shape[0]))) + res


# name, dims, inputs, what torch computes
CASES = {
    "matmul_gelu_softmax": (dict(M=37, N=45, K=29), lambda: [_randn(37, 29), _randn(29, 45), _randn(45)],
                            _matmul_gelu_softmax),
    "gemm_div_sum_scale": (dict(M=37, N=45, K=29), lambda: [_randn(37, 29), _randn(29, 45)],
                           lambda a, b: (a @ b / 2).sum(1) * 1.5),
    "gemm_sigmoid_lse": (dict(M=37, N=45, K=29), lambda: [_randn(37, 29), _randn(29, 45)],
                         lambda a, b: torch.logsumexp(torch.sigmoid(a @ b), dim=1)),
    "conv_instancenorm": (dict(N=2, C=3, H=7, W=9, K=5), lambda: [_randn(2, 3, 7, 9), _randn(5, 3, 3, 3)],
                          lambda x, w: F.instance_norm(F.conv2d(x, w, padding=1), eps=1e-5)),
    "conv_groupnorm_act_residual": (
        dict(N=2, C=3, H=7, W=9, G=2, CG=3),
        lambda: [_randn(2, 3, 7, 9), _randn(6, 3, 3, 3), _randn(2, 6, 7, 9), _randn(2, 3), _randn(2, 3, seed=1)],
        _conv_gn_act_res),
    "conv_groupnorm_act_residual_lse": (
        dict(N=2, C=3, H=7, W=9, G=2, CG=3),
        lambda: [_randn(2, 3, 7, 9), _randn(6, 3, 3, 3), _randn(2, 6, 7, 9), _randn(2, 3), _randn(2, 3, seed=1)],
        lambda *xs: torch.logsumexp(_conv_gn_act_res(*xs), dim=1)),
    "reverse_cumsum": (dict(N=7, D=45), lambda: [_randn(7, 45)], lambda x: x.flip(1).cumsum(1).flip(1)),
    "depthwise_separable": (dict(N=2, C=3, H=7, W=9, K=5),
                            lambda: [_randn(2, 3, 7, 9), _randn(3, 1, 3, 3), _randn(5, 3, 1, 1)],
                            lambda x, dw, pw: F.conv2d(F.conv2d(x, dw, padding=1, groups=3), pw)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_block_loads_as_one_operator_and_matches_torch_in_the_interpreter(name, tmp_path):
    dims, inputs, torch_fn = CASES[name]
    xs = inputs()
    op = tt.load(ref(name), db=tmp_path / "none.db", cpu="interpreter")
    assert is_split(op.operator)
    out = op(*xs)
    assert op.path(*xs) == "interpreter"
    torch.testing.assert_close(out, torch_fn(*xs), rtol=1e-4, atol=1e-4)
    # the CPU's torch path (the reference evaluator) agrees
    torch.testing.assert_close(tt.load(ref(name), db=tmp_path / "none.db")(*xs), out, rtol=1e-4, atol=1e-4)


def test_each_kernel_holds_what_fuses_and_stores_only_where_one_kernel_cannot_hold_two_anchors():
    # GEMM -> bias -> GELU -> softmax -> scale: the GEMM stores gelu(c + bias), its epilogue,
    # and one row kernel does the softmax and the scale
    parts = partition_of(resolve_operator(ref("matmul_gelu_softmax")).graph()).parts
    assert [p.writes for p in parts] == ["g", "y"]
    assert [s.name for s in parts[0].graph.stages] == ["c", "g"]
    assert {s.name for s in parts[1].graph.stages} == {"mx", "e", "s", "y"}
    assert "contraction together with other reductions" in parts[0].why and "split" not in parts[0].why
    # reverse cumsum: the [N] row total is stored, not the [N, D] cumsum
    parts = partition_of(resolve_operator(ref("reverse_cumsum")).graph()).parts
    assert [p.writes for p in parts] == ["total", "y"]
    # conv -> group norm -> ...: the statistics' kernels read the stored conv, and the last
    # kernel reads it too rather than computing the convolution again
    parts = partition_of(resolve_operator(ref("conv_groupnorm_act_residual")).graph()).parts
    assert [p.writes for p in parts] == ["y", "mean", "var", "z"]
    assert sum(is_anchor(s) for p in parts for s in p.graph.stages) == 3  # conv, total, sq: each once


def test_an_operator_one_kernel_holds_is_its_own_one_part():
    graph = resolve_operator("layernorm").graph()
    partition = partition_of(graph)
    assert partition.fused and partition.parts[0].graph is not None and partition.parts[0].name == "layernorm"
    assert not is_split(resolve_operator("layernorm"))


def test_parts_are_workloads_that_resolve_by_name():
    part = resolve_operator(ref("matmul_gelu_softmax") + ".part_g")
    assert part.name == "matmul_gelu_softmax.part_g"
    assert [t.name for t in part.graph().inputs] == ["a", "b", "bias"]
    with pytest.raises(tt.TiletuneError, match="has no kernel 'matmul_gelu_softmax.part_q'; its kernels are "
                                                "matmul_gelu_softmax.part_g, matmul_gelu_softmax.part_y"):
        resolve_operator(ref("matmul_gelu_softmax") + ".part_q").graph()


def test_autotune_tunes_the_kernels_under_one_budget_show_explains_the_cut_and_load_runs_them_tuned(tmp_path):
    db = tmp_path / "t.db"
    runner = CliRunner()
    shape = "M=200,N=300,K=96"
    result = runner.invoke(main, ["autotune", ref("matmul_gelu_softmax"), "--shape", shape, "--device", "sim-h100",
                                  "--trials", "8", "--batch-size", "4", "--db", str(db), "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "matmul_gelu_softmax.part_g[" in result.output and "matmul_gelu_softmax.part_y[" in result.output
    assert "operator   matmul_gelu_softmax on sim-h100" in result.output and "2 kernels" in result.output
    with TuningDB(db, readonly=True) as database:
        workloads = {w.op_name: w for w in database.workloads()}
        assert set(workloads) == {"matmul_gelu_softmax.part_g", "matmul_gelu_softmax.part_y"}
        trials = sum(len(list(database.trials(w.key))) for w in workloads.values())
    assert trials == 8  # one budget for the operator, not --trials per kernel

    result = runner.invoke(main, ["show", ref("matmul_gelu_softmax"), "--shape", shape, "--db", str(db), "--source"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "matmul_gelu_softmax runs as 2 kernels" in out
    assert "g is stored for y, whose kernel cannot also compute it" in out
    assert out.count("@triton.jit") == 2 and "kernel 2 of 2: matmul_gelu_softmax.part_y" in out

    op = tt.load(ref("matmul_gelu_softmax"), db=db, cpu="interpreter")
    xs = [_randn(200, 96), _randn(96, 300), _randn(300)]
    selections = op.selections(*xs)
    assert [s.origin for s in selections.values()] == ["tuned", "tuned"]
    with pytest.raises(tt.UsageError, match="runs as 2 kernels, each with its own config"):
        op.selection(*xs)
    torch.testing.assert_close(op(*xs), _matmul_gelu_softmax(*xs), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "torch.compile"])
def test_a_split_operator_trains(compiled, tmp_path):
    op = tt.load(ref("matmul_gelu_softmax"), db=tmp_path / "none.db")
    xs = [x.requires_grad_(True) for x in (_randn(13, 7), _randn(7, 11), _randn(11))]
    ys = [x.detach().clone().requires_grad_(True) for x in xs]
    dy = _randn(13, 11, seed=3)
    f = torch.compile(lambda a, b, bias: op(a, b, bias), fullgraph=True) if compiled else op
    f(*xs).backward(dy)
    _matmul_gelu_softmax(*ys).backward(dy)
    for x, y in zip(xs, ys):
        torch.testing.assert_close(x.grad, y.grad, rtol=1e-4, atol=1e-5)


def test_conv_groupnorm_block_tunes_on_the_simulated_h100_and_runs_its_tuned_kernels(tmp_path):
    db = tmp_path / "t.db"
    dims, inputs, torch_fn = CASES["conv_groupnorm_act_residual"]
    report = tt.autotune(ref("conv_groupnorm_act_residual"), dims, device="sim-h100", trials=8, batch_size=2,
                         db=db, workers=1)
    assert [r.spec.op.rsplit(":", 1)[1] for r in report] == [
        "conv_groupnorm_act_residual.part_y", "conv_groupnorm_act_residual.part_mean",
        "conv_groupnorm_act_residual.part_var", "conv_groupnorm_act_residual.part_z"]
    assert all(r.best_latency_us is not None for r in report)
    op = tt.load(ref("conv_groupnorm_act_residual"), db=db, cpu="interpreter")
    xs = inputs()
    assert {s.origin for s in op.selections(*xs).values()} == {"tuned"}
    torch.testing.assert_close(op(*xs), torch_fn(*xs), rtol=1e-4, atol=1e-4)


def test_untuned_kernels_are_named_once_each_with_the_command_that_tunes_the_whole_operator(tmp_path):
    op = tt.load(ref("gemm_div_sum_scale"), db=tmp_path / "none.db", cpu="interpreter")
    xs = [_randn(9, 5), _randn(5, 7)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        op(*xs)
        op(*xs)  # the call key is cached: no second warning
    notes = [str(w.message) for w in caught]
    assert len(notes) == 2 and all(w.filename == __file__ for w in caught)
    assert "gemm_div_sum_scale.part_d was not tuned at M=9, N=7, K=5" in notes[0]
    assert f"tiletune autotune {BLOCKS}:gemm_div_sum_scale --shape M=9,N=7,K=5" in notes[0]


def test_a_workloads_file_naming_a_split_operator_tunes_its_kernels(tmp_path):
    import json

    db = tmp_path / "t.db"
    workloads = tmp_path / "w.json"
    workloads.write_text(json.dumps([{"op": ref("gemm_div_sum_scale"), "shape": "M=40,N=33,K=17"},
                                     {"op": "softmax", "shape": "N=40,D=33"}]))
    result = CliRunner().invoke(main, ["autotune", "--workloads", str(workloads), "--device", "sim-h100",
                                       "--trials", "6", "--batch-size", "2", "--db", str(db), "--workers", "1"])
    assert result.exit_code == 0, result.output
    with TuningDB(db, readonly=True) as database:
        assert {w.op_name for w in database.workloads()} == {
            "gemm_div_sum_scale.part_d", "gemm_div_sum_scale.part_y", "softmax"}
