"""Launch-time constexprs: facts of a call that the launcher computes and passes to the kernel as
`tl.constexpr`, so that Triton compiles one kernel per answer, as it does for its own arguments
(an int equal to 1 becomes a constant, a multiple of 16 is marked aligned).

The generated source stays one text for every shape; what varies per call is decided by the
launcher: `EVEN_K = K % BLOCK_K == 0` lets the kernel drop the K mask from every trip of its
main loop; `TMA_STORE` says the output's rows can be written by a tensor descriptor;
`NUM_PROGRAMS` is a persistent grid's program count.

How a family uses it: while emitting, ask the `KernelContext` for a flag
(`kernel.specialize(Divides("EVEN_K", k_extent, bk))`, which returns the name to test in the
kernel) and branch on it in the source (`if EVEN_K:` / `if not EVEN_K:`; Triton resolves a
constexpr `if` at compile time, so the branch not taken costs nothing). The context adds the
flag to the kernel's parameters and the launcher's call; `Task.specialization` evaluates the
same flag at the task's dims, so the ahead-of-time compile builds the kernel the launch runs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Union

from tiletune.kernels.grid import Grid
from tiletune.kernels.target import KERNEL_TARGET
from tiletune.tensorexpr import dtypes as dt
from tiletune.tensorexpr.expr import Expr
from tiletune.tensorexpr.operator import Graph, evaluate_extent
from tiletune.tensorexpr.tensor import Tensor

if TYPE_CHECKING:
    from tiletune.kernels.grid import LaunchContext

# A tensor descriptor's global strides and base address must be multiples of 16 bytes.
DESCRIPTOR_ALIGN_BYTES = 16


@dataclass(frozen=True, slots=True)
class Divides:
    """`name` is true when `extent` (a product of extents) splits into whole `block`-element
    tiles: the kernel may drop that axis's mask."""

    name: str
    extent: tuple[Expr, ...]
    block: int

    def launcher_code(self, kernel: LaunchContext) -> str:
        size = " * ".join(kernel.extent(e) for e in self.extent)
        return f"({size}) % {self.block} == 0"

    def value(self, graph: Graph, dims: Mapping[str, int]) -> bool:
        return math.prod(evaluate_extent(e, dims) for e in self.extent) % self.block == 0


@dataclass(frozen=True, slots=True)
class RowsAligned:
    """`name` is true when `tensor` (2-D) has a contiguous last dim and 16-byte aligned rows and
    base: a tensor descriptor can address it. A task's tensors are contiguous, so at its dims
    this is whether a row's bytes are a multiple of 16."""

    name: str
    tensor: Tensor

    def launcher_code(self, kernel: LaunchContext) -> str:
        t = kernel.args[self.tensor].ptr[: -len("_ptr")]
        item = dt.itemsize(self.tensor.dtype)
        return (f"({t}.stride(1) == 1 and ({t}.stride(0) * {item}) % {DESCRIPTOR_ALIGN_BYTES} == 0 "
                f"and {t}.data_ptr() % {DESCRIPTOR_ALIGN_BYTES} == 0)")

    def value(self, graph: Graph, dims: Mapping[str, int]) -> bool:
        shape = graph.shape_of(self.tensor, dims)
        return (math.prod(shape[1:]) * dt.itemsize(self.tensor.dtype)) % DESCRIPTOR_ALIGN_BYTES == 0


@dataclass(frozen=True, slots=True)
class GridSize:
    """`name` is the number of programs the launcher launches along `axis` of `grid`: a
    persistent program strides over tiles by it, and a constant stride frees the registers and
    index arithmetic a runtime `tl.num_programs` costs (Triton's tutorial passes its SM count
    as a constexpr alike). Evaluated at the kernel target's SM count."""

    name: str
    grid: Grid
    axis: int = 0

    def launcher_code(self, kernel: LaunchContext) -> str:
        return f"grid[{self.axis}]"

    def value(self, graph: Graph, dims: Mapping[str, int]) -> int:
        return self.grid.shape(dims, KERNEL_TARGET.sm_count)[self.axis]


LaunchFlag = Union[Divides, RowsAligned, GridSize]


def flag_values(flags: tuple[LaunchFlag, ...], graph: Graph, dims: Mapping[str, int]) -> dict[str, int]:
    """What the launcher passes for each flag when called on contiguous tensors at `dims`."""
    return {flag.name: flag.value(graph, dims) for flag in flags}
