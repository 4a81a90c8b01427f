"""`verify.check` fails a kernel that writes outside its output or leaves part of it unwritten,
for float and integer outputs alike (kernels broken on purpose by editing their source), and
draws inputs from a declared domain."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from tiletune import tensorexpr as te
from tiletune.kernels.library import add
from tiletune.kernels.verify import check

FULL_MASK = "mask=mask_rows[:, None] & mask_lane[None, :])"


@te.operator
def add_int(N, D):
    x = te.placeholder((N, D), "int32", name="x")
    y = te.placeholder((N, D), "int32", name="y")
    z = te.compute((N, D), lambda i, j: x[i, j] - y[i, j] * 3, name="z")
    return [x, y], z


def broken(kernel, new_mask: str):
    text = kernel.src.text
    assert text.count(FULL_MASK) == 1
    return dataclasses.replace(kernel.src, text=text.replace(FULL_MASK, f"mask={new_mask})"))


def test_a_store_past_the_output_fails(lowered):
    """Without its lane mask the last row's store runs past the end of the output."""
    kernel = lowered(add.graph("float32"), dict(N=3, D=37))
    assert kernel.check().ok
    verdict = check(kernel.graph, broken(kernel, "mask_rows[:, None]"), kernel.dims)
    assert not verdict.ok and "outside its output" in verdict.reason


def test_integer_outputs_are_checked(lowered):
    """Regression: a fresh integer output could not be filled with NaN, so verify raised."""
    kernel = lowered(add_int.graph(), dict(N=3, D=37))
    assert kernel.check().ok
    verdict = check(kernel.graph, broken(kernel, "mask_rows[:, None] & (offs_lane[None, :] < 10)"), kernel.dims)
    assert not verdict.ok and "81 of 111 output elements left unwritten" in verdict.reason
    verdict = check(kernel.graph, broken(kernel, "mask_rows[:, None]"), kernel.dims)
    assert not verdict.ok and "outside its output" in verdict.reason


def test_inputs_are_drawn_from_a_declared_domain_and_a_nan_reference_is_explained():
    from tiletune.errors import DSLError
    from tiletune.kernels.verify import compare, make_inputs
    from tiletune.tensorexpr.operator import operator

    @operator
    def inv_sqrt(N):
        v = te.placeholder((N,), "float32", name="v", domain=(0.5, 2.0))
        return [v], te.compute((N,), lambda i: te.rsqrt(v[i]), name="y")

    (v,) = make_inputs(inv_sqrt.graph(), {"N": 1000}, seed=3)
    assert float(v.min()) >= 0.5 and float(v.max()) < 2.0
    with pytest.raises(DSLError, match="domain needs finite low < high"):
        te.placeholder((4,), "float32", name="bad", domain=(1.0, 1.0))
    nan_ref = torch.tensor([1.0, math.nan])
    assert compare(torch.tensor([1.0, math.nan]), nan_ref, "float32", 1).ok  # NaN where the reference is
    verdict = compare(torch.tensor([1.0, 2.0]), nan_ref, "float32", 1)
    assert not verdict.ok and "domain=(low, high)" in verdict.reason
