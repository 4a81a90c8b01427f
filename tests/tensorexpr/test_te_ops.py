"""The IR's operators are enums defined once (`tensorexpr.expr`); a member is its DSL name."""
from __future__ import annotations

import pickle

import pytest

from tiletune import tensorexpr as te
from tiletune.errors import DSLError
from tiletune.tensorexpr.expr import (
    OP_ENUMS,
    Binary,
    BinaryOp,
    CompareOp,
    Const,
    LogicalOp,
    Reduce,
    ReduceOp,
    Scan,
    ScanOp,
    UnaryOp,
    binary,
    op_of,
    walk,
)


@pytest.mark.parametrize("kind", OP_ENUMS, ids=lambda kind: kind.__name__)
def test_a_member_reads_compares_and_hashes_as_its_name(kind):
    for member in kind:
        assert member == member.value and hash(member) == hash(member.value)
        assert str(member) == f"{member}" == member.value
        assert {member.value: 1}[member] == 1 and {member: 1}[member.value] == 1
        assert repr(member) == f"{kind.__name__}.{member.name}"
        assert pickle.loads(pickle.dumps(member)) is member


def test_nodes_built_with_a_name_hold_the_member():
    x = Const(1.0, "float32")
    assert Binary("add", x, x, "float32").op is BinaryOp.ADD
    assert Binary("add", x, x, "float32") == Binary(BinaryOp.ADD, x, x, "float32")
    k = te.reduce_axis(4, name="k")
    assert Reduce("sum", x, (k,), "float32").op is ReduceOp.SUM
    assert type(binary("mul", x, x).op) is BinaryOp


def test_dsl_operations_build_members():
    x = te.placeholder((3,), "float32", name="x")
    k = te.reduce_axis(3, name="k")
    y = te.compute((3,), lambda i: te.where((x[i] < 0.0) & ~(x[i] > 1.0), -te.exp(x[i]) * 2.0, 0.0), name="y")
    s = te.compute((1,), lambda i: te.max(y[k], axis=k), name="s")
    c = te.compute((3,), lambda i: te.cumprod(x[i], axis=i), name="c")
    ops = {type(n.op) for t in (y, s, c) for n in walk(t.op.body) if hasattr(n, "op")}
    assert ops == {BinaryOp, UnaryOp, CompareOp, LogicalOp, ReduceOp, ScanOp}
    assert isinstance(c.op.body, Scan) and c.op.body.op is ScanOp.PROD


def test_an_unknown_operator_name_is_a_dsl_error():
    with pytest.raises(DSLError, match="unknown BinaryOp 'pow'; expected one of add, sub"):
        op_of(BinaryOp, "pow")
    with pytest.raises(DSLError, match="unknown UnaryOp"):
        te.unary("cos", 1.0)


def _tables_of_tensorexpr():
    from tiletune.tensorexpr import reference
    from tiletune.tensorexpr.operator import SHAPE_ARITHMETIC

    return {
        "reference.BINARY": (reference.BINARY, BinaryOp),
        "reference.UNARY": (reference.UNARY, UnaryOp),
        "reference.COMPARE": (reference.COMPARE, CompareOp),
        "reference.LOGICAL": (reference.LOGICAL, LogicalOp),
        "reference.REDUCE": (reference.REDUCE, ReduceOp),
        "reference.SCAN": (reference.SCAN, ScanOp),
        "operator.SHAPE_ARITHMETIC": (SHAPE_ARITHMETIC, BinaryOp),
    }


@pytest.mark.parametrize("name", sorted(_tables_of_tensorexpr()))
def test_every_operator_table_covers_every_member_of_its_enum(name):
    """A table keyed by an operator enum says what each member means; a member missing from it
    would fail only when an operator first uses it (a partial table maps the rest to None)."""
    table, kind = _tables_of_tensorexpr()[name]
    assert all(type(key) is kind for key in table), f"{name} has keys that are not {kind.__name__} members"
    assert set(table) == set(kind), f"{name} misses {sorted(m.value for m in set(kind) - set(table))}"
