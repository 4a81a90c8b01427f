"""A loaded operator trains: its derived backward is registered through
torch.library.register_autograd (eager and torch.compile), `tiletune autotune --backward` tunes
the backward kernels as workloads of their own, and load runs them at their tuned configs."""
from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

import tiletune as tt
from tiletune.cli import main
from tiletune.errors import UsageError
from tiletune.tuning_db import TuningDB


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "not tuned: using the default config"
        yield


def _leaves(*shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g).requires_grad_(True) for s in shapes]


def _twins(xs):
    return [x.detach().clone().requires_grad_(True) for x in xs]


@pytest.mark.parametrize("cpu", ["torch", "interpreter"])
def test_eager_backward_matches_torch(cpu, tmp_path):
    op = tt.load("matmul_bias_gelu", db=tmp_path / "none.db", cpu=cpu)
    xs = _leaves((13, 7), (7, 11), (11,))
    ys = _twins(xs)
    dy = torch.randn(13, 11)
    op(*xs).backward(dy)
    F.gelu(ys[0] @ ys[1] + ys[2]).backward(dy)
    for x, y in zip(xs, ys):
        torch.testing.assert_close(x.grad, y.grad, rtol=1e-4, atol=1e-5)


def test_only_the_inputs_that_require_grad_are_computed(tmp_path):
    op = tt.load("layernorm", db=tmp_path / "none.db")
    x, w, b = _leaves((3, 19), (19,), (19,))
    w.requires_grad_(False)
    op(x, w, b).sum().backward()
    assert w.grad is None and x.grad is not None and b.grad is not None
    torch.testing.assert_close(b.grad, torch.full((19,), 3.0))


def test_backward_under_torch_compile(tmp_path):
    op = tt.load("layernorm", db=tmp_path / "none.db")
    xs = _leaves((5, 19), (19,), (19,))
    ys = _twins(xs)
    f = torch.compile(lambda x, w, b: op(x, w, b).square().sum(), fullgraph=True)
    f(*xs).backward()
    F.layer_norm(ys[0], (19,), ys[1], ys[2], eps=1e-5).square().sum().backward()
    for x, y in zip(xs, ys):
        torch.testing.assert_close(x.grad, y.grad, rtol=1e-4, atol=1e-4)


def test_an_operator_without_a_gradient_still_refuses_grad_mode(tmp_path):
    op = tt.load("argmax4d", db=tmp_path / "none.db")
    assert "int64" in op.no_backward
    with pytest.raises(UsageError, match="argmax4d: an input requires grad, and this operator has no backward"):
        op(torch.randn(1, 1, 2, 3, requires_grad=True))


def test_mlp_block_trains_20_steps_like_torch(tmp_path):
    # y = gelu(x @ w1 + b1) @ w2, mean-squared error to a target, plain SGD
    linear_gelu = tt.load("matmul_bias_gelu", db=tmp_path / "none.db")
    linear = tt.load("matmul", db=tmp_path / "none.db")
    g = torch.Generator().manual_seed(1)
    x, target = torch.randn(33, 9, generator=g), torch.randn(33, 5, generator=g)
    params = [torch.randn(9, 17, generator=g) * 0.3, torch.zeros(17), torch.randn(17, 5, generator=g) * 0.3]
    ours = [p.clone().requires_grad_(True) for p in params]
    theirs = [p.clone().requires_grad_(True) for p in params]

    def step(ps, forward):
        loss = ((forward(ps) - target) ** 2).mean()
        loss.backward()
        with torch.no_grad():
            for p in ps:
                p -= 0.1 * p.grad
                p.grad = None
        return float(loss)

    losses_ours = [step(ours, lambda p: linear(linear_gelu(x, p[0], p[1]), p[2])) for _ in range(20)]
    losses_torch = [step(theirs, lambda p: F.gelu(x @ p[0] + p[1]) @ p[2]) for _ in range(20)]
    assert losses_ours[-1] < 0.8 * losses_ours[0]  # it learns
    torch.testing.assert_close(torch.tensor(losses_ours), torch.tensor(losses_torch), rtol=1e-4, atol=1e-5)


def test_autotune_backward_tunes_each_step_and_load_runs_them_tuned(tmp_path):
    db = tmp_path / "t.db"
    result = CliRunner().invoke(main, ["autotune", "matmul", "--shape", "M=19,N=13,K=11", "--dtype", "float32",
                                       "--device", "sim-h100", "--trials", "2", "--batch-size", "2",
                                       "--db", str(db), "--backward"])
    assert result.exit_code == 0, result.output
    for name in ("matmul", "matmul.grad_a", "matmul.grad_b"):
        assert f"workload   {name}[M=19,N=13,K=11]:float32" in result.output
    with TuningDB(db, readonly=True) as tdb:
        names = {w.op_name for w in tdb.workloads()}
    assert {"matmul.grad_a", "matmul.grad_b"} <= names
    op = tt.load("matmul", db=db, cpu="interpreter")
    dy, b = torch.randn(19, 13), torch.randn(11, 13)
    assert op.steps["matmul.grad_a"].selection(dy, b).origin == "tuned"
    a, bb = _leaves((19, 11), (11, 13))
    op(a, bb).backward(dy)
    torch.testing.assert_close(a.grad, dy @ bb.detach().T, rtol=1e-4, atol=1e-5)


def test_backward_flag_is_refused_for_an_operator_without_a_gradient(tmp_path):
    result = CliRunner().invoke(main, ["autotune", "argmax4d", "--shape", "A=1,B=1,C=2,D=3", "--device", "sim-h100",
                                       "--db", str(tmp_path / "t.db"), "--backward"])
    assert result.exit_code != 0
    assert "argmax4d: the output 'y' is int64 (an argmax)" in result.output
