"""A new kernel family is one `Family` subclass and one entry in `FAMILIES`: nothing else in
schedules/, kernels/ or search/ names the families, so the schedule, the space, lowering, the
launch grid, the tile facts and the verification dims all follow from the class.

The family here is a real (if plain) kernel shape the backend does not have: elementwise
operators as one 1-D block over the flattened output, each axis's index unflattened from the
block's offsets, instead of the rows family's 2-D `BLOCK_ROWS x BLOCK_LANE` tiles.
"""
from __future__ import annotations

import math
from typing import Mapping

import pytest

from tiletune.kernels import families as registry
from tiletune.kernels.emit import Dim, TileEmitter, Value
from tiletune.kernels.facts import TileFacts, ops_per_element, unique_bytes
from tiletune.kernels.families import Family, default_schedule, family_for
from tiletune.kernels.families.family import shrink
from tiletune.kernels.grid import Extent, Grid, Tiles, cdiv
from tiletune.kernels.kernel import KernelContext, KernelSource
from tiletune.kernels.library import resolve_operator
from tiletune.kernels.lower import lower
from tiletune.kernels.verify import check
from tiletune.schedules.knobs import Choice, PowerOfTwo
from tiletune.schedules.schedule import ResolvedSchedule, Schedule
from tiletune.tensorexpr.analysis import OpClass
from tiletune.tensorexpr.expr import IterVar
from tiletune.tensorexpr.operator import evaluate_extent


class FlatFamily(Family):
    """Elementwise operators as one `BLOCK`-element 1-D block per program over the output."""

    name = "flat"
    serves = frozenset({OpClass.INJECTIVE})
    roles = ("flat",)

    def role_of(self, axis: IterVar) -> str | None:
        return "flat" if axis in self.graph.output.op.axes else None

    def _size(self, dims: Mapping[str, int]) -> int:
        return math.prod(evaluate_extent(a.extent, dims) for a in self.graph.output.op.axes)

    def add_knobs(self, schedule: Schedule, dims: Mapping[str, int]) -> None:
        schedule.tile("flat", PowerOfTwo("BLOCK", 64, 4096, default=1024)).bind("flat", "block.x")
        schedule.num_warps(Choice("num_warps", (2, 4, 8), default=4))

    def grid(self, schedule: ResolvedSchedule) -> Grid:
        return Grid((Tiles(Extent(tuple(a.extent for a in self.graph.output.op.axes)), schedule.tile("flat")),))

    def emit(self, kernel: KernelContext, for_interpreter: bool) -> KernelSource:
        out, body = self.graph.output, kernel.body
        kernel.check_fusion()
        kernel.constexprs.update(BLOCK=kernel.schedule.tile("flat"))
        body.line(f"n = {' * '.join(kernel.extent(a.extent) for a in out.op.axes) or '1'}")
        body.line("offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)")
        body.line("mask = offs < n")
        emitter = TileEmitter(body, [Dim("flat", "offs", "mask")], {}, kernel.args, kernel.extent)
        for axis, name in kernel.unflatten(out.op.axes, "offs").items():
            emitter.axes[axis] = Value(name, frozenset({0}), "int32")
        kernel.store(emitter, emitter.computed(out, frozenset()))
        return kernel.finish("flat_kernel", self.grid(kernel.schedule).code(kernel))

    def facts(self, schedule: ResolvedSchedule, dims: Mapping[str, int]) -> TileFacts:
        size, block = self._size(dims), schedule.tile("flat")
        programs = self.grid(schedule).programs(dims, None)
        total = unique_bytes(self.graph, dims)
        return TileFacts(
            programs=programs, flops_per_program=float(ops_per_element(self.graph, self.pattern) * block),
            bytes_per_program=total / programs, unique_bytes=total, tile_m=block, tile_n=1, tile_k=0,
            k_iterations=1, uses_tensor_cores=False, dot_dtype="none",
            tail_fraction=1.0 - size / (cdiv(size, block) * block),
        )

    def verification_dims(self, dims: Mapping[str, int], schedule: ResolvedSchedule) -> dict[str, int]:
        return shrink(dims, {}, inner=set(dims))  # a few values per dim: several blocks and a tail


@pytest.fixture
def with_flat_family(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "FAMILIES", (FlatFamily, *registry.FAMILIES))


@pytest.mark.parametrize("op, dtype, dims", [
    ("add", "float32", dict(N=37, D=71)),
    ("gelu", "float16", dict(N=5, D=1000)),
    ("bias_add_3d", "float32", dict(B=3, S=7, D=50)),
])
def test_a_family_added_to_the_registry_lowers_tunes_and_checks(with_flat_family, op, dtype, dims):
    graph = resolve_operator(op).graph(dtype)
    family = family_for(graph)
    assert isinstance(family, FlatFamily)
    schedule = default_schedule(graph, dims)
    space = schedule.space()
    assert space.names == ("BLOCK", "num_warps")
    for config in (space.default(), space.default().replace(BLOCK=64, num_warps=2)):
        resolved = schedule.resolve(config)
        src = lower(graph, resolved)
        assert "flat_kernel" in src.text and "BLOCK_ROWS" not in src.text
        small = family.verification_dims(dims, resolved)
        verdict = check(graph, src, small)
        assert verdict.ok, verdict.reason
        facts = family.facts(resolved, dims)
        assert facts.programs == cdiv(math.prod(dims.values()), config["BLOCK"])


def test_without_the_entry_the_rows_family_holds_the_operator():
    assert family_for(resolve_operator("add").graph("float32")).name == "rows"
