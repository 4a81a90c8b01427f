"""Static facts about one launch of a generated kernel: how many programs, how much work and
memory traffic each does. They feed the simulated device and the cost model's features; they
need the workload's dims, not a GPU. Each kernel family computes its own (`Family.facts`), its
program count from the very grid its launcher launches; this module holds what they share.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Mapping

from tiletune.tensorexpr import dtypes as dt
from tiletune.tensorexpr.analysis import inline_injective
from tiletune.tensorexpr.expr import Binary, Expr, Unary, walk
from tiletune.tensorexpr.operator import Graph


@dataclass(frozen=True, slots=True)
class TileFacts:
    """Work and traffic of one launch, per program and in total."""

    programs: int
    flops_per_program: float
    bytes_per_program: float
    unique_bytes: float
    tile_m: int
    tile_n: int
    tile_k: int
    k_iterations: int
    uses_tensor_cores: bool
    dot_dtype: str
    tail_fraction: float  # share of the launched tile area that falls outside the output
    # Hopper knobs (0/1): a persistent grid looping over tiles, descriptor (TMA) loads, and a
    # warp-specialized main loop; 0 for kernels without them
    persistent: int = 0
    tma: int = 0
    warp_specialized: int = 0
    # Output tiles one program computes back to back (a persistent program's share; 1 otherwise)
    tiles_per_program: int = 1
    # Bytes one output tile's epilogue writes (the accumulator converted and stored); 0 where the
    # kernel has no per-tile epilogue after a main loop
    epilogue_bytes: float = 0.0
    # Work off the tensor cores inside a dot loop, per program: special-function operations
    # (exp2 and the like, MUFU) and other CUDA-core arithmetic (an online softmax's max, scale,
    # sum and rescale); 0 for kernels whose flops_per_program already counts all their work
    sfu_ops_per_program: float = 0.0
    alu_ops_per_program: float = 0.0
    # Share of main-loop trips that pass the scores through an elementwise mask (attention)
    masked_fraction: float = 0.0
    # CTAs per thread-block cluster along M and N (Hopper): the CTAs of a cluster along M share
    # their B tiles, those along N their A tiles, which TMA can multicast to all of them. 1x1
    # for every kernel tiletune generates (it has no cluster knob); a reference kernel that
    # runs in clusters (cuBLAS's, in the calibration table) states its own
    cluster_m: int = 1
    cluster_n: int = 1

    @property
    def intensity(self) -> float:
        """FLOPs per byte of traffic a program issues."""
        return self.flops_per_program / max(self.bytes_per_program, 1.0)

    def to_dict(self) -> dict[str, float]:
        """Plain numbers (bools as 0/1, the dot dtype left out) for features and records."""
        d = asdict(self)
        d.pop("dot_dtype")
        d["uses_tensor_cores"] = int(self.uses_tensor_cores)
        d["intensity"] = self.intensity
        return d


def unique_bytes(graph: Graph, dims: Mapping[str, int]) -> float:
    """Compulsory traffic: every input read once and the output written once."""
    total = 0
    for t in (*graph.inputs, graph.output):
        total += math.prod(graph.shape_of(t, dims)) * dt.itemsize(t.dtype)
    return float(total)


def arithmetic(e: Expr) -> int:
    """Float arithmetic operations in `e` (index arithmetic is free: Triton folds it)."""
    return sum(1 for n in walk(e) if isinstance(n, (Binary, Unary)) and not dt.is_int(n.dtype))


def ops_per_element(graph: Graph, pattern) -> int:
    """Arithmetic per output element of a row-shaped kernel: the output's fused body and each
    reduction's body, with the anchors kept as values."""
    keep = frozenset(pattern.anchors)
    exprs = [inline_injective(graph.output.op.body, keep)]
    exprs += [inline_injective(s.reduction.body, keep) for s in pattern.reductions]
    return max(1, sum(arithmetic(e) for e in exprs))
