"""Derived backward graphs against torch.autograd: gradcheck at float64 on the reference
evaluator for one operator of every built-in family, and the backward kernels run in Triton's
interpreter at odd shapes against torch's own gradients."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.autograd.gradcheck import GradcheckError

from tiletune import tensorexpr as te
from tiletune.errors import GradientError
from tiletune.kernels import runtime
from tiletune.kernels.backward import backward_of, step_operators
from tiletune.kernels.library import builtin, operator_ref, resolve_operator
from tiletune.kernels.task import Task, TaskSpec
from tiletune.tensorexpr.gradient import gradient
from tiletune.tensorexpr.reference import evaluate, torch_dtype


def run_steps(steps, values, run):
    values = dict(values)
    for step in steps:
        values[step.writes] = run(step, [values[r] for r in step.reads])
    return values


class _Reference(torch.autograd.Function):
    """The operator on the reference evaluator, its backward the derived graphs'."""

    @staticmethod
    def forward(ctx, graph, dims, *inputs):
        out = evaluate(graph, inputs, dims)
        ctx.save_for_backward(*inputs, out)
        ctx.graph, ctx.dims = graph, dims
        return out

    @staticmethod
    def backward(ctx, dy):
        *inputs, out = ctx.saved_tensors
        graph = ctx.graph
        backward = gradient(graph)
        values = {t.name: x for t, x in zip(graph.inputs, inputs)}
        values[graph.output.name] = out
        values[backward.output_grad] = dy.contiguous()
        values = run_steps(backward.all_steps(), values, lambda s, xs: evaluate(s.graph, xs, ctx.dims))
        grads = [values[backward.grads[t.name][-1].writes] if t.name in backward.grads else None
                 for t in graph.inputs]
        return (None, None, *grads)


# One operator of every family (of the library's): name, dims, and a low bound for inputs
# that must stay positive (a variance, a log's argument).
FAMILY_CASES = [
    ("contractions", "matmul_bias_gelu", dict(M=3, N=5, K=4)),
    ("contractions", "bmm", dict(B=2, M=3, N=5, K=4)),
    ("convolution", "conv2d", dict(N=1, C=2, H=5, W=4, K=3, R=2, S=3)),
    ("attention", "attention", dict(B=1, H=2, S=3, D=4)),
    ("elementwise", "broadcast_mul", dict(N=2, C=3, H=2, W=3)),
    ("activations", "silu", dict(N=3, D=5)),
    ("activations", "gelu", dict(N=3, D=5)),
    ("reductions", "mean4d", dict(A=2, B=3, C=2, D=5)),
    ("reductions", "amax4d", dict(A=2, B=3, C=2, D=5)),
    ("normalizations", "layernorm", dict(N=3, D=7)),
    ("normalizations", "rmsnorm", dict(N=3, D=7)),
    ("normalizations", "softmax", dict(N=3, D=7)),
    ("windows", "avg_pool2d", dict(N=1, C=2, H=5, W=7)),
    ("windows", "max_pool2d", dict(N=1, C=2, H=5, W=7)),
    ("scans", "cumsum", dict(N=3, D=7)),
    ("losses", "mse_loss", dict(N=3, D=7)),
]


def _inputs(graph, dims, generator, dtype=torch.float64):
    xs = []
    for t in graph.inputs:
        shape = graph.shape_of(t, dims)
        if not t.dtype.startswith("float"):
            xs.append(torch.randint(0, shape[-1] if shape else 2, shape, generator=generator))
        else:
            xs.append(torch.randn(shape, generator=generator, dtype=dtype))
    return xs


@pytest.mark.parametrize("family,name,dims", FAMILY_CASES, ids=[c[1] for c in FAMILY_CASES])
def test_gradcheck_at_float64_on_the_reference(family, name, dims):
    op = builtin(name)
    assert any(name in mod.__all__ for fam, mod in __import__(
        "tiletune.kernels.library", fromlist=["FAMILIES"]).FAMILIES.items() if fam == family)
    graph = op.graph("float64")
    xs = [x.requires_grad_(True) if x.is_floating_point() else x
          for x in _inputs(graph, dims, torch.Generator().manual_seed(3))]
    assert torch.autograd.gradcheck(lambda *a: _Reference.apply(graph, dims, *a), xs, eps=1e-6, atol=1e-5)


def test_a_wrong_derivative_fails_gradcheck():
    # the check can fail: a backward that doubles the gradient is caught
    graph = builtin("silu").graph("float64")
    dims = dict(N=2, D=3)

    class Doubled(_Reference):
        @staticmethod
        def backward(ctx, dy):
            return _Reference.backward(ctx, 2 * dy)

    x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    with pytest.raises(GradcheckError):
        torch.autograd.gradcheck(lambda a: Doubled.apply(graph, dims, a), [x], eps=1e-6, atol=1e-5)


def test_cross_entropy_gradient_matches_torch_with_ignored_targets():
    # (gradcheck does not apply: the operator rounds its sum through fp32 even at float64)
    graph = builtin("cross_entropy").graph("float64")
    x = torch.randn(4, 7, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([1, 6, -100, 0])
    _Reference.apply(graph, dict(N=4, C=7), x, target).backward()
    x2 = x.detach().clone().requires_grad_(True)
    F.cross_entropy(x2, target).backward()
    torch.testing.assert_close(x.grad, x2.grad)


def test_refusals_name_the_stage():
    with pytest.raises(GradientError, match=r"argmax4d: the output 'y' is int64 \(an argmax\)"):
        gradient(builtin("argmax4d").graph("float32"))
    with pytest.raises(GradientError, match="stage 'y' is a cummax"):
        gradient(builtin("cummax").graph("float32"))

    @te.operator
    def rounded(N):
        x = te.placeholder((N,), "float32", name="x")
        return [x], te.compute((N,), lambda i: x[i].astype("int32").astype("float32"), name="r")

    with pytest.raises(GradientError, match="stage 'r' casts a floating value to int32"):
        gradient(rounded.graph())


def test_integer_inputs_have_no_gradient():
    backward = gradient(builtin("cross_entropy").graph("float32"))
    assert set(backward.grads) == {"x"}
    with pytest.raises(GradientError, match="no gradient for input 'target': it is int64"):
        backward.steps(["target"])


def test_contraction_adjoints_are_contractions_with_swapped_indices():
    backward = gradient(builtin("matmul").graph("float32"))
    (step,) = backward.grads["a"]
    assert step.reads == ("grad_c", "b")  # dA = dC @ B^T: no forward recompute
    reduce = step.graph.output.reduction
    assert reduce is not None and reduce.axes[0].extent == te.var("N")


def test_step_names_resolve_back_to_their_operator():
    op = builtin("layernorm")
    for step, step_op in step_operators(op, "float32"):
        assert operator_ref(step_op) == step.name
        assert resolve_operator(step.name) is step_op


# --- the backward kernels in Triton's interpreter, at odd shapes, against torch --------------


def _interpreted(step, xs, dims, dtype, op):
    task = Task(TaskSpec.make(step.name, dims, dtype), op)
    source = task.source(task.space.default(), for_interpreter=True)
    graph = task.graph
    out = torch.empty(graph.shape_of(graph.output, dims), dtype=torch_dtype(graph.output.dtype))
    with np.errstate(all="ignore"):
        runtime.launcher(source, False)(*[x.contiguous() for x in xs], out, *[dims[n] for n in graph.dim_names])
    return out


def _torch_layernorm(x, w, b):
    return F.layer_norm(x, x.shape[-1:], w, b, eps=1e-5)


TORCH_CASES = [
    ("matmul", dict(M=13, N=11, K=7), lambda a, b: a @ b),
    ("matmul_bias_gelu", dict(M=13, N=11, K=7), lambda a, b, bias: F.gelu(a @ b + bias)),
    ("broadcast_add", dict(N=2, C=3, H=5, W=7), lambda x, b: x + b),
    ("gelu", dict(N=5, D=19), F.gelu),
    ("softmax", dict(N=3, D=19), lambda x: torch.softmax(x, -1)),
    ("layernorm", dict(N=3, D=19), _torch_layernorm),
    ("sum4d", dict(A=2, B=3, C=5, D=7), lambda x: x.sum(3)),
    ("cumsum", dict(N=3, D=19), lambda x: torch.cumsum(x, -1)),
    ("avg_pool2d", dict(N=1, C=3, H=7, W=9), lambda x: F.avg_pool2d(x, 3, 2, 1)),
    ("mse_loss", dict(N=3, D=19), F.mse_loss),
]


@pytest.mark.parametrize("name,dims,reference", TORCH_CASES, ids=[c[0] for c in TORCH_CASES])
def test_interpreted_backward_kernels_match_torch(name, dims, reference):
    op = builtin(name)
    graph = op.graph("float32")
    xs = _inputs(graph, dims, torch.Generator().manual_seed(5), torch.float32)
    leaves = [x.clone().requires_grad_(True) for x in xs]
    out = reference(*leaves)
    dy = torch.randn_like(out)
    out.backward(dy)
    backward = backward_of(graph)
    values = {t.name: x for t, x in zip(graph.inputs, xs)}
    values[graph.output.name] = out.detach()
    values[backward.output_grad] = dy
    ops = {step.name: step_op for step, step_op in step_operators(op, "float32")}
    values = run_steps(backward.all_steps(), values,
                       lambda s, inputs: _interpreted(s, inputs, dims, "float32", ops[s.name]))
    for t, leaf in zip(graph.inputs, leaves):
        got = values[backward.grads[t.name][-1].writes]
        torch.testing.assert_close(got, leaf.grad, rtol=1e-4, atol=1e-5, msg=f"{name}: gradient of {t.name}")
