"""Backward kernels: an operator's gradient steps (`tensorexpr.gradient`) split where the
kernel families need it, each step an `Operator` of its own that tunes and loads like any.

A step's operator is named `<forward>.grad_<input>` (or `<forward>.bwd_<stage>` for a part
computed first), and `resolve_operator` finds it again from that name, so worker processes
and the tuning DB treat it as one more workload.
"""
from __future__ import annotations

import inspect

from tiletune.errors import TiletuneError, UsageError
from tiletune.tensorexpr.gradient import Backward, Step, gradient
from tiletune.tensorexpr.operator import Graph, Operator

#: How a step's name follows its forward operator's: `matmul.grad_a`, `layernorm.bwd_mean`.
STEP_KINDS = (".grad_", ".bwd_")


# The dims a derived graph is tried at: odd and large enough for every window and tile rule.
PROBE_EXTENT = 37


def lowers(graph: Graph) -> bool:
    """Whether one kernel of the families holds `graph`: a family takes it, and its default
    config lowers (at probe dims; some refusals come only from the schedule or the emitter)."""
    from tiletune.kernels.families import analyse, family_for
    from tiletune.kernels.lower import lower

    try:
        pattern = analyse(graph)
        family = family_for(graph, pattern)
        schedule = family.default_schedule({n: PROBE_EXTENT for n in graph.dim_names})
        lower(graph, schedule.resolve(schedule.space().default()), pattern)
    except TiletuneError:
        return False
    return True


# Backward derivations by forward graph (graphs are cached per operator and dtype, so this is
# bounded by the operators a process uses).
_BACKWARDS: dict[int, tuple[Graph, Backward]] = {}


def backward_of(forward: Graph) -> Backward:
    """The backward of `forward`, split into steps the families lower."""
    cached = _BACKWARDS.get(id(forward))
    if cached is None or cached[0] is not forward:
        cached = _BACKWARDS[id(forward)] = (forward, gradient(forward, fits=lowers))
    return cached[1]


def split_step_name(ref: str) -> tuple[str, str] | None:
    """(forward reference, step suffix) of a step's name, or None when `ref` names no step."""
    for kind in STEP_KINDS:
        base, sep, rest = ref.rpartition(kind)
        if sep and base and rest and "/" not in rest and ":" not in rest:
            return base, kind[1:] + rest
    return None


# Step operators by (forward operator, step name): one Operator per step, so its graph cache
# (and a loaded op's Task) is built once.
_STEP_OPERATORS: dict[tuple[int, str], tuple[Operator, Operator]] = {}


def step_operator(forward: Operator, name: str) -> Operator:
    """The operator computing the backward step `name` (`matmul.grad_a`) of `forward`, taking
    the forward's dims and dtype."""
    key = (id(forward), name)
    cached = _STEP_OPERATORS.get(key)
    if cached is not None and cached[0] is forward:
        return cached[1]

    def declare(*dims, **kwargs):
        graph = forward.graph(kwargs.get("dtype"))
        for step in backward_of(graph).all_steps():
            if step.name == name:
                return list(step.graph.inputs), step.graph.output
        steps = ", ".join(s.name for s in backward_of(graph).all_steps())
        raise UsageError(f"{forward.name} has no backward step '{name}'; its steps are {steps}")

    params = [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in forward.dim_names]
    if forward.takes_dtype:
        params.append(inspect.Parameter("dtype", inspect.Parameter.KEYWORD_ONLY,
                                        default=forward.default_dtype))
    declare.__signature__ = inspect.Signature(params)
    declare.__name__ = name
    op = Operator(declare, name)
    op.grad_of = forward  # how `operator_ref` names it again
    _STEP_OPERATORS[key] = (forward, op)
    return op


def step_operators(forward: Operator, dtype: str | None = None) -> list[tuple[Step, Operator]]:
    """Every backward step of `forward` at `dtype`, with its operator."""
    backward = backward_of(forward.graph(dtype))
    return [(step, step_operator(forward, step.name)) for step in backward.all_steps()]


__all__ = ["STEP_KINDS", "backward_of", "lowers", "split_step_name", "step_operator", "step_operators"]
