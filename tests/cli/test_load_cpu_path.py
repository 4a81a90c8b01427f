"""`tiletune.load` on CPU tensors by default (vectorised torch ops, no kernel), and what any call
refuses or propagates: tensors past 32-bit offsets, grad, meta tensors, int tensors for float math.
"""
from __future__ import annotations

import warnings

import pytest
import torch

import tiletune as tt
from tiletune import tensorexpr as te
from tiletune.errors import UsageError
from tiletune.kernels.offsets import OFFSET_LIMIT

pytestmark = pytest.mark.filterwarnings("ignore:.*not tuned:UserWarning")


def _forbid(*_args: object, **_kwargs: object) -> None:
    raise AssertionError("the CPU torch path lowered or launched a kernel")


@pytest.fixture
def no_kernels(monkeypatch):
    """Fail any lowering or launch: the torch path must need neither."""
    from tiletune.kernels import runtime
    from tiletune.kernels.task import Task

    monkeypatch.delenv("TILETUNE_CPU", raising=False)
    for name in ("launcher", "load_module"):
        monkeypatch.setattr(runtime, name, _forbid)
    monkeypatch.setattr(Task, "source", _forbid)


REFERENCES = {
    "rmsnorm": (lambda x, w: x * torch.rsqrt((x * x).mean(-1, keepdim=True) + 1e-6) * w, [(37, 70), (70,)]),
    "softmax": (lambda x: torch.softmax(x, -1), [(37, 70)]),
    "matmul": (lambda a, b: a @ b, [(67, 93), (93, 45)]),
    "layernorm": (lambda x, w, b: torch.nn.functional.layer_norm(x, x.shape[-1:], w, b, eps=1e-5),
                  [(37, 70), (70,), (70,)]),
}
TOLERANCE = {torch.float32: 1e-4, torch.float16: 1e-2, torch.float64: 1e-7}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64], ids=str)
@pytest.mark.parametrize("name", REFERENCES)
def test_cpu_tensors_run_the_torch_path_by_default_and_match_torch(name, dtype, tmp_path, no_kernels):
    reference, shapes = REFERENCES[name]
    gen = torch.Generator().manual_seed(0)
    inputs = [torch.randn(*s, generator=gen, dtype=torch.float64).to(dtype) for s in shapes]
    op = tt.load(name, db=tmp_path / "none.db")
    out = op(*inputs)
    assert op.path(*inputs) == "torch" and out.dtype == dtype
    want = reference(*(x.double() for x in inputs)).to(dtype)
    tol = TOLERANCE[dtype]
    torch.testing.assert_close(out.double(), want.double(), rtol=tol, atol=tol)


def test_the_interpreter_runs_on_request_and_by_environment(tmp_path, monkeypatch):
    x = torch.randn(5, 19)
    assert tt.load("softmax", db=tmp_path / "none.db", cpu="interpreter").path(x) == "interpreter"
    monkeypatch.setenv("TILETUNE_CPU", "interpreter")
    op = tt.load("softmax", db=tmp_path / "none.db")
    torch.testing.assert_close(op(x), torch.softmax(x, -1))
    assert op.path(x) == "interpreter" and op.selection(x).origin == "default"
    monkeypatch.setenv("TILETUNE_CPU", "gpu")
    with pytest.raises(UsageError, match=r"\$TILETUNE_CPU must be one of torch, interpreter, got 'gpu'"):
        tt.load("softmax", db=tmp_path / "none.db")
    with pytest.raises(UsageError, match="cpu must be one of torch, interpreter, got 'fast'"):
        tt.load("softmax", db=tmp_path / "none.db", cpu="fast")


def test_torch_op_and_torch_compile_take_the_torch_path(tmp_path, no_kernels):
    loaded = tt.load("softmax", db=tmp_path / "none.db")
    x = torch.randn(37, 70)
    torch.testing.assert_close(loaded.torch_op([x]), torch.softmax(x, -1))
    compiled = torch.compile(lambda x: loaded.torch_op([x * 2.0]) + 1.0, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), torch.softmax(x * 2.0, -1) + 1.0)


# --- 32-bit offsets ----------------------------------------------------------------------------


def test_a_view_whose_offsets_pass_int32_is_refused_by_the_kernel_and_right_on_the_torch_path(tmp_path):
    """An int8 view of 4x64 elements with a row stride of 2**30 (virtual memory only: untouched)."""
    view = torch.empty((4, 2**30), dtype=torch.int8)[:, :64]
    view.fill_(3)
    kernel = tt.load("add", db=tmp_path / "none.db", cpu="interpreter")
    with pytest.raises(UsageError, match=rf"add: tensor 'x' \(shape \(4, 64\), strides \(1073741824, 1\)\) has 256 "
                                         rf"elements and its last element at offset 3221225535, past {OFFSET_LIMIT}.*"
                                         "64-bit offsets are not generated yet"):
        kernel(view, view)
    small = torch.full((4, 64), 3, dtype=torch.int8)
    assert torch.equal(kernel(small, small), small + small)  # same shape, other strides: runs
    assert torch.equal(tt.load("add", db=tmp_path / "none.db")(view, view), small + small)


def test_an_output_of_more_than_2_to_the_31_elements_is_refused_by_the_kernel(tmp_path):
    x = torch.zeros(1, 1, dtype=torch.int8).expand(2**16, 2**15 + 1)  # stride 0: nothing allocated
    with pytest.raises(UsageError, match=r"add: tensor 'x' .* has 2147549184 elements"):
        tt.load("add", db=tmp_path / "none.db", cpu="interpreter")(x, x)


# --- dims only inside an extent ----------------------------------------------------------------


@tt.operator
def halves(S, H, D2):
    x = te.placeholder((S, H, D2 * 2), "float32", name="x")
    return [x], te.compute((S, H, D2), lambda s, h, d: x[s, h, d] + x[s, h, d + D2], name="y")


@pytest.mark.parametrize("cpu", ["torch", "interpreter"])
def test_an_operator_with_a_dim_only_inside_an_extent_can_be_called(cpu, tmp_path):
    x = torch.randn(3, 5, 14)
    out = tt.load(halves, db=tmp_path / "none.db", cpu=cpu)(x)
    torch.testing.assert_close(out, x[..., :7] + x[..., 7:])


# --- dtypes, grad, meta ------------------------------------------------------------------------


def test_float64_runs_in_the_interpreter_within_the_verification_tolerance(tmp_path):
    from tiletune.kernels.verify import compare

    x, w = torch.randn(5, 19, dtype=torch.float64), torch.randn(19, dtype=torch.float64)
    out = tt.load("rmsnorm", db=tmp_path / "none.db", cpu="interpreter")(x, w)
    assert out.dtype == torch.float64
    verdict = compare(out, REFERENCES["rmsnorm"][0](x, w), "float64", reduction_length=19)
    assert verdict.ok, verdict.reason


def test_int_inputs_to_a_float_operator_tell_the_caller_what_to_pass(tmp_path):
    op = tt.load("rmsnorm", db=tmp_path / "none.db")
    with pytest.raises(UsageError, match="rmsnorm computes in floating point and cannot take int32 inputs; pass "
                                         r"float16, bfloat16, float32 or float64 tensors \(convert with .float\(\)\)"):
        op(torch.ones(3, 4, dtype=torch.int32), torch.ones(4, dtype=torch.int32))


@pytest.mark.parametrize("cpu", ["torch", "interpreter"])
def test_inputs_that_require_grad_are_refused_in_grad_mode_without_a_backward(cpu, tmp_path):
    op = tt.load("argmax4d", db=tmp_path / "none.db", cpu=cpu)
    x = torch.randn(1, 1, 5, 19, requires_grad=True)
    with torch.no_grad():
        torch.testing.assert_close(op(x), torch.argmax(x, -1))
    with pytest.raises(UsageError, match=r"argmax4d: an input requires grad, and this operator has no backward "
                                         r"\(argmax4d: the output 'y' is int64 \(an argmax\).*; call it under torch.no_grad"):
        op(x)  # the key is cached from the no-grad call: the check is on the cached path too
    torch.testing.assert_close(op(x.detach()), torch.argmax(x.detach(), -1))


def test_meta_inputs_give_an_empty_meta_output_of_the_right_shape(tmp_path):
    op = tt.load("matmul", db=tmp_path / "none.db")
    out = op(torch.empty(9, 5, device="meta", dtype=torch.float16), torch.empty(5, 7, device="meta", dtype=torch.float16))
    assert out.device.type == "meta" and out.shape == (9, 7) and out.dtype == torch.float16
    assert op.path(torch.empty(2, 3, device="meta"), torch.empty(3, 4, device="meta")) == "meta"


def test_the_not_tuned_warning_names_the_dtype_and_the_command_that_tunes_it(tmp_path):
    op = tt.load("rmsnorm", db=tmp_path / "none.db", cpu="interpreter")
    x, w = torch.randn(6, 20, dtype=torch.float16), torch.randn(20, dtype=torch.float16)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        op(x, w)
    (message,) = [str(w.message) for w in caught if "not tuned" in str(w.message)]
    assert "not tuned at N=6, D=20 in float16" in message
    assert "tiletune autotune rmsnorm --shape N=6,D=20 --dtype float16" in message


@tt.operator
def overflowing(N):
    x = te.placeholder((N,), "float32", name="x")
    return [x], te.compute((N,), lambda i: te.exp(x[i] * 1000.0) / x[i], name="y")


def test_numpy_warnings_of_the_interpreter_do_not_reach_the_caller(tmp_path):
    """Masked-off lanes overflow and divide by zero in the interpreter (numpy RuntimeWarnings)."""
    from tiletune.kernels.task import Task, TaskSpec
    from tiletune.kernels.verify import check

    task = Task(TaskSpec.make("overflowing", {"N": 37}), overflowing)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert check(task.graph, task.source(task.space.default(), for_interpreter=True), task.dims).ok
        tt.load(overflowing, db=tmp_path / "none.db", cpu="interpreter")(torch.randn(37))
    assert [str(w.message) for w in caught if w.category is RuntimeWarning] == []
