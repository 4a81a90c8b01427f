"""Partitioning an operator's graph into kernels: where one kernel cannot hold the whole graph,
some stages are computed first by kernels of their own, stored, and read back.

Each kernel is built around anchors (reductions, contractions, scans: `is_anchor`) with the
injective work around them inlined. `partition(graph, refusal)` asks `refusal(graph)` (the
lowering layer's check: None when one kernel holds the graph, else why not) for the whole
graph first; where it is refused, it looks for the fewest stages to materialize:

- the candidate cut points are the anchors above the kernel's output, each moved down its
  injective epilogue (the chain of single consumers that read no other anchor and are no
  larger), so a GEMM stores `gelu(c + bias)`, not `c`;
- cuts of one point are tried before cuts of two, then three; among the cuts of the smallest
  size that fit, the one whose whole plan has the fewest kernels wins, then the one storing
  the fewest elements;
- each stage cut is then planned the same way (it may need cuts of its own); where no cut of
  up to three points fits, every anchor above is cut, and then every stage.

`extract` builds the graph of one kernel (a target computed from values and cut stages read as
inputs); the backward derivation (`gradient`) splits its graphs with it too.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations
from typing import Callable, Iterable

from tiletune.errors import LoweringError
from tiletune.tensorexpr.expr import DimVar, Expr, Read, children, rebuild, walk
from tiletune.tensorexpr.operator import Graph
from tiletune.tensorexpr.tensor import ComputeOp, PlaceholderOp, Tensor

#: How a part's workload name follows its operator's: `block.part_g` computes stage `g`.
PART_INFIX = ".part_"

# Cuts of more points than this are not searched: past it every anchor is cut.
MAX_CUT = 3

# The extent every dim takes when comparing how much a cut stores (shapes are symbolic).
_SIZE_PROBE = 64


@dataclass(frozen=True, slots=True, eq=False)
class Part:
    """One kernel of a split graph: `graph` reads the values named by `reads` (inputs of the
    whole graph, or earlier parts' `writes`), in the order of its inputs, and computes the
    value `writes`. `why` says why that value is stored rather than fused into its reader
    (empty for the part writing the output)."""

    name: str
    graph: Graph
    reads: tuple[str, ...]
    writes: str
    why: str = ""


@dataclass(frozen=True, slots=True, eq=False)
class Partition:
    """A graph as the kernels that compute it, in an order that runs; the last one writes the
    graph's output. One part is the whole graph, fused."""

    graph: Graph
    parts: tuple[Part, ...]

    @property
    def fused(self) -> bool:
        """Whether one kernel computes the whole graph."""
        return len(self.parts) == 1

    def part(self, name: str) -> Part:
        """The part called `name` (LoweringError naming the parts when there is none)."""
        for p in self.parts:
            if p.name == name:
                return p
        raise LoweringError(f"{self.graph.name} has no kernel '{name}'; its kernels are "
                            f"{', '.join(p.name for p in self.parts)}")


def is_anchor(stage: Tensor) -> bool:
    """A stage one kernel is built around: a reduction (contractions and windows included) or
    a scan."""
    return stage.reduction is not None or stage.scan is not None


def reads_of(stage: Tensor) -> list[Tensor]:
    """The tensors `stage`'s body reads, each once, in order."""
    seen: dict[int, Tensor] = {}
    for node in walk(stage.op.body):
        if isinstance(node, Read):
            seen.setdefault(id(node.tensor), node.tensor)
    return list(seen.values())


def extract(name: str, graph: Graph, target: Tensor, cut: Iterable[Tensor], *,
            is_value: Callable[[Tensor], bool] = lambda t: t.is_placeholder,
            value_of: Callable[[Tensor], Tensor] | None = None) -> tuple[Graph, tuple[str, ...]]:
    """The graph `name` computing `target` from values (`is_value`: the graph's inputs by
    default) and the `cut` stages, read as inputs; returns it with the names of the values it
    reads, in the order of its inputs. `value_of(t)` is the placeholder a value is read through
    (a computed stage becomes a placeholder of its shape, name and dtype). Where no input binds
    a dim by its shape, the first of `graph`'s inputs that does is read too, so a caller can
    bind every dim from the inputs."""
    cut_ids = {id(t) for t in cut}
    inputs: dict[int, Tensor] = {}
    reads: list[str] = []
    rebuilt: dict[int, Tensor] = {}
    stages: list[Tensor] = []

    def value(t: Tensor) -> Tensor:
        if id(t) not in inputs:
            if value_of is not None:
                p = value_of(t)
            else:
                p = t if t.is_placeholder else Tensor(t.name, t.shape, t.dtype, PlaceholderOp())
            inputs[id(t)] = p
            reads.append(t.name)
        return inputs[id(t)]

    def visit(t: Tensor) -> Tensor:
        if is_value(t) or (id(t) in cut_ids and t is not target):
            return value(t)
        if id(t) in rebuilt:
            return rebuilt[id(t)]
        body = redirect(t.op.body, visit)
        new = Tensor(t.name, t.shape, t.dtype, ComputeOp(t.op.axes, body))
        rebuilt[id(t)] = new
        stages.append(new)
        return new

    output = visit(target)
    for x in graph.inputs:
        if unbound_dims(graph, inputs.values()) & set(dims_of(x)):
            value(x)
    return Graph(name, graph.dims, tuple(inputs.values()), tuple(stages), output), tuple(reads)


def dims_of(t: Tensor) -> list[str]:
    """The dims an input binds by its shape: those it is declared with as plain dims."""
    return [e.name for e in t.shape if isinstance(e, DimVar)]


def unbound_dims(graph: Graph, inputs: Iterable[Tensor]) -> set[str]:
    """The dims of `graph` that no tensor of `inputs` binds by its shape."""
    bound = {d for t in inputs for d in dims_of(t)}
    return set(graph.dim_names) - bound


def redirect(e: Expr, visit: Callable[[Tensor], Tensor]) -> Expr:
    """`e` with every read's tensor replaced by `visit(tensor)`."""
    kids = children(e)
    new = tuple(redirect(k, visit) for k in kids)
    if isinstance(e, Read):
        return Read(visit(e.tensor), new, e.dtype)
    if not kids or new == kids:
        return e
    return rebuild(e, new)


def partition(graph: Graph, refusal: Callable[[Graph], str | None]) -> Partition:
    """`graph` split into the kernels that compute it (see the module's docstring).
    `refusal(g)` is None when one kernel holds `g`, else why it cannot; a graph that cannot be
    split into kernels it accepts raises LoweringError with the refusal of the smallest part."""
    return _Partitioner(graph, refusal).run()


class _Partitioner:
    def __init__(self, graph: Graph, refusal: Callable[[Graph], str | None]) -> None:
        self.graph = graph
        self.refusal = refusal
        self.reads: dict[int, list[Tensor]] = {id(s): reads_of(s) for s in graph.stages}
        self.consumers: dict[int, list[Tensor]] = {id(s): [] for s in graph.stages}
        for s in graph.stages:
            for t in self.reads_of(s):
                if not t.is_placeholder:
                    self.consumers[id(t)].append(s)
        self.probe_dims = {n: _SIZE_PROBE for n in graph.dim_names}
        self.above: dict[tuple[int, frozenset[int]], list[Tensor]] = {}
        self.attempts: dict[tuple[int, frozenset[int]], tuple[Graph, tuple[str, ...], str | None]] = {}
        self.plans: dict[tuple[int, frozenset[int]], tuple[Part, ...]] = {}

    def reads_of(self, t: Tensor) -> list[Tensor]:
        """`reads_of(t)` for a stage of the graph, walked once."""
        return self.reads[id(t)]

    def run(self) -> Partition:
        return Partition(self.graph, self.plan(self.graph.output, frozenset()))

    def attempt(self, target: Tensor, given: frozenset[Tensor]) -> tuple[Graph, tuple[str, ...], str | None]:
        """The kernel computing `target` with the `given` stages read, and its refusal."""
        given = self.relevant(target, given)
        key = (id(target), frozenset(id(t) for t in given))
        if key not in self.attempts:
            name = f"{self.graph.name}{PART_INFIX}{target.name}"
            graph, reads = extract(name, self.graph, target, given)
            self.attempts[key] = (graph, reads, self.refusal(graph))
        return self.attempts[key]

    def relevant(self, target: Tensor, given: frozenset[Tensor]) -> frozenset[Tensor]:
        """The stages of `given` that `target`'s kernel would read: the others change nothing,
        so plans and attempts are shared between cuts that differ only in them."""
        found: dict[int, Tensor] = {}
        seen: set[int] = set()
        stack = [target]
        while stack:
            t = stack.pop()
            if id(t) in seen or t.is_placeholder:
                continue
            seen.add(id(t))
            if t in given and t is not target:
                found[id(t)] = t
                continue
            stack.extend(self.reads_of(t))
        return frozenset(found.values())

    def plan(self, target: Tensor, given: frozenset[Tensor]) -> tuple[Part, ...]:
        """The parts computing `target` when the `given` stages are stored: its own kernel last."""
        given = self.relevant(target, given)
        key = (id(target), frozenset(id(t) for t in given))
        if key in self.plans:
            return self.plans[key]
        graph, reads, why = self.attempt(target, given)
        if why is None:
            result = (self.own(target, graph, reads, whole=not given and target is self.graph.output),)
        else:
            result = self.best_cut(target, given, why)
        self.plans[key] = result
        return result

    def own(self, target: Tensor, graph: Graph, reads: tuple[str, ...], whole: bool = False) -> Part:
        if whole:  # one kernel holds the whole graph: it keeps the operator's name
            graph = Graph(self.graph.name, graph.dims, graph.inputs, graph.stages, graph.output)
        return Part(graph.name, graph, reads, target.name)

    def best_cut(self, target: Tensor, given: frozenset[Tensor], why: str) -> tuple[Part, ...]:
        points = self.points(target, given)
        best: tuple[tuple[int, int, int], tuple[Part, ...]] | None = None
        for size in range(1, min(MAX_CUT, len(points)) + 1):
            if best is not None and size + 1 > best[0][0]:
                break  # a cut of `size` stages makes at least size + 1 kernels
            for cut in combinations(points, size):
                if self.attempt(target, given | set(cut))[2] is not None:
                    continue
                parts = self.with_cut(target, given, cut, why)
                score = self.score(parts)
                if best is None or score < best[0]:
                    best = (score, parts)
        if best is not None:
            return best[1]
        upstream = [s for s in self.upstream(target, given) if s is not target]
        for cut in ([s for s in upstream if is_anchor(s)], upstream):
            if cut and self.attempt(target, given | set(cut))[2] is None:
                return self.with_cut(target, given, tuple(cut), why)
        raise LoweringError(why)

    def score(self, parts: tuple[Part, ...]) -> tuple[int, int, int]:
        """Fewest kernels first, then the fewest anchors computed (a stored stage is read, not
        recomputed), then the fewest elements stored."""
        anchors = sum(1 for p in parts for s in p.graph.stages if is_anchor(s))
        stored = sum(self.elements(self.stage(p.writes)) for p in parts[:-1])
        return len(parts), anchors, stored

    def with_cut(self, target: Tensor, given: frozenset[Tensor], cut: tuple[Tensor, ...], why: str) -> tuple[Part, ...]:
        """The parts of `target` with `cut` stored first (each planned with the cuts above it)."""
        parts: dict[str, Part] = {}
        order = self.topological(cut)
        for n, stage in enumerate(order):
            above = {c for c in order[:n] if c in self.upstream(stage, given)}
            for p in self.plan(stage, given | above):
                if p.writes not in parts:
                    if p.writes == stage.name and not p.why:
                        p = Part(p.name, p.graph, p.reads, p.writes, self.reason(stage, target, why))
                    parts[p.writes] = p
        graph, reads, _ = self.attempt(target, given | set(cut))
        return (*parts.values(), self.own(target, graph, reads))

    def reason(self, stage: Tensor, target: Tensor, why: str) -> str:
        """Why `stage` is stored: the kernel of `target` could not also compute it."""
        own = f"{self.graph.name}{PART_INFIX}{target.name}: "
        why = why[len(own):] if why.startswith(own) else why
        why = why.split(": split the operator")[0]  # the advice to split by hand is what this does
        return f"{stage.name} is stored for {target.name}, whose kernel cannot also compute it: {why}"

    def points(self, target: Tensor, given: frozenset[Tensor]) -> list[Tensor]:
        """Where a cut above `target` may go: each anchor above it, moved down its epilogue;
        and each elementwise stage an anchor above it reads (where several anchors join, as
        attention's output joins its two sums before a norm reads it)."""
        found: dict[int, Tensor] = {}
        above = self.upstream(target, given)
        for s in above:
            if s is not target and is_anchor(s):
                point = self.epilogue_end(s, target)
                found.setdefault(id(point), point)
        for s in above:
            if is_anchor(s):
                for t in self.reads_of(s):
                    if not t.is_placeholder and not is_anchor(t) and t not in given:
                        found.setdefault(id(t), t)
        return list(found.values())

    def epilogue_end(self, anchor: Tensor, target: Tensor) -> Tensor:
        """The last stage of `anchor`'s injective epilogue before `target`: follow single
        consumers that are injective, read no other anchor and are no larger."""
        point = anchor
        while True:
            consumers = self.consumers[id(point)]
            if len(consumers) != 1:
                return point
            (nxt,) = consumers
            if nxt is target or is_anchor(nxt) or self.elements(nxt) > self.elements(point):
                return point
            if any(s is not anchor and is_anchor(s) for s in self.upstream(nxt, frozenset({point}))):
                return point
            point = nxt

    def upstream(self, target: Tensor, given: frozenset[Tensor] | set[Tensor]) -> list[Tensor]:
        """The computed stages `target` depends on (itself included), stopping at `given`."""
        key = (id(target), frozenset(id(t) for t in given))
        if key not in self.above:
            self.above[key] = self._upstream(target, given)
        return self.above[key]

    def _upstream(self, target: Tensor, given: frozenset[Tensor] | set[Tensor]) -> list[Tensor]:
        seen: dict[int, Tensor] = {}
        stack = [target]
        while stack:
            t = stack.pop()
            if id(t) in seen or t.is_placeholder or (t in given and t is not target):
                continue
            seen[id(t)] = t
            stack.extend(self.reads_of(t))
        return list(seen.values())

    def topological(self, stages: Iterable[Tensor]) -> list[Tensor]:
        wanted = {id(s) for s in stages}
        return [s for s in self.graph.stages if id(s) in wanted]

    def stage(self, name: str) -> Tensor:
        return next(s for s in self.graph.stages if s.name == name)

    def elements(self, t: Tensor) -> int:
        return math.prod(self.graph.shape_of(t, self.probe_dims))


__all__ = ["MAX_CUT", "PART_INFIX", "Part", "Partition", "dims_of", "extract", "is_anchor", "partition", "reads_of",
           "redirect", "unbound_dims"]
