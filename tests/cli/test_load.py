"""`tiletune.load`: a tuned operator as a library call on CPU tensors, its kernel run in
Triton's interpreter (`cpu="interpreter"`; the default CPU path is tested in test_load_cpu_path.py).

Shapes are small and not multiples of any tile, so every kernel runs its masked edges.
"""
from __future__ import annotations

import json
import shutil
import sqlite3
import warnings
from pathlib import Path

import pytest
import torch

import tiletune as tt
from tiletune.errors import DSLError, TiletuneError, UsageError
from tiletune.tuning_db import TuningDB

pytestmark = pytest.mark.filterwarnings("ignore:.*not tuned:UserWarning")

TUNED_DIMS = {"M": 37, "N": 45, "K": 70}


@pytest.fixture(autouse=True)
def run_the_kernel_in_the_interpreter(monkeypatch):
    monkeypatch.setenv("TILETUNE_CPU", "interpreter")


def _matmul(a, b):
    return a @ b


def _matmul_bias_relu(a, b, bias):
    return torch.relu(a @ b + bias)


def _softmax(x):
    return torch.softmax(x, dim=-1)


def _layernorm(x, w, b):
    return torch.nn.functional.layer_norm(x, x.shape[-1:], w, b, eps=1e-5)


def _rmsnorm(x, w):
    return x * torch.rsqrt((x * x).mean(dim=-1, keepdim=True) + 1e-6) * w


CASES = {
    "matmul": (_matmul, [(67, 93), (93, 45)]),
    "matmul_bias_relu": (_matmul_bias_relu, [(67, 93), (93, 45), (45,)]),
    "softmax": (_softmax, [(37, 70)]),
    "layernorm": (_layernorm, [(37, 70), (70,), (70,)]),
}
TOLERANCE = {torch.float32: 1e-4, torch.float16: 1e-2}


def check_against_torch(op, reference, inputs: list[torch.Tensor]) -> None:
    """`op(*inputs)` equals the torch reference computed in fp32 and stored in the inputs' dtype."""
    out = op(*inputs)
    dtype = inputs[0].dtype
    expected = reference(*(x.float() for x in inputs)).to(dtype)
    assert out.dtype == dtype and out.shape == expected.shape
    tol = TOLERANCE[dtype]
    torch.testing.assert_close(out.float(), expected.float(), rtol=tol, atol=tol)


def random_inputs(shapes, dtype=torch.float32, seed=0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=gen).to(dtype) for shape in shapes]


def not_tuned_warnings(record) -> list[str]:
    return [str(w.message) for w in record if "not tuned" in str(w.message)]


@pytest.fixture(scope="module")
def tuned_db(tmp_path_factory, private_kernel_cache) -> Path:
    """matmul tuned on the simulated H100 at M=37, N=45, K=70 in float32; copy before writing."""
    db = tmp_path_factory.mktemp("load") / "tuned.db"
    report = tt.autotune("matmul", TUNED_DIMS, dtype="float32", device="sim-h100", trials=4, db=db)
    assert report.best_config is not None
    return db


# --- results match torch ---------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["float32", "float16"])
@pytest.mark.parametrize("name", CASES)
def test_builtin_matches_torch_at_shapes_off_the_tiles(name, dtype, tmp_path):
    reference, shapes = CASES[name]
    op = tt.load(name, db=tmp_path / "absent.db")
    check_against_torch(op, reference, random_inputs(shapes, dtype))


def test_operator_from_a_users_file_matches_torch(rmsnorm_file, tmp_path):
    op = tt.load(f"{rmsnorm_file}:rmsnorm", db=tmp_path / "absent.db")
    check_against_torch(op, _rmsnorm, random_inputs([(37, 70), (70,)]))
    check_against_torch(op, _rmsnorm, random_inputs([(1, 3), (3,)]))


def test_one_loaded_operator_serves_several_shapes(tmp_path):
    op = tt.load("softmax", db=tmp_path / "absent.db")
    for shape in [(37, 70), (5, 3), (37, 70), (1, 129)]:
        check_against_torch(op, _softmax, random_inputs([shape]))


# --- untuned: the default config, said once ---------------------------------------------------


@pytest.fixture(params=["missing", "empty"])
def untuned_db(request, tmp_path) -> Path:
    path = tmp_path / "tiletune.db"
    if request.param == "empty":
        TuningDB(path).close()  # a tiletune DB with no workloads
    return path


def test_untuned_call_warns_once_per_key_and_still_computes(untuned_db):
    op = tt.load("layernorm", db=untuned_db)
    inputs = random_inputs([(37, 70), (70,), (70,)])
    with warnings.catch_warnings(record=True) as first:
        warnings.simplefilter("always")
        check_against_torch(op, _layernorm, inputs)
    (message,) = not_tuned_warnings(first)
    assert "layernorm" in message and "N=37, D=70" in message and "default config" in message
    with warnings.catch_warnings(record=True) as again:
        warnings.simplefilter("always")
        check_against_torch(op, _layernorm, inputs)
        assert op.selection(*inputs).origin == "default"
    assert again == []
    other = random_inputs([(5, 70), (70,), (70,)])
    with warnings.catch_warnings(record=True) as new_key:
        warnings.simplefilter("always")
        check_against_torch(op, _layernorm, other)
    assert len(not_tuned_warnings(new_key)) == 1


def test_untuned_warning_of_a_users_operator_suggests_a_command_that_tunes_it(rmsnorm_file, tmp_path):
    op = tt.load(f"{rmsnorm_file}:rmsnorm", db=tmp_path / "absent.db")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        op(*random_inputs([(3, 5), (5,)]))
    (message,) = not_tuned_warnings(record)
    assert f"tiletune autotune {rmsnorm_file}:rmsnorm --shape N=3,D=5" in message


# --- tuned, nearest, and configs the DB should not have ---------------------------------------


@pytest.mark.slow
def test_selection_is_tuned_at_the_tuned_shape_and_nearest_elsewhere(tuned_db):
    op = tt.load("matmul", db=tuned_db)
    at_tuned = random_inputs([(37, 70), (70, 45)])
    with TuningDB(tuned_db, readonly=True) as db:
        (workload,) = db.workloads()
        (best,) = db.best_per_device(workload.key).values()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        selection = op.selection(*at_tuned)
        check_against_torch(op, _matmul, at_tuned)
    assert record == []
    assert selection.origin == "tuned"
    assert selection.config.as_dict() == best.config

    # M=40 tiles like M=37 (BLOCK_M up to 64), so the tuned best is legal there whatever it is
    elsewhere = random_inputs([(40, 70), (70, 45)])
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        nearest = op.selection(*elsewhere)
        check_against_torch(op, _matmul, elsewhere)
    assert nearest.origin == "nearest"
    assert nearest.config == selection.config
    assert len(record) == 1 and "M=37, N=45, K=70" in str(record[0].message)


def test_a_db_record_with_an_illegal_config_is_skipped(tuned_db, tmp_path):
    db = tmp_path / "tampered.db"
    shutil.copy(tuned_db, db)
    legal = tt.load("matmul", db=tuned_db).selection(*random_inputs([(37, 70), (70, 45)])).config
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    best = dict(conn.execute("SELECT * FROM records WHERE status = 'ok' ORDER BY latency_us LIMIT 1").fetchone())
    config = {**json.loads(best["config"]), "BLOCK_M": 3}
    text = json.dumps(config, sort_keys=True, separators=(",", ":"))
    del best["id"]
    row = {**best, "config": text, "config_key": text, "latency_us": best["latency_us"] / 100,
           "latency_min_us": best["latency_us"] / 100}
    with conn:
        conn.execute(f"INSERT INTO records ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})", list(row.values()))
    conn.close()
    with TuningDB(db, readonly=True) as opened:
        (workload,) = opened.workloads()
        (stored_best,) = opened.best_per_device(workload.key).values()
    assert stored_best.config == config  # readable, and the fastest record in the DB

    op = tt.load("matmul", db=db)
    inputs = random_inputs([(37, 70), (70, 45)])
    selection = op.selection(*inputs)
    assert selection.config.as_dict()["BLOCK_M"] != 3
    assert (selection.origin, selection.config) == ("tuned", legal)
    check_against_torch(op, _matmul, inputs)


# --- calls the operator cannot take -----------------------------------------------------------


def test_inputs_of_different_dtypes_name_the_odd_input(tmp_path):
    op = tt.load("matmul", db=tmp_path / "absent.db")
    a, b = random_inputs([(5, 6), (6, 7)])
    with pytest.raises(DSLError, match=r"input 'b' has dtype float16, expected float32"):
        op(a, b.half())


def test_inputs_in_a_dtype_the_operator_does_not_declare_name_the_input(rmsnorm_file, tmp_path):
    op = tt.load(f"{rmsnorm_file}:rmsnorm", db=tmp_path / "absent.db")
    x, w = random_inputs([(5, 6), (6,)], torch.float16)
    with pytest.raises(DSLError, match=r"rmsnorm: input 'x' has dtype float16, expected float32"):
        op(x, w)


@pytest.mark.parametrize("shapes, message", [
    ([(5, 6)], r"matmul takes 2 inputs \(a, b\), got 1"),
    ([(5, 6), (6, 7), (7,)], r"matmul takes 2 inputs \(a, b\), got 3"),
    ([(5, 6, 2), (6, 7)], r"input 'a' has rank 3 .* declared with rank 2"),
    ([(5, 6), (5, 7)], r"dim K is 6 from input 'a' but 5 from input 'b'"),
], ids=["too few", "too many", "wrong rank", "disagreeing dims"])
def test_inputs_the_operator_cannot_take_give_a_clear_error(shapes, message, tmp_path):
    op = tt.load("matmul", db=tmp_path / "absent.db")
    with pytest.raises(DSLError, match=message):
        op(*random_inputs(shapes))


@pytest.mark.parametrize("inputs", [(), ([[1.0]], [[2.0]])], ids=["nothing", "lists"])
def test_inputs_that_are_not_tensors_give_a_clear_error(inputs, tmp_path):
    op = tt.load("matmul", db=tmp_path / "absent.db")
    with pytest.raises(UsageError, match="matmul takes torch tensors"):
        op(*inputs)
    with pytest.raises(UsageError, match="matmul takes torch tensors"):
        op.selection(*inputs)


@pytest.mark.parametrize("ref, message", [
    ("nosuch", "no built-in operator 'nosuch'"),
    ("/nonexistent/ops.py:fn", "does not exist"),
])
def test_loading_an_unknown_operator_names_it(ref, message):
    with pytest.raises(TiletuneError, match=message):
        tt.load(ref)


def test_loading_an_attribute_that_is_no_operator_says_so(rmsnorm_file):
    with pytest.raises(UsageError, match="not_an_operator' is not an operator"):
        tt.load(f"{rmsnorm_file}:not_an_operator")


def test_a_loaded_operator_composes_with_torch_compile(tmp_path):
    """The custom op traces through its fake implementation inside a compiled model."""
    loaded = tt.load("softmax", db=tmp_path / "none.db")

    def model(x):
        return loaded.torch_op([x * 2.0]) + 1.0

    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    x = torch.randn(37, 70)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = compiled(x)
    torch.testing.assert_close(out, torch.softmax(x * 2.0, -1) + 1.0)
    assert loaded.output_like([x]).shape == (37, 70)


@pytest.mark.parametrize("ref, shape, expected", [
    ("gelu", (9, 70), lambda x: torch.nn.functional.gelu(x * 2.0)),
    ("cumsum", (5, 131), lambda x: torch.cumsum(x * 2.0, dim=1)),
    ("softmax_nd[dim=1]", (2, 5, 3, 7), lambda x: torch.softmax(x * 2.0, dim=1)),
    ("mse_loss", None, None),
])
def test_builtins_of_other_families_compose_with_torch_compile(tmp_path, ref, shape, expected):
    loaded = tt.load(ref, db=tmp_path / "none.db")
    if ref == "mse_loss":  # a reduction to a scalar, with two inputs
        def model(x, y):
            return loaded.torch_op([x * 2.0, y]) * 3.0

        x, y = torch.randn(13, 70), torch.randn(13, 70)
        args, want = (x, y), torch.nn.functional.mse_loss(x * 2.0, y) * 3.0
    else:
        def model(x):
            return loaded.torch_op([x * 2.0]) + 1.0

        x = torch.randn(shape)
        args, want = (x,), expected(x) + 1.0
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = compiled(*args)
    torch.testing.assert_close(out, want.reshape(out.shape), rtol=1e-4, atol=1e-4)
