"""Backward kernels: an operator's gradient steps (`tensorexpr.gradient`) split where the
kernel families need it, each step an `Operator` of its own that tunes and loads like any.

A step's operator is named `<forward>.grad_<input>` (or `<forward>.bwd_<stage>` for a part
computed first), and `resolve_operator` finds it again from that name, so worker processes
and the tuning DB treat it as one more workload.
"""
from __future__ import annotations

from tiletune.kernels.parts import derived_operator, lowers, split_derived_name
from tiletune.tensorexpr.gradient import Backward, Step, gradient
from tiletune.tensorexpr.operator import Graph, Operator

#: How a step's name follows its forward operator's: `matmul.grad_a`, `layernorm.bwd_mean`.
STEP_KINDS = (".grad_", ".bwd_")


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
    return split_derived_name(ref, STEP_KINDS)


def step_operator(forward: Operator, name: str) -> Operator:
    """The operator computing the backward step `name` (`matmul.grad_a`) of `forward`, taking
    the forward's dims and dtype."""

    def graph_of(graph: Graph):
        steps = backward_of(graph).all_steps()
        return next((s.graph for s in steps if s.name == name), None), ", ".join(s.name for s in steps)

    return derived_operator(forward, name, graph_of, kind="backward step")


def step_operators(forward: Operator, dtype: str | None = None) -> list[tuple[Step, Operator]]:
    """Every backward step of `forward` at `dtype`, with its operator."""
    backward = backward_of(forward.graph(dtype))
    return [(step, step_operator(forward, step.name)) for step in backward.all_steps()]


__all__ = ["STEP_KINDS", "backward_of", "lowers", "split_step_name", "step_operator", "step_operators"]
