"""Reverse-mode differentiation of an operator's graph into backward graphs in the DSL itself.

`gradient(graph)` walks the stages from the output back to the inputs, as TVM's `te.gradient`
does. Each stage's adjoint is a TE stage over the stage's own shape; a read `t[idx]` in a
stage's body sends `adjoint * d(body)/d(t[idx])` back to `t`:

- where every index of the read is an axis of the stage, the contribution is elementwise over
  `t`'s axes, and the stage's axes that `t` does not have (a broadcast, the reduce axis of a
  sum, the other operand's axis of a contraction) become a sum: the adjoint of a broadcast is a
  reduction, the adjoints of a contraction are contractions with swapped indices;
- an affine window index (`o * s + r - p`) is solved for the output axis, masked where no
  output position reaches the input element; any other index (a constant, a gather `x[t[i]]`,
  an axis read twice) becomes an equality mask.

A sum passes its adjoint to every point of its body; a max or min to the points equal to the
saved result (all of them on a tie); an inclusive cumsum passes the reverse cumsum of its
adjoint. Integer stages carry no gradient; an output that is integer (argmax), a cumprod or
cummax, or integer arithmetic on floats is refused with a `GradientError` naming the stage.

The stages are then split into kernels (`Step`s): each input's gradient is tried as one graph,
and where `fits` refuses it (one kernel cannot hold two anchors, say a reduction feeding an
elementwise feeding another reduction), every reduction or scan under it is computed first by
a kernel of its own and read back. The backward reads the forward's inputs, the output's
gradient and the forward's output (saved by the caller); other forward stages it needs are
recomputed, fused where they fit.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import count
from typing import Callable, Sequence

from tiletune.errors import GradientError
from tiletune.tensorexpr import dtypes as dt
from tiletune.tensorexpr.expr import (
    Binary,
    BinaryOp,
    Cast,
    Compare,
    CompareOp,
    Const,
    DimVar,
    Expr,
    IterVar,
    Logical,
    LogicalOp,
    Read,
    Reduce,
    ReduceOp,
    Scan,
    ScanOp,
    Select,
    Unary,
    UnaryOp,
    as_expr,
    compare,
    logical,
    select,
    substitute,
    unary,
    walk,
)
from tiletune.tensorexpr.operator import Graph
from tiletune.tensorexpr.partition import Part, extract, is_anchor
from tiletune.tensorexpr.tensor import ComputeOp, PlaceholderOp, Tensor, placeholder

#: The value name of the output's gradient in a step's reads: `grad_<output name>`.
GRAD_PREFIX = "grad_"


#: One backward kernel, a `Part`: its graph reads the values named by `reads` (a forward
#: input's name, `grad_<output>`, the forward output's name, or an earlier step's `writes`), in
#: the order of its inputs, and computes the value `writes`. Its name names it as a workload
#: (`matmul.grad_a`; `layernorm.bwd_<stage>` for a part computed first).
Step = Part


@dataclass(frozen=True, slots=True, eq=False)
class Backward:
    """The backward of one forward graph: for each differentiable input, the steps that compute
    its gradient (earlier steps shared between inputs appear in each list, the same object)."""

    forward: Graph
    grads: dict[str, tuple[Step, ...]]
    refused: dict[str, str]  # inputs without a gradient (integer ones) and why

    @property
    def output_grad(self) -> str:
        """The value name of the output's gradient (`grad_<output>`)."""
        return GRAD_PREFIX + self.forward.output.name

    def steps(self, inputs: Sequence[str] | None = None) -> tuple[Step, ...]:
        """The steps computing the gradients of `inputs` (all by default), each once, in order."""
        names = list(self.grads) if inputs is None else list(inputs)
        for name in names:
            if name not in self.grads:
                why = self.refused.get(name, f"it is not an input of {self.forward.name}")
                raise GradientError(f"{self.forward.name}: no gradient for input '{name}': {why}")
        seen: dict[int, Step] = {}
        for name in names:
            for step in self.grads[name]:
                seen.setdefault(id(step), step)
        return tuple(seen.values())

    def all_steps(self) -> tuple[Step, ...]:
        """Every step of every gradient, each once, in an order that runs."""
        return self.steps()


def gradient(graph: Graph, fits: Callable[[Graph], bool] | None = None) -> Backward:
    """The backward graphs of `graph`: for each floating input, the steps computing its gradient
    from the forward inputs, the forward output and the output's gradient.

    `fits(graph)` says whether one kernel can compute a derived graph (the lowering layer passes
    its families' check); without it every gradient is one graph (for the reference evaluator)."""
    out = graph.output
    if not dt.is_float(out.dtype):
        raise GradientError(f"{graph.name}: the output '{out.name}' is {out.dtype}{_kind(out)}; "
                            "only operators with a floating output have a gradient")
    return _Derivation(graph, fits).run()


def _kind(stage: Tensor) -> str:
    root = stage._root()
    if isinstance(root, Reduce):
        return f" (an {root.op})" if root.op in (ReduceOp.ARGMAX, ReduceOp.ARGMIN) else f" (a {root.op})"
    return ""


def _acc_dtype(dtype: str) -> str:
    # adjoints between stages are kept in fp32 (fp64 for fp64 operators), as a kernel's registers
    return "float64" if dt.strong(dtype) == "float64" else "float32"


class _Derivation:
    """One run of `gradient`: the adjoint stages, then the split into steps."""

    def __init__(self, graph: Graph, fits: Callable[[Graph], bool] | None) -> None:
        self.graph = graph
        self.fits = fits
        self.acc = _acc_dtype(graph.output.dtype)
        self.numbers = count()
        self.names = {t.name for t in (*graph.inputs, *graph.stages)}
        out = graph.output
        self.grad_out = placeholder(out.shape, out.dtype, name=GRAD_PREFIX + out.name)
        self.saved_out = placeholder(out.shape, out.dtype, name=out.name)

    def fresh(self, base: str) -> str:
        name = base
        while name in self.names:
            name = f"{base}_{next(self.numbers)}"
        self.names.add(name)
        return name

    # -- adjoints ---------------------------------------------------------------------------

    def run(self) -> Backward:
        graph = self.graph
        contributions: dict[Tensor, list[Tensor]] = {graph.output: []}
        adjoint: dict[Tensor, Tensor] = {}
        for stage in reversed(graph.stages):
            if stage is graph.output:
                adjoint[stage] = self.grad_out
            elif stage in contributions and contributions[stage]:
                adjoint[stage] = self.total(stage, contributions[stage])
            else:
                continue  # no gradient reaches it (it feeds only indices or conditions)
            for tensor, part in self.back(stage, adjoint[stage]):
                contributions.setdefault(tensor, []).append(part)
        grads: dict[str, Tensor] = {}
        refused: dict[str, str] = {}
        for x in graph.inputs:
            if not dt.is_float(x.dtype):
                refused[x.name] = f"it is {x.dtype}; only floating inputs have gradients"
                continue
            parts = contributions.get(x, [])
            grads[x.name] = self.total(x, parts, final=True)
        return Backward(graph, self.split(grads), refused)

    def total(self, tensor: Tensor, parts: list[Tensor], final: bool = False) -> Tensor:
        """The adjoint of `tensor`: the sum of its contributions (zero where none reach it)."""
        dtype = tensor.dtype if final else self.acc
        name = self.fresh(f"grad_{tensor.name}" if final else f"d_{tensor.name}")
        if len(parts) == 1 and not final:
            return parts[0]
        if len(parts) == 1:  # the one contribution, stored in the input's dtype
            part = parts[0]
            return Tensor(name, part.shape, dtype, ComputeOp(part.op.axes, part.op.body.astype(dtype)))

        def body(*axes: IterVar) -> Expr:
            value: Expr = as_expr(0.0)
            for n, part in enumerate(parts):
                value = part[axes] if n == 0 else value + part[axes]
            return value

        return _stage(name, tensor, dtype, body)

    def back(self, stage: Tensor, adj: Tensor) -> list[tuple[Tensor, Tensor]]:
        """The contributions `stage` sends to the tensors it reads, given its adjoint `adj`."""
        if not dt.is_float(stage.dtype):
            return []
        root = stage._root()
        axes = stage.op.axes
        point_axes: tuple[IterVar, ...] = axes
        seed: Expr = adj[axes].astype(self.acc)
        inner = stage.op.body  # with its casts: a cast to an integer stops the gradient
        if isinstance(root, Reduce):
            if root.op in (ReduceOp.ARGMAX, ReduceOp.ARGMIN):
                return []  # an index: no gradient flows through it
            inner = root.body
            point_axes = axes + root.axes
            if root.op in (ReduceOp.MAX, ReduceOp.MIN):
                # the extreme value's gradient goes to the points that reach it (every one on a tie)
                hit = compare(CompareOp.EQ, inner.astype(stage.dtype), stage[axes])
                seed = select(hit, seed, 0.0)
        elif isinstance(root, Scan):
            if root.op is not ScanOp.SUM:
                raise GradientError(f"{self.graph.name}: stage '{stage.name}' is a cum{root.op}; only the "
                                    "cumsum's gradient is derived (cumprod, cummax and cummin are not)")
            inner = root.body
            seed = self.reverse_cumsum(stage, adj, root.axis)[axes]
        partials: dict[Read, Expr] = {}
        self.partials(stage, inner, seed, partials)
        parts = []
        for read, partial in partials.items():
            tensor = read.tensor
            parts.append((tensor, self.contribution(stage, tensor, read, partial, point_axes)))
        return parts

    def reverse_cumsum(self, stage: Tensor, adj: Tensor, axis: IterVar) -> Tensor:
        """G[.., j, ..] = the sum of adj[.., j', ..] over j' >= j, as a cumsum of the reversed
        adjoint read back reversed."""
        pos = stage.op.axes.index(axis)
        extent = stage.shape[pos]

        def flipped(axes: tuple[IterVar, ...], source: Tensor) -> Expr:
            index = list(axes)
            index[pos] = extent - 1 - axes[pos]
            return source[tuple(index)]

        rev = _stage(self.fresh(f"rcumsum_{stage.name}"), stage, self.acc,
                     lambda *ax: Scan(ScanOp.SUM, flipped(ax, adj).astype(self.acc), ax[pos], self.acc))
        return _stage(self.fresh(f"d_{stage.name}_scan"), stage, self.acc, lambda *ax: flipped(ax, rev))

    def partials(self, stage: Tensor, e: Expr, adj: Expr, out: dict[Read, Expr]) -> None:
        """Accumulate into `out` the adjoint of each floating read in `e`, given `e`'s adjoint."""
        if isinstance(e, Read):
            if dt.is_float(e.dtype) and e.tensor is not None:
                out[e] = adj if e not in out else out[e] + adj
            return
        if isinstance(e, (Const, DimVar, IterVar, Compare, Logical)):
            return  # constants, indices and conditions carry no gradient
        if not dt.is_float(e.dtype):
            if isinstance(e, Cast) and dt.is_float(e.x.dtype):
                raise GradientError(f"{self.graph.name}: stage '{stage.name}' casts a floating value to "
                                    f"{e.dtype}; an integer value carries no gradient")
            return
        if isinstance(e, Cast):
            self.partials(stage, e.x, adj, out)
        elif isinstance(e, Select):
            self.partials(stage, e.a, select(e.cond, adj, 0.0), out)
            self.partials(stage, e.b, select(e.cond, 0.0, adj), out)
        elif isinstance(e, Unary):
            self.partials(stage, e.x, _unary_partial(e, adj, self.acc), out)
        elif isinstance(e, Binary):
            for operand, partial in _binary_partials(e, adj, self.acc, self.graph.name, stage.name):
                self.partials(stage, operand, partial, out)
        else:
            raise GradientError(f"{self.graph.name}: stage '{stage.name}' holds a nested "
                                f"{type(e).__name__.lower()}, which has no derived gradient")

    def contribution(self, stage: Tensor, tensor: Tensor, read: Read, partial: Expr,
                     point_axes: tuple[IterVar, ...]) -> Tensor:
        """`partial` (an expression over the stage's points) moved onto `tensor`'s elements:
        each point adds to the element it read; points left over are summed."""
        name = self.fresh(f"d_{tensor.name}_{stage.name}")

        def body(*t: IterVar) -> Expr:
            mapping: dict[Expr, Expr] = {}
            conditions: list[Expr] = []
            pending: list[int] = []
            for d, index in enumerate(read.indices):
                if isinstance(index, IterVar) and index in point_axes and index not in mapping:
                    mapping[index] = t[d]
                else:
                    pending.append(d)
            for d in pending:
                index = read.indices[d]
                if isinstance(index, Const) and _is_one(tensor.shape[d]):
                    continue  # a broadcast dim of extent 1: every point reads its one element
                solved = _solve(index, [a for a in point_axes if a not in mapping], t[d])
                if solved is None:
                    conditions.append(("eq", d, index))
                    continue
                axis, value, conds = solved
                mapping[axis] = value
                conditions.extend(("expr", c) for c in conds)
            free = [a for a in point_axes if a not in mapping]
            sums = [IterVar(f"r_{a.name}", a.extent, "reduce") for a in free]
            mapping.update(zip(free, sums))
            value = _resolve(partial, mapping)
            conds = []
            for c in conditions:
                if c[0] == "eq":
                    conds.append(compare(CompareOp.EQ, t[c[1]], _resolve(c[2], mapping)))
                else:
                    conds.append(_resolve(c[1], mapping))
            if conds:
                cond = conds[0]
                for c in conds[1:]:
                    cond = logical(LogicalOp.AND, cond, c)
                value = select(cond, value, 0.0)
            value = as_expr(value).astype(self.acc)
            return Reduce(ReduceOp.SUM, value, tuple(sums), self.acc) if sums else value

        return _stage(name, tensor, self.acc, body)

    # -- kernels ----------------------------------------------------------------------------

    def split(self, grads: dict[str, Tensor]) -> dict[str, tuple[Step, ...]]:
        """Each gradient as steps: one graph where it fits, else its anchors computed first."""
        self.made: dict[Tensor, Step] = {}
        self.order: list[Step] = []
        result = {}
        for name, stage in grads.items():
            start = len(self.order)
            self.kernel(stage, f"{self.graph.name}.grad_{name}")
            needed = self.closure_steps(self.made[stage])
            result[name] = tuple(s for s in self.order if id(s) in needed)
            del start
        return result

    def closure_steps(self, step: Step) -> set[int]:
        by_writes = {s.writes: s for s in self.order}
        needed: set[int] = set()
        stack = [step]
        while stack:
            s = stack.pop()
            if id(s) in needed:
                continue
            needed.add(id(s))
            stack.extend(by_writes[r] for r in s.reads if r in by_writes)
        return needed

    def kernel(self, target: Tensor, name: str) -> Step:
        """The step computing `target`, fused with as much above it as `fits` accepts: all of
        it; else its nearest anchor with the work between (the anchors behind that computed
        first); else every other anchor computed first; else every stage above it."""
        if target in self.made:
            return self.made[target]
        graph, reads = self.build(target, set(), name)
        if self.fits is not None and not self.fits(graph):
            above = [s for s in self.upstream(target) if s is not target]
            anchors = {s for s in above if is_anchor(s)}
            nearest = self.frontier(target)
            tries = [anchors - nearest] if len(nearest) == 1 and anchors - nearest != anchors else []
            tries += [anchors, set(above)]
            for cut in tries:
                graph, reads = self.build(target, cut, name)
                if self.fits(graph) or cut is tries[-1]:
                    break
            for stage in self.topological(cut):
                self.kernel(stage, f"{self.graph.name}.bwd_{stage.name}")
        step = Step(name, graph, reads, target.name)
        self.made[target] = step
        self.order.append(step)
        return step

    def frontier(self, target: Tensor) -> set[Tensor]:
        """The anchors `target` reaches without passing another anchor (itself, if it is one)."""
        found: set[Tensor] = set()
        seen: set[int] = set()
        stack = [target]
        while stack:
            t = stack.pop()
            if id(t) in seen or self.is_value(t):
                continue
            seen.add(id(t))
            if is_anchor(t):
                found.add(t)
                continue
            stack.extend(n.tensor for n in walk(t.op.body) if isinstance(n, Read))
        return found

    def upstream(self, target: Tensor) -> list[Tensor]:
        """The computed stages `target` depends on (itself included), stopping at values."""
        seen: dict[int, Tensor] = {}
        stack = [target]
        while stack:
            t = stack.pop()
            if id(t) in seen or self.is_value(t):
                continue
            seen[id(t)] = t
            stack.extend(n.tensor for n in walk(t.op.body) if isinstance(n, Read))
        return list(seen.values())

    def topological(self, stages: set[Tensor]) -> list[Tensor]:
        order: list[Tensor] = []
        done: set[int] = set()

        def visit(t: Tensor) -> None:
            if id(t) in done or self.is_value(t):
                return
            done.add(id(t))
            for n in walk(t.op.body):
                if isinstance(n, Read):
                    visit(n.tensor)
            if t in stages:
                order.append(t)

        for s in stages:
            visit(s)
        return order

    def is_value(self, t: Tensor) -> bool:
        # what a step reads rather than computes: inputs, the output's gradient, the saved output
        return t.is_placeholder or t is self.graph.output

    def build(self, target: Tensor, cut: set[Tensor], name: str) -> tuple[Graph, tuple[str, ...]]:
        """A graph computing `target` from values and the `cut` stages (read as inputs)."""

        def value_of(t: Tensor) -> Tensor:
            if t is self.graph.output:
                return self.saved_out
            return t if t.is_placeholder else Tensor(t.name, t.shape, t.dtype, PlaceholderOp())

        return extract(name, self.graph, target, cut, is_value=self.is_value, value_of=value_of)


# ---------------------------------------------------------------------------------------------
# derivatives of one node


def _in(x: Expr, acc: str) -> Expr:
    # forward values enter the adjoint's arithmetic in its dtype (stages may mix fp32 and fp64)
    return x.astype(acc) if dt.is_float(x.dtype) and not dt.is_weak(x.dtype) else x


def _unary_partial(node: Unary, adj: Expr, acc: str) -> Expr:
    x, e = _in(node.x, acc), _in(node, acc)
    op = node.op
    if op is UnaryOp.NEG:
        return -adj
    if op is UnaryOp.EXP:
        return adj * e
    if op is UnaryOp.LOG:
        return adj / x
    if op is UnaryOp.SQRT:
        return adj * 0.5 / e
    if op is UnaryOp.RSQRT:
        return adj * -0.5 * e * e * e
    if op is UnaryOp.TANH:
        return adj * (1.0 - e * e)
    if op is UnaryOp.SIGMOID:
        return adj * e * (1.0 - e)
    if op is UnaryOp.ERF:
        return adj * (2.0 / math.sqrt(math.pi)) * unary(UnaryOp.EXP, -(x * x))
    if op is UnaryOp.ABS:
        # torch's sign: 0 at 0
        return select(compare(CompareOp.GT, x, 0), adj, select(compare(CompareOp.LT, x, 0), -adj, 0.0))
    raise AssertionError(f"no derivative for {op}")  # `not` takes bools, which never reach here


def _binary_partials(e: Binary, adj: Expr, acc: str, graph: str, stage: str) -> list[tuple[Expr, Expr]]:
    op = e.op
    operands = [(e.a, adj), (e.b, adj)]
    a, b = _in(e.a, acc), _in(e.b, acc)
    if op is BinaryOp.ADD:
        return operands
    if op is BinaryOp.SUB:
        return [(e.a, adj), (e.b, -adj)]
    if op is BinaryOp.MUL:
        return [(e.a, adj * b), (e.b, adj * a)]
    if op is BinaryOp.TRUEDIV:
        return [(e.a, adj / b), (e.b, -(adj * a) / (b * b))]
    if op in (BinaryOp.MAXIMUM, BinaryOp.MINIMUM):
        # as torch.maximum/minimum: the winner takes the gradient, a tie splits it evenly
        wins = compare(CompareOp.GT if op is BinaryOp.MAXIMUM else CompareOp.LT, a, b)
        tie = compare(CompareOp.EQ, a, b)
        half = adj * 0.5
        return [(e.a, select(wins, adj, select(tie, half, 0.0))),
                (e.b, select(wins, 0.0, select(tie, half, adj)))]
    raise GradientError(f"{graph}: stage '{stage}' applies {op} to floating values; it has no gradient")


# ---------------------------------------------------------------------------------------------
# helpers


def _stage(name: str, like: Tensor, dtype: str, body: Callable[..., Expr]) -> Tensor:
    """A stage over `like`'s shape (axes named after its own, where it has them)."""
    if isinstance(like.op, ComputeOp):
        names = [a.name for a in like.op.axes]
    else:
        names = [f"i{d}" for d in range(like.ndim)]
    axes = tuple(IterVar(n, s, "spatial") for n, s in zip(names, like.shape))
    value = as_expr(body(*axes))
    if value.dtype != dtype:
        value = value.astype(dtype)
    return Tensor(name, like.shape, dtype, ComputeOp(axes, value))


def _is_one(extent: Expr) -> bool:
    return isinstance(extent, Const) and extent.value == 1


def _resolve(e: Expr, mapping: dict[Expr, Expr]) -> Expr:
    """`e` with the stage's axes replaced, repeatedly (a solved axis may name another)."""
    for _ in range(len(mapping) + 1):
        new = substitute(e, mapping)
        if new == e:
            return new
        e = new
    return e


def _solve(index: Expr, candidates: list[IterVar], t: IterVar):
    """Solve `index == t` for one of `candidates` when `index` is `axis * s + rest` (s >= 1,
    `rest` free of that axis): (axis, its value in t, the conditions that make it exact and in
    range); None when no candidate appears that way."""
    for axis in candidates:
        linear = _linear(index, axis)
        if linear is None:
            continue
        coef, rest = linear
        if coef < 1:
            continue
        gap = t - rest if rest is not None else t
        value = gap if coef == 1 else gap // coef
        conds = [compare(CompareOp.GE, gap, 0), compare(CompareOp.LT, value, axis.extent)]
        if coef != 1:
            conds.insert(1, compare(CompareOp.EQ, gap % coef, 0))
        return axis, value, conds
    return None


def _linear(e: Expr, axis: IterVar) -> tuple[int, Expr | None] | None:
    """(c, rest) with e == axis * c + rest and rest free of `axis`; None when e is not linear in
    it or does not use it."""
    if e is axis:
        return 1, None
    if not any(n is axis for n in walk(e)):
        return None
    if isinstance(e, Binary) and e.op in (BinaryOp.ADD, BinaryOp.SUB):
        left, right = _linear(e.a, axis), _linear(e.b, axis)
        sign = 1 if e.op is BinaryOp.ADD else -1
        if left is not None and right is None and not _uses(e.b, axis):
            c, rest = left
            other = e.b if sign == 1 else -e.b
            return c, other if rest is None else rest + other
        if right is not None and left is None and not _uses(e.a, axis):
            c, rest = right
            rest = None if rest is None else (rest if sign == 1 else -rest)
            return sign * c, e.a if rest is None else e.a + rest
        return None
    if isinstance(e, Binary) and e.op is BinaryOp.MUL:
        for x, k in ((e.a, e.b), (e.b, e.a)):
            if isinstance(k, Const) and isinstance(k.value, int) and not isinstance(k.value, bool):
                inner = _linear(x, axis)
                if inner is not None:
                    c, rest = inner
                    return c * k.value, None if rest is None else rest * k.value
        return None
    return None


def _uses(e: Expr, axis: IterVar) -> bool:
    return any(n is axis for n in walk(e))


__all__ = ["Backward", "GRAD_PREFIX", "Step", "gradient", "is_anchor"]
