"""The pattern of an operator as this backend sees it: which op class its one kernel has, and
which stages that kernel materializes (its anchors).

`analyse` picks the class from the stages' classes (`tensorexpr.analysis.stage_class`) and the
recognised structures (a contraction's roles, attention's roles), and refuses the combinations
one kernel cannot hold (a contraction together with row reductions, two scans, windows with
other reductions), naming the stages and what to do.
"""
from __future__ import annotations

from dataclasses import dataclass

from tiletune.errors import LoweringError
from tiletune.tensorexpr.analysis import Contraction, OpClass, find_any_contraction, find_contraction, stage_class
from tiletune.tensorexpr.attention import Attention, find_attention
from tiletune.tensorexpr.operator import Graph
from tiletune.tensorexpr.tensor import Tensor


@dataclass(frozen=True, slots=True, eq=False)
class Pattern:
    """What one operator is, as the backend sees it: its class and its anchor stages.

    Anchors are stages the kernel materializes (a contraction's accumulator, the values of row
    reductions); every other computed stage is injective and is inlined into its consumers.
    """

    op_class: OpClass
    output: Tensor
    anchors: tuple[Tensor, ...]
    contraction: Contraction | None = None
    attention: Attention | None = None

    @property
    def reductions(self) -> tuple[Tensor, ...]:
        """The reduction stages of a reduction operator, in order."""
        return self.anchors if self.op_class is OpClass.REDUCTION else ()


def analyse(graph: Graph) -> Pattern:
    """Classify the operator by its stages; refuse combinations one kernel cannot hold."""
    scan = scan_pattern(graph)
    if scan is not None:
        return scan
    contractions = []
    reductions = []
    windows = []
    for s in graph.stages:
        cls = stage_class(s)
        if cls is OpClass.CONTRACTION:
            contractions.append(s)
        elif cls is OpClass.REDUCTION:
            reductions.append(s)
        elif cls is OpClass.WINDOW:
            windows.append(s)
    if windows:
        return _window_pattern(graph, tuple(windows), contractions + reductions)
    if contractions and (len(contractions) > 1 or reductions):
        attention = find_attention(graph)
        if attention is not None:
            # every stage lives in the one kernel's registers: all of them are anchors
            return Pattern(OpClass.ATTENTION, graph.output, graph.stages, attention=attention)
        names = ", ".join(t.name for t in contractions + reductions)
        raise LoweringError(
            f"{graph.name}: stages {names} are a contraction together with other reductions; "
            "one kernel holds one contraction (with injective prologue and epilogue) or row "
            "reductions: split the operator in two"
        )
    if contractions:
        (c,) = contractions
        return Pattern(OpClass.CONTRACTION, graph.output, (c,), find_any_contraction(c))
    if reductions:
        return Pattern(OpClass.REDUCTION, graph.output, tuple(reductions))
    return Pattern(OpClass.INJECTIVE, graph.output, ())


def _window_pattern(graph: Graph, windows: tuple[Tensor, ...], others: list[Tensor]) -> Pattern:
    if others:
        raise LoweringError(
            f"{graph.name}: windowed reduction {', '.join(t.name for t in windows)} together with "
            f"{'contraction' if find_contraction(others[0]) else 'row reduction'} "
            f"{', '.join(t.name for t in others)}; one kernel holds windowed reductions over the "
            "output's tile or other reductions, not both: split the operator in two"
        )
    if not graph.output.op.axes:
        raise LoweringError(f"{graph.name}: a windowed reduction needs an output with at least one axis to tile")
    return Pattern(OpClass.WINDOW, graph.output, windows)


def scan_pattern(graph: Graph) -> Pattern | None:
    """The pattern of an operator with a scan stage (None without one): one scan, with
    injective producers and consumers only, since one kernel scans rows of one axis."""
    scans = [s for s in graph.stages if s.scan is not None]
    if not scans:
        return None
    others = [s.name for s in graph.stages if s.scan is None and stage_class(s) is not OpClass.INJECTIVE]
    if len(scans) > 1 or others:
        names = ", ".join([s.name for s in scans] + others)
        raise LoweringError(
            f"{graph.name}: stages {names} are a scan together with other scans or reductions; "
            "one kernel holds one scan (with elementwise producers and consumers): split the operator"
        )
    return Pattern(OpClass.SCAN, graph.output, (scans[0],))
