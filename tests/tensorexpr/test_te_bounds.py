"""Bounds-checked reads (`te.pad_read`, `te.in_bounds`): padding in the DSL, evaluated by the
reference without reading outside the input."""
from __future__ import annotations

import pytest
import torch

from tiletune import tensorexpr as te
from tiletune.errors import DSLError
from tiletune.tensorexpr.expr import Read, Select
from tiletune.tensorexpr.reference import evaluate


@te.operator
def padded_shift(N, L):
    """y[i, j] = x[i, j - 2] with zeros shifted in, and a right neighbour padded with -1."""
    x = te.placeholder((N, L), "float32", name="x")
    y = te.compute((N, L), lambda i, j: te.pad_read(x, (i, j - 2), 0.0) + te.pad_read(x, (i, j + 1), -1.0), name="y")
    return [x], y


@pytest.mark.parametrize("n, length", [(3, 7), (1, 1), (2, 2)])
def test_pad_read_matches_torch_padding(n, length):
    x = torch.randn(n, length)
    got = evaluate(padded_shift.graph(), [x])
    shifted = torch.nn.functional.pad(x, (2, 0))[:, :length]
    right = torch.nn.functional.pad(x, (0, 1), value=-1.0)[:, 1:]
    torch.testing.assert_close(got, shifted + right)


def test_in_bounds_keeps_only_the_checks_that_can_fail():
    N, L = te.var("N"), te.var("L")
    x = te.placeholder((N, L), "float32", name="x")
    i = te.compute((N, L), lambda i, j: x[i, j], name="copy").op.axes[0]
    j = te.compute((N, L), lambda i, j: x[i, j], name="copy2").op.axes[1]
    assert te.in_bounds(x, (i, j)) is None
    assert isinstance(te.pad_read(x, (i, j), 0.0), Read)
    # j + 1 cannot be negative: only the upper bound is checked; j - 1 needs both
    upper = te.in_bounds(x, (i, j + 1))
    assert upper is not None and upper.op == "lt"
    both = te.in_bounds(x, (i, j - 1))
    assert both is not None and both.op == "and"
    assert isinstance(te.pad_read(x, (i, j - 1), float("-inf")), Select)


def test_in_bounds_refuses_a_wrong_rank():
    x = te.placeholder((4, 4), "float32", name="x")
    with pytest.raises(DSLError, match="tensor 'x' has rank 2, got 3 indices"):
        te.in_bounds(x, (0, 1, 2))
