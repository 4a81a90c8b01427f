"""Launch grids as data: what a kernel's launcher computes, and what the tile facts count.

A family builds the grid of its main kernel once per config (`Family.grid`). Lowering renders
it into the generated `launch()` (`Grid.code`), and the tile facts evaluate the very same object
at the workload's dims (`Grid.programs`), so the number of programs the facts (and through them
the simulator and the cost model) see is the number the launcher launches.

Terms render to the launcher's Python (`triton.cdiv(N, 2) * triton.cdiv(D, 1024)`) over the
kernel's dim arguments, and evaluate to integers at concrete dims.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Protocol, Union

from tiletune.tensorexpr.expr import Expr
from tiletune.tensorexpr.operator import evaluate_extent

if TYPE_CHECKING:
    from tiletune.kernels.emit import TensorArg
    from tiletune.tensorexpr.operator import Graph
    from tiletune.tensorexpr.tensor import Tensor


class LaunchContext(Protocol):
    """What launcher code is written against: the graph, its tensors' kernel arguments and
    extents as launcher expressions. `KernelContext` is one; naming this instead keeps grids
    and launch flags below the kernel context in the import graph."""

    graph: Graph
    args: Mapping[Tensor, TensorArg]

    def extent(self, e: Expr) -> str: ...

# Programs of a persistent grid in the interpreter: a small "GPU", so that CPU tests see every
# program loop over several tiles.
INTERPRETER_PROGRAMS = 4


def cdiv(a: int, b: int) -> int:
    """`a / b` rounded up."""
    return -(-a // b)


@dataclass(frozen=True, slots=True)
class Extent:
    """The product of some axes' extents (1 for none): rows fused into one, a batch."""

    exprs: tuple[Expr, ...]

    def code(self, kernel: LaunchContext) -> str:
        return " * ".join(kernel.extent(e) for e in self.exprs) or "1"

    def size(self, dims: Mapping[str, int], sm_count: int | None) -> int:
        return math.prod(evaluate_extent(e, dims) for e in self.exprs)


@dataclass(frozen=True, slots=True)
class Tiles:
    """How many `block`-element tiles cover `extent`."""

    extent: Extent
    block: int

    def code(self, kernel: LaunchContext) -> str:
        return f"triton.cdiv({self.extent.code(kernel)}, {self.block})"

    def size(self, dims: Mapping[str, int], sm_count: int | None) -> int:
        return cdiv(self.extent.size(dims, sm_count), self.block)


@dataclass(frozen=True, slots=True)
class Constant:
    """A fixed number of programs (the splits of a reduction)."""

    value: int

    def code(self, kernel: LaunchContext) -> str:
        return str(self.value)

    def size(self, dims: Mapping[str, int], sm_count: int | None) -> int:
        return self.value


@dataclass(frozen=True, slots=True)
class Product:
    """Programs of several terms flattened into one grid axis."""

    terms: tuple[Term, ...]

    def code(self, kernel: LaunchContext) -> str:
        return " * ".join(t.code(kernel) for t in self.terms)

    def size(self, dims: Mapping[str, int], sm_count: int | None) -> int:
        return math.prod(t.size(dims, sm_count) for t in self.terms)


@dataclass(frozen=True, slots=True)
class Persistent:
    """A persistent grid: every tile of `work`, or at most `per_sm` programs on each SM of the
    device the output lives on (the interpreter: `INTERPRETER_PROGRAMS` in all)."""

    work: Term
    per_sm: int

    def code(self, kernel: LaunchContext) -> str:
        out = kernel.args[kernel.graph.output].ptr[: -len("_ptr")]
        programs = (f"(torch.cuda.get_device_properties({out}.device).multi_processor_count * {self.per_sm} "
                    f"if {out}.is_cuda else {INTERPRETER_PROGRAMS})")
        return f"min({self.work.code(kernel)}, {programs})"

    def size(self, dims: Mapping[str, int], sm_count: int | None) -> int:
        slots = INTERPRETER_PROGRAMS if sm_count is None else sm_count * self.per_sm
        return min(self.work.size(dims, sm_count), slots)


Term = Union[Extent, Tiles, Constant, Product, Persistent]


@dataclass(frozen=True, slots=True)
class Grid:
    """The launch grid of a kernel: one term per grid axis."""

    axes: tuple[Term, ...]

    def code(self, kernel: LaunchContext) -> list[str]:
        """Each axis as the launcher's Python."""
        return [axis.code(kernel) for axis in self.axes]

    def shape(self, dims: Mapping[str, int], sm_count: int | None) -> tuple[int, ...]:
        """Programs along each axis at `dims` on a GPU of `sm_count` SMs (None: the interpreter)."""
        return tuple(axis.size(dims, sm_count) for axis in self.axes)

    def programs(self, dims: Mapping[str, int], sm_count: int | None) -> int:
        """Programs launched in all."""
        return math.prod(self.shape(dims, sm_count))
