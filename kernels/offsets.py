"""Whether a call's tensors fit the generated kernels' 32-bit offsets.

Kernels take sizes and strides as int32 and index with int32 arithmetic, so an element's offset
(the sum over axes of index times stride) must stay below 2**31 in every tensor a call touches.
That depends on the call's strides as much as its shape (an int8 view with a row stride of
2**30 and 4 rows reaches offset 3 * 2**30), so it is decided per call, from sizes and strides.
A tensor beyond it is refused, not run: 64-bit offsets are not generated yet.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Mapping, Sequence

from tiletune.errors import UsageError

if TYPE_CHECKING:
    from tiletune.tensorexpr.operator import Graph

# The largest offset int32 index arithmetic reaches.
OFFSET_LIMIT = 2**31 - 1


def extent(shape: Sequence[int], strides: Sequence[int]) -> int:
    """Elements from a tensor's first element to one past its last (its numel when
    contiguous; 0 when empty)."""
    if any(s == 0 for s in shape):
        return 0
    return 1 + sum((s - 1) * abs(st) for s, st in zip(shape, strides))


def check_fits(operator: str, tensors: Sequence[tuple[str, Sequence[int], Sequence[int]]]) -> None:
    """Refuse a call if any (name, shape, strides) has more elements than `OFFSET_LIMIT` or an
    element at an offset past it."""
    for name, shape, strides in tensors:
        numel = math.prod(shape)
        last = extent(shape, strides) - 1
        if max(numel, last) > OFFSET_LIMIT:
            raise UsageError(
                f"{operator}: tensor '{name}' (shape {tuple(shape)}, strides {tuple(strides)}) has {numel} elements "
                f"and its last element at offset {last}, past {OFFSET_LIMIT}, the largest that the generated kernels' "
                "32-bit offsets reach; pass a smaller or contiguous tensor (64-bit offsets are not generated yet)"
            )


def contiguous_strides(shape: Sequence[int]) -> tuple[int, ...]:
    """The strides of a contiguous tensor of `shape`."""
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= max(size, 1)
    return tuple(reversed(strides))


def check_workload(graph: Graph, dims: Mapping[str, int]) -> None:
    """Refuse a workload (tuning it included) whose contiguous inputs or output at `dims` go past
    the kernels' 32-bit offsets: each dim may fit while their product does not."""
    check_fits(graph.name, [(t.name, shape, contiguous_strides(shape))
                            for t in (*graph.inputs, graph.output) for shape in [graph.shape_of(t, dims)]])
