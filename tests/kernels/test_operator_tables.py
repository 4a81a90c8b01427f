"""Every table that says how the Triton backend spells an operator covers every member of the
operator's enum: a missing member would fail only when an operator first used it."""
from __future__ import annotations

import pytest

from tiletune.kernels import syntax
from tiletune.kernels.families import scan
from tiletune.tensorexpr.expr import ARG_REDUCE_OPS, BinaryOp, CompareOp, LogicalOp, ReduceOp, ScanOp, UnaryOp

TABLES = {
    "syntax.BINARY": (syntax.BINARY, BinaryOp),
    "syntax.UNARY": (syntax.UNARY, UnaryOp),
    "syntax.COMPARE": (syntax.COMPARE, CompareOp),
    "syntax.LOGICAL": (syntax.LOGICAL, LogicalOp),
    "syntax.REDUCE_IDENTITY": (syntax.REDUCE_IDENTITY, ReduceOp),
    "syntax.REDUCE_FN": (syntax.REDUCE_FN, ReduceOp),
    "syntax.COMBINE": (syntax.COMBINE, ScanOp),
    "scan.SCAN": (scan.SCAN, ScanOp),
    "scan.TOTAL": (scan.TOTAL, ScanOp),
    "scan.HELPERS": (scan.HELPERS, ScanOp),
    "scan.FLOAT_IDENTITY": (scan.FLOAT_IDENTITY, ScanOp),
}


@pytest.mark.parametrize("name", sorted(TABLES))
def test_every_operator_table_covers_every_member_of_its_enum(name):
    table, kind = TABLES[name]
    assert all(type(key) is kind for key in table), f"{name} has keys that are not {kind.__name__} members"
    assert set(table) == set(kind), f"{name} misses {sorted(m.value for m in set(kind) - set(table))}"


@pytest.mark.parametrize("op", [*(op for op in ReduceOp if op not in ARG_REDUCE_OPS), *ScanOp], ids=repr)
def test_every_combining_reduction_and_scan_has_a_combine_and_an_integer_identity(op):
    assert syntax.combine(op, "acc", "x").count("acc") == 1
    assert syntax.int_identity(op, "int32").lstrip("-").isdigit()
