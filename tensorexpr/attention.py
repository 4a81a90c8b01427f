"""Recognising scaled dot-product attention among an operator's stages.

Attention is two contractions with a softmax between them, which no single-contraction kernel
holds. `find_attention` inlines every stage of the operator into its output (reductions become
`Reduce` nodes) and matches the result against

    o[batch, i, e] = sum_j P(i, j) * v[batch, j, e] / sum_j P(i, j)
    P(i, j)        = exp(S(i, j) - max_j S(i, j))
    S(i, j)        = scale * sum_d q[batch, i, d] * k[batch, j, d]     (optionally masked:
                     te.where(cond(i, j), S, -inf))

in the forms people write it: the scale on the score stage or inside its sum, the division by
the row sum before or after the second contraction, casts anywhere (they are rounding, not
structure). The max and the sum must be taken over the very scores and probabilities the
numerator uses (compared up to the names of reduce axes).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

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
    Read,
    Reduce,
    ReduceOp,
    Select,
    Unary,
    UnaryOp,
    axes_of,
    children,
    rebuild,
    substitute,
    walk,
)
from tiletune.tensorexpr.operator import Graph


@dataclass(frozen=True, slots=True, eq=False)
class Attention:
    """The roles of an attention operator, in terms of its output's axes.

    `q`, `k`, `v` are the reads (casts kept) of the three inputs; `i` is the query axis, `e`
    the value's head axis (both output axes), `j` the key axis and `d` the head axis the scores
    contract over (reduce axes). `scale` is an expression free of axes; `mask` the condition
    where a score is kept (None: all are), `causal` true when that condition is `j <= i`.
    """

    q: Expr
    k: Expr
    v: Expr
    batch: tuple[IterVar, ...]
    i: IterVar
    j: IterVar
    d: IterVar
    e: IterVar
    scale: Expr
    mask: Expr | None
    causal: bool


def find_attention(graph: Graph) -> Attention | None:
    """The attention roles of `graph`, or None if its output is not attention."""
    out = graph.output
    if out.reduction is not None and out.reduction.op is not ReduceOp.SUM:
        return None
    body = _strip(_inline_all(out.op.body))
    parts = _split_output(body)
    if parts is None:
        return None
    j, p, v, rowsum = parts
    if not (isinstance(rowsum, Reduce) and rowsum.op is ReduceOp.SUM and len(rowsum.axes) == 1):
        return None
    if not _alpha_eq(rowsum.body, p, {rowsum.axes[0]: j}):
        return None  # divided by something else than the sum of the probabilities
    if not (isinstance(p, Unary) and p.op is UnaryOp.EXP and isinstance(p.x, Binary) and p.x.op is BinaryOp.SUB):
        return None
    score, row_max = p.x.a, p.x.b
    if not (isinstance(row_max, Reduce) and row_max.op is ReduceOp.MAX and len(row_max.axes) == 1):
        return None
    if not _alpha_eq(row_max.body, score, {row_max.axes[0]: j}):
        return None
    mask = None
    if isinstance(score, Select):
        if _is_neg_inf(score.b):
            mask, score = score.cond, score.a
        elif _is_neg_inf(score.a):
            mask, score = Unary(UnaryOp.NOT, score.cond, "bool"), score.b
        else:
            return None
    scale_factors, reduces = _factors(score)
    if len(reduces) != 1:
        return None
    (qk,) = reduces
    if not isinstance(qk, Reduce) or qk.op is not ReduceOp.SUM or len(qk.axes) != 1:  # a read of stored scores
        return None
    (d,) = qk.axes
    inner_scale, terms = _factors(qk.body)
    if len(terms) != 2:
        return None
    roles = _roles(graph, j, d, terms, v)
    if roles is None:
        return None
    q, k, batch, i, e = roles
    if mask is not None and not axes_of(mask) <= {i, j, *batch}:
        return None
    scale = _product(scale_factors + inner_scale)
    causal = mask is not None and _is_causal(mask, i, j)
    return Attention(q, k, v, batch, i, j, d, e, scale, mask, causal)


def _split_output(body: Expr) -> tuple[IterVar, Expr, Expr, Expr] | None:
    """(j, P, v, row sum) of `sum_j P * v / L` or `(sum_j P * v) / L`, else None."""
    if isinstance(body, Binary) and body.op is BinaryOp.TRUEDIV and isinstance(body.a, Reduce):
        numerator, rowsum = body.a, body.b
        if numerator.op is not ReduceOp.SUM or len(numerator.axes) != 1:
            return None
        scale, varying = _factors(numerator.body)
        if scale or len(varying) != 2:
            return None
        j = numerator.axes[0]
        pv = _p_and_v(varying, j)
        return None if pv is None else (j, pv[0], pv[1], rowsum)
    if isinstance(body, Reduce) and body.op is ReduceOp.SUM and len(body.axes) == 1:
        (j,) = body.axes
        flat = _flatten(body.body)
        if flat is None:
            return None
        numer, denom = flat
        if len(denom) != 1 or len(numer) != 2:
            return None
        pv = _p_and_v(numer, j)
        return None if pv is None else (j, pv[0], pv[1], denom[0])
    return None


def _p_and_v(pair: list[Expr], j: IterVar) -> tuple[Expr, Expr] | None:
    a, b = pair
    for p, v in ((a, b), (b, a)):
        if isinstance(p, Unary) and p.op is UnaryOp.EXP and isinstance(v, Read):
            return p, v
    return None


def _roles(graph: Graph, j: IterVar, d: IterVar, terms: list[Expr], v: Expr):
    """(q, k, batch, i, e) from the score's two factors and the value read, else None."""
    out_axes = graph.output.op.axes
    for q, k in (terms, terms[::-1]):
        if not (isinstance(q, Read) and isinstance(k, Read)):
            return None
        aq, ak, av = axes_of(q), axes_of(k), axes_of(v)
        if j in aq or j not in ak or d not in aq or d not in ak:
            continue
        query = [a for a in aq - ak if a in out_axes]
        head = [a for a in av - aq - ak if a in out_axes]
        if len(query) != 1 or len(head) != 1 or d in av or j not in av:
            return None
        (i,), (e,) = query, head
        batch = tuple(a for a in out_axes if a not in (i, e))
        if aq - {d, i} - set(batch) or ak - {d, j} - set(batch) or av - {j, e} - set(batch):
            return None
        if i in ak or i in av or e in aq or e in ak:
            return None
        return q, k, batch, i, e
    return None


def _is_causal(mask: Expr, i: IterVar, j: IterVar) -> bool:
    """True for `j <= i` in any of its spellings (`i >= j`, `~(j > i)`, `~(i < j)`)."""
    if isinstance(mask, Compare):
        return (mask.op, mask.a, mask.b) in ((CompareOp.LE, j, i), (CompareOp.GE, i, j))
    if isinstance(mask, Unary) and mask.op is UnaryOp.NOT and isinstance(mask.x, Compare):
        c = mask.x
        return (c.op, c.a, c.b) in ((CompareOp.GT, j, i), (CompareOp.LT, i, j))
    return False


# --- expression helpers -----------------------------------------------------------------------


def _inline_all(e: Expr) -> Expr:
    """`e` with every computed stage's read replaced by its body at the read's indices
    (a reduction stage becomes a `Reduce` node over its own reduce axes)."""
    mapping: dict[Expr, Expr] = {}
    for node in walk(e):
        if isinstance(node, Read) and node not in mapping and not node.tensor.is_placeholder:
            t = node.tensor
            mapping[node] = _inline_all(substitute(t.op.body, dict(zip(t.op.axes, node.indices))))
    return substitute(e, mapping) if mapping else e


def _strip(e: Expr) -> Expr:
    """`e` without casts anywhere: for recognising structure, rounding does not matter."""
    while isinstance(e, Cast):
        e = e.x
    kids = children(e)
    if not kids or isinstance(e, Read):
        return e
    new = tuple(_strip(k) for k in kids)
    return e if new == kids else rebuild(e, new)


def _flatten(e: Expr) -> tuple[list[Expr], list[Expr]] | None:
    """The factors of a product/quotient: (numerator factors, denominator factors)."""
    if isinstance(e, Binary) and e.op is BinaryOp.MUL:
        a, b = _flatten(e.a), _flatten(e.b)
        return None if a is None or b is None else (a[0] + b[0], a[1] + b[1])
    if isinstance(e, Binary) and e.op is BinaryOp.TRUEDIV:
        a, b = _flatten(e.a), _flatten(e.b)
        return None if a is None or b is None else (a[0] + b[1], a[1] + b[0])
    return [e], []


def _factors(e: Expr) -> tuple[list[Expr], list[Expr]]:
    """(axis-free factors as a list of scale expressions, the factors that vary) of a product;
    a varying factor in a denominator makes everything vary (the caller then refuses)."""
    numer, denom = _flatten(e)
    scale: list[Expr] = []
    varying: list[Expr] = []
    for f in numer:
        (varying if _varies(f) else scale).append(f)
    for f in denom:
        if _varies(f):
            varying.extend([f, f])  # never a clean match
        else:
            scale.append(Binary(BinaryOp.TRUEDIV, Const(1.0, dt.WEAK_FLOAT), f, dt.WEAK_FLOAT))
    return scale, varying


def _varies(e: Expr) -> bool:
    return any(isinstance(n, (IterVar, Read, Reduce)) for n in walk(e))


def _product(factors: list[Expr]) -> Expr:
    result: Expr = Const(1.0, dt.WEAK_FLOAT)
    for f in factors:
        result = f if isinstance(result, Const) and result.value == 1.0 else Binary(BinaryOp.MUL, result, f, dt.WEAK_FLOAT)
    return result


def _is_neg_inf(e: Expr) -> bool:
    if isinstance(e, Unary) and e.op is UnaryOp.NEG:
        return isinstance(e.x, Const) and e.x.value == math.inf
    return isinstance(e, Const) and not isinstance(e.value, bool) and e.value == -math.inf


def _alpha_eq(a: Expr, b: Expr, env: dict[IterVar, IterVar]) -> bool:
    """`a` equals `b` once `a`'s axes are renamed by `env` (reduce axes pair up as they bind)."""
    if isinstance(a, IterVar):
        return env.get(a, a) is b
    if type(a) is not type(b):
        return False
    if isinstance(a, Reduce):
        if a.op != b.op or len(a.axes) != len(b.axes):
            return False
        if any(x.extent != y.extent for x, y in zip(a.axes, b.axes)):
            return False
        return _alpha_eq(a.body, b.body, {**env, **dict(zip(a.axes, b.axes))})
    if isinstance(a, Read):
        return a.tensor is b.tensor and len(a.indices) == len(b.indices) and all(
            _alpha_eq(x, y, env) for x, y in zip(a.indices, b.indices))
    if isinstance(a, (Const, DimVar)):
        return a == b
    for f in fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, Expr):
            if not _alpha_eq(x, y, env):
                return False
        elif x != y:
            return False
    return True
