"""An operator's kernels: its graph split where one kernel of the families cannot hold it
(`tensorexpr.partition`), each part an `Operator` of its own that tunes, is stored in the
tuning DB and loads like any.

A part's operator is named `<operator>.part_<stage>` (the stage it stores; the last part
stores the output) and `resolve_operator` finds it again from that name, so worker processes
and the tuning DB treat it as one more workload. An operator one kernel holds has one part,
itself. Backward steps (`kernels.backward`) are operators derived the same way.
"""
from __future__ import annotations

import inspect
from typing import Callable

from tiletune.errors import TiletuneError, UsageError
from tiletune.tensorexpr.operator import Graph, Operator
from tiletune.tensorexpr.partition import PART_INFIX, Part, Partition, partition

# The dims a graph is tried at: odd and large enough for every window and tile rule.
PROBE_EXTENT = 37


def refusal(graph: Graph) -> str | None:
    """None when one kernel of the families holds `graph` (a family takes it and its default
    config lowers, at probe dims: some refusals come only from the schedule or the emitter),
    else why not."""
    from tiletune.kernels.families import analyse, family_for
    from tiletune.kernels.lower import lower

    try:
        pattern = analyse(graph)
        family = family_for(graph, pattern)
        schedule = family.default_schedule({n: PROBE_EXTENT for n in graph.dim_names})
        lower(graph, schedule.resolve(schedule.space().default()), pattern)
    except TiletuneError as error:
        return str(error)
    return None


def lowers(graph: Graph) -> bool:
    """Whether one kernel of the families holds `graph`."""
    return refusal(graph) is None


# Partitions by graph (graphs are cached per operator and dtype, so this is bounded by the
# operators a process uses).
_PARTITIONS: dict[int, tuple[Graph, Partition]] = {}


def partition_of(graph: Graph) -> Partition:
    """The kernels computing `graph` (one, itself, when one kernel holds it)."""
    cached = _PARTITIONS.get(id(graph))
    if cached is None or cached[0] is not graph:
        cached = _PARTITIONS[id(graph)] = (graph, partition(graph, refusal))
    return cached[1]


def split_derived_name(ref: str, infixes: tuple[str, ...]) -> tuple[str, str] | None:
    """(operator reference, suffix) of a derived operator's name (`block.part_g` ->
    ("block", "part_g")), or None when `ref` ends in none of `infixes`."""
    for infix in infixes:
        base, sep, rest = ref.rpartition(infix)
        if sep and base and rest and "/" not in rest and ":" not in rest:
            return base, infix[1:] + rest
    return None


def split_part_name(ref: str) -> tuple[str, str] | None:
    """(operator reference, `part_<stage>`) of a part's name, or None when `ref` names none."""
    return split_derived_name(ref, (PART_INFIX,))


# Derived operators by (operator, name): one Operator each, so its graph cache (and a loaded
# op's Task) is built once.
_DERIVED: dict[tuple[int, str], tuple[Operator, Operator]] = {}


def derived_operator(base: Operator, name: str, graph_of: Callable[[Graph], tuple[Graph | None, str]],
                     kind: str = "kernel") -> Operator:
    """The operator `name` whose graph `graph_of(base's graph at a dtype)` derives (None, with
    the names of the `kind`s there are, when it has none), taking `base`'s dims and dtype."""
    key = (id(base), name)
    cached = _DERIVED.get(key)
    if cached is not None and cached[0] is base:
        return cached[1]

    def declare(*dims, **kwargs):
        graph, known = graph_of(base.graph(kwargs.get("dtype")))
        if graph is None:
            raise UsageError(f"{base.name} has no {kind} '{name}'; its {kind}s are {known}")
        return list(graph.inputs), graph.output

    params = [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in base.dim_names]
    if base.takes_dtype:
        params.append(inspect.Parameter("dtype", inspect.Parameter.KEYWORD_ONLY, default=base.default_dtype))
    declare.__signature__ = inspect.Signature(params)
    declare.__name__ = name
    op = Operator(declare, name)
    op.derived_from = base  # how `operator_ref` names it again
    _DERIVED[key] = (base, op)
    return op


def part_operator(base: Operator, name: str) -> Operator:
    """The operator computing the part `name` (`block.part_g`) of `base`."""

    def graph_of(graph: Graph):
        parts = partition_of(graph).parts
        found = next((p.graph for p in parts if p.name == name), None)
        return found, ", ".join(p.name for p in parts)

    return derived_operator(base, name, graph_of)


def parts(operator: Operator, dtype: str | None = None) -> list[tuple[Part, Operator]]:
    """The kernels of `operator` at `dtype`, in the order they run, each with its operator
    (the operator itself when one kernel holds it)."""
    found = partition_of(operator.graph(dtype))
    if found.fused:
        return [(found.parts[0], operator)]
    return [(p, part_operator(operator, p.name)) for p in found.parts]


def is_split(operator: Operator, dtype: str | None = None) -> bool:
    """Whether `operator` runs as several kernels (False also when its graph cannot be built
    at `dtype`: the caller's own checks say why)."""
    try:
        return not partition_of(operator.graph(dtype)).fused
    except TiletuneError:
        return False


__all__ = ["PROBE_EXTENT", "derived_operator", "is_split", "lowers", "part_operator", "partition_of", "parts",
           "refusal", "split_derived_name", "split_part_name"]
