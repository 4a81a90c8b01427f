"""A seeded random generator of fuzz programs covering every construct of the DSL.

`generate(seed)` draws one program (see `program.py` for the format) from one of the
templates below, each a family of constructs the DSL accepts: injective graphs with
broadcasting of rank 1 to 4 (and transposed reads), reductions over one or several axes with
fused producers and consumers (argmax and argmin too), contractions with every operand layout,
batch axes, prologues and epilogues, windowed reads (pooling and depthwise-conv-like affine
indices through `pad_read`), scans, gathers through an index tensor, `where` and casts between
float32, float16 and bfloat16. Extents mix 1, primes and sizes just around the tile sizes, under
an element budget that keeps Triton's interpreter fast. The same seed gives the same program.

Values are generated with a magnitude bound so that no program overflows float16 or takes the
log of a negative: a mismatch then means a wrong kernel, not a program outside its domain.
Conditions of `where` compare raw input reads (exact in both worlds), so rounding never flips a
branch; argmax and argmin reduce raw reads for the same reason (ties are broken by index, which
the kernel must get right).
"""
from __future__ import annotations

import json
import math
import random
from typing import Callable

from tiletune.kernels.fuzz.program import VERSION, Program, nodes

FLOATS = ("float32", "float16", "bfloat16")
SMALL_SIZES = (1, 2, 3, 4, 5, 7, 8, 11, 13)
EDGE_SIZES = (15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129)
# Elements of any one tensor: the interpreter runs each program instance in numpy, so a pair
# stays well under a second.
ELEMENT_BUDGET = 256
BOUND_LIMIT = 1000.0  # largest magnitude a generated value may reach (float16 holds 65504)


class _Builder:
    """The program under construction: dims, inputs, stages and the rng."""

    def __init__(self, rng: random.Random, kind: str, seed: int) -> None:
        self.rng = rng
        self.dims: dict[str, int] = {}
        self.inputs: list[dict] = []
        self.stages: list[dict] = []
        self.name = f"fz_{kind}_{seed}"

    def dim(self, budget: int = ELEMENT_BUDGET, lo: int = 1) -> str:
        """A new dim of a size drawn from SMALL_SIZES or EDGE_SIZES, at most `budget`."""
        pool = EDGE_SIZES if self.rng.random() < 0.4 else SMALL_SIZES
        fits = [s for s in pool if lo <= s <= budget] or [s for s in SMALL_SIZES if lo <= s <= max(budget, lo)] or [lo]
        name = f"D{len(self.dims)}"
        self.dims[name] = self.rng.choice(fits)
        return name

    def dims_for(self, rank: int, budget: int = ELEMENT_BUDGET) -> list[str]:
        """`rank` new dims whose product stays within `budget`."""
        names = []
        for _ in range(rank):
            name = self.dim(budget)
            budget = max(1, budget // self.dims[name])
            names.append(name)
        self.rng.shuffle(names)
        return names

    def input(self, shape: list, dtype: str, prefix: str = "x", domain: list | None = None) -> str:
        name = f"{prefix}{len(self.inputs)}"
        self.inputs.append({"name": name, "shape": list(shape), "dtype": dtype, "domain": domain})
        return name

    def stage(self, shape: list, axes: list[str], body: list, reduce_axes: list | None = None) -> str:
        name = f"s{len(self.stages)}"
        self.stages.append({"name": name, "shape": list(shape), "axes": list(axes),
                            "reduce_axes": reduce_axes or [], "body": body})
        return name

    def dtype(self) -> str:
        return self.rng.choice(FLOATS)

    def program(self) -> Program:
        return {"version": VERSION, "name": self.name, "dims": dict(self.dims),
                "inputs": self.inputs, "stages": self.stages}


# -- values ---------------------------------------------------------------------------------

Leaf = tuple[list, float, bool, str]  # (expression, magnitude bound, exact: a raw input read, dtype)


def _value(b: _Builder, leaves: list[Leaf], depth: int) -> tuple[list, float, str]:
    """A random elementwise expression over `leaves`, its magnitude bound and its dtype."""
    rng = b.rng
    if depth <= 0 or rng.random() < 0.25:
        expr, bound, _, dtype = rng.choice(leaves)
        return expr, bound, dtype
    kind = rng.choice(("bin", "bin", "bin", "un", "un", "where", "cast", "const"))
    if kind == "const":
        a, bound, dtype = _value(b, leaves, depth - 1)
        c = rng.choice((0.5, 2.0, -1.5, 3.0))
        op = rng.choice(("add", "mul", "sub"))
        expr = ["bin", op, a, ["const", c]] if rng.random() < 0.5 else ["bin", op, ["const", c], a]
        return expr, _combine(op, bound, abs(c)), dtype
    if kind == "bin":
        a, ba, da = _value(b, leaves, depth - 1)
        c, bc, dc = _value(b, leaves, depth - 1)
        a, c, dtype = _unify(rng, a, da, c, dc)
        op = rng.choice(("add", "sub", "mul", "maximum", "minimum", "truediv"))
        if op == "truediv":  # divide by |c| + 1: never by zero
            return ["bin", "truediv", a, ["bin", "add", ["un", "abs", c], ["const", 1.0]]], ba, dtype
        bound = _combine(op, ba, bc)
        if bound > BOUND_LIMIT:
            return ["bin", "maximum", a, c], max(ba, bc), dtype
        return ["bin", op, a, c], bound, dtype
    if kind == "un":
        a, ba, dtype = _value(b, leaves, depth - 1)
        op = rng.choice(("neg", "abs", "tanh", "sigmoid", "erf", "exp", "sqrt", "log", "rsqrt"))
        if op == "exp" and ba > 5.0:
            op = "tanh"
        if op in ("neg", "abs"):
            return ["un", op, a], ba, dtype
        if op in ("tanh", "sigmoid", "erf"):
            return ["un", op, a], 1.0, dtype
        if op == "exp":
            return ["un", "exp", a], math.exp(ba), dtype
        if op == "sqrt":
            return ["un", "sqrt", ["un", "abs", a]], math.sqrt(ba), dtype
        if op == "log":
            return ["un", "log", ["bin", "add", ["un", "abs", a], ["const", 1.0]]], math.log1p(ba), dtype
        return ["un", "rsqrt", ["bin", "add", ["un", "abs", a], ["const", 1.0]]], 1.0, dtype
    if kind == "where":
        exact = [leaf for leaf in leaves if leaf[2]]
        if not exact:
            return _value(b, leaves, depth - 1)
        cond = ["cmp", rng.choice(("lt", "le", "gt", "ge")), rng.choice(exact)[0], ["const", rng.choice((0.0, 0.5, -0.5))]]
        a, ba, da = _value(b, leaves, depth - 1)
        c, bc, dc = _value(b, leaves, depth - 1)
        a, c, dtype = _unify(rng, a, da, c, dc)
        return ["where", cond, a, c], max(ba, bc), dtype
    a, ba, _ = _value(b, leaves, depth - 1)
    dtype = b.dtype()
    return ["cast", dtype, a], ba, dtype


def _unify(rng: random.Random, a: list, da: str, c: list, dc: str) -> tuple[list, list, str]:
    """Both operands in one dtype (the DSL refuses mixed float types): one cast to the other's
    type, or both to float32."""
    if da == dc:
        return a, c, da
    choice = rng.choice((da, dc, "float32"))
    cast = lambda e, d: e if d == choice else ["cast", choice, e]  # noqa: E731
    return cast(a, da), cast(c, dc), choice


def _combine(op: str, a: float, b: float) -> float:
    return a * b if op == "mul" else a + b if op in ("add", "sub") else max(a, b)


def _read(name: str, idx: list) -> list:
    return ["read", name, idx]


def _axis(name: str) -> list:
    return ["axis", name]


INPUT_BOUND = 5.0  # |randn| over a few thousand draws


# -- templates ------------------------------------------------------------------------------

def injective(b: _Builder) -> None:
    """Elementwise graphs with broadcasting of rank 1-4, transposed reads, an optional fused
    producer stage, `where` and casts."""
    rng = b.rng
    rank = rng.randint(1, 4)
    dims = b.dims_for(rank)
    axes = [f"i{n}" for n in range(rank)]
    leaves: list[Leaf] = []
    for _ in range(rng.randint(1, 3)):
        r = rng.randint(1, rank)
        lead = rank - r
        if r == rank and r >= 2 and rng.random() < 0.25:
            perm = list(range(rank))
            rng.shuffle(perm)
            shape, idx = [dims[p] for p in perm], [_axis(axes[p]) for p in perm]
        else:
            ones = [rng.random() < 0.3 for _ in range(r)]
            shape = [1 if one else dims[lead + k] for k, one in enumerate(ones)]
            idx = [["const", 0] if one else _axis(axes[lead + k]) for k, one in enumerate(ones)]
        dtype = b.dtype()
        name = b.input(shape, dtype)
        leaves.append((_read(name, idx), INPUT_BOUND, True, dtype))
    if rng.random() < 0.4:
        body, bound, dtype = _value(b, leaves, 2)
        producer = b.stage(dims, axes, body)
        leaves.append((_read(producer, [_axis(a) for a in axes]), bound, False, dtype))
    body, _, _ = _value(b, leaves, 3)
    b.stage(dims, axes, ["cast", b.dtype(), body])


def reduction(b: _Builder) -> None:
    """Sum, max, min, argmax or argmin over one or several axes (not only the last), with an
    optional producer stage and a consumer: a map of the result, or a read back at the input's
    shape (softmax-like)."""
    rng = b.rng
    rank = rng.randint(1, 4)
    dims = b.dims_for(rank)
    reduced = sorted(rng.sample(range(rank), rng.randint(1, rank)))
    kept = [k for k in range(rank) if k not in reduced]
    x_dtype = b.dtype()
    x = b.input(dims, x_dtype)
    full = [_axis(f"i{k}") if k in kept else _axis(f"r{k}") for k in range(rank)]
    op = rng.choice(("sum", "sum", "max", "min", "argmax", "argmin"))
    leaves: list[Leaf] = [(_read(x, full), INPUT_BOUND, True, x_dtype)]
    if rng.random() < 0.4:
        y_dtype = b.dtype()
        y = b.input(dims[-1:] if rank and rng.random() < 0.5 else dims, y_dtype)
        idx = full[-1:] if len(b.inputs[-1]["shape"]) == 1 else full
        leaves.append((_read(y, idx), INPUT_BOUND, True, y_dtype))
    if op.startswith("arg"):
        value = _read(x, full) if rng.random() < 0.7 else ["cast", "float32", _read(x, full)]
        dtype = x_dtype
    elif rng.random() < 0.4:
        spatial = [_axis(f"i{k}") for k in range(rank)]
        renamed = [(_read(leaf[0][1], _rename(leaf[0][2], full, spatial)), *leaf[1:]) for leaf in leaves]
        body, _, dtype = _value(b, renamed, 2)
        producer = b.stage(dims, [f"i{k}" for k in range(rank)], body)
        value = _read(producer, full)
    else:
        value, _, dtype = _value(b, leaves, 2)
    if not all(f'"r{k}"' in json.dumps(value) for k in reduced):  # the body must use every reduce axis
        xa, va, dtype = _unify(rng, _read(x, full), x_dtype, value, dtype)
        value = ["bin", "add", xa, va]
    s = b.stage([dims[k] for k in kept], [f"i{k}" for k in kept],
                ["reduce", op, [f"r{k}" for k in reduced], value], [[f"r{k}", dims[k]] for k in reduced])
    kept_idx = [_axis(f"i{k}") for k in kept]
    epilogue = rng.choice(("none", "map", "back")) if not op.startswith("arg") else rng.choice(("none", "map"))
    if epilogue == "map":
        count = math.prod(b.dims[dims[k]] for k in reduced)
        if op.startswith("arg"):
            body = ["cast", b.dtype(), ["bin", "mul", _read(s, kept_idx), ["const", 0.5]]]
        else:
            body = ["cast", b.dtype(), rng.choice((
                ["bin", "truediv", _read(s, kept_idx), ["const", float(count)]],
                ["un", "sqrt", ["un", "abs", _read(s, kept_idx)]],
                ["bin", "mul", _read(s, kept_idx), ["const", -2.0]],
            ))]
        b.stage([dims[k] for k in kept], [f"i{k}" for k in kept], body)
    elif epilogue == "back":
        spatial = [_axis(f"i{k}") for k in range(rank)]
        back = _read(s, kept_idx)
        xs, back, _ = _unify(rng, _read(x, spatial), x_dtype, back, dtype)
        diff = ["bin", "sub", xs, back]
        if op == "sum":
            body = ["bin", "truediv", xs, ["bin", "add", ["un", "abs", back], ["const", 1.0]]]
        else:
            body = ["un", "exp", diff] if op == "max" else diff
        b.stage(dims, [f"i{k}" for k in range(rank)], ["cast", b.dtype(), body])


def _rename(idx: list, full: list, spatial: list) -> list:
    """Index list `idx` (written with the reduction's axes) rewritten over the spatial axes."""
    mapping = {str(f): s for f, s in zip(full, spatial)}
    return [mapping.get(str(i), i) for i in idx]


def contraction(b: _Builder) -> None:
    """A sum of products over K with either layout of each operand, 0-2 batch axes (the second
    operand batched or shared), casts of the operands, an optional prologue on A and an
    optional epilogue (bias, activation, cast)."""
    rng = b.rng
    batch = b.dims_for(rng.choice((0, 0, 1, 2)), budget=4)
    m, n, k = b.dim(64), b.dim(64), b.dim(64)
    while b.dims[m] * b.dims[k] > ELEMENT_BUDGET or b.dims[n] * b.dims[k] > ELEMENT_BUDGET:
        b.dims[k] = max(1, b.dims[k] // 2)
    dtype = b.dtype()
    bax = [f"b{z}" for z in range(len(batch))]
    a_t, b_t = rng.random() < 0.5, rng.random() < 0.5
    a_shape = batch + ([k, m] if a_t else [m, k])
    a_idx = [_axis(z) for z in bax] + ([_axis("k"), _axis("i")] if a_t else [_axis("i"), _axis("k")])
    shared = bool(batch) and rng.random() < 0.3
    bb = [] if shared else batch
    b_shape = bb + ([n, k] if b_t else [k, n])
    b_idx = ([] if shared else [_axis(z) for z in bax]) + ([_axis("j"), _axis("k")] if b_t else [_axis("k"), _axis("j")])
    a = b.input(a_shape, dtype, "a")
    w = b.input(b_shape, dtype, "w")
    if rng.random() < 0.25:
        axes = [f"p{z}" for z in range(len(a_shape))]
        a = b.stage(a_shape, axes, ["cast", dtype, ["bin", "mul", _read(a, [_axis(p) for p in axes]), ["const", 0.5]]])
    left, right = _read(a, a_idx), _read(w, b_idx)
    if rng.random() < 0.2:
        left, right = ["cast", "float32", left], ["cast", "float32", right]
    out_shape = batch + [m, n]
    out_axes = bax + ["i", "j"]
    c = b.stage(out_shape, out_axes, ["reduce", "sum", ["k"], ["bin", "mul", left, right]], [["k", k]])
    if rng.random() < 0.6:
        value = _read(c, [_axis(z) for z in out_axes])
        c_dtype = "float32" if left[0] == "cast" else dtype
        if rng.random() < 0.5:
            bias_dtype = b.dtype()
            bias = b.input([n], bias_dtype, "bias")
            value = ["bin", "add", *_unify(rng, value, c_dtype, _read(bias, [_axis("j")]), bias_dtype)[:2]]
        act = rng.choice(("none", "tanh", "relu", "sigmoid"))
        if act == "relu":
            value = ["bin", "maximum", value, ["const", 0.0]]
        elif act != "none":
            value = ["un", act, value]
        b.stage(out_shape, out_axes, ["cast", rng.choice((dtype, "float32")), value])


def window(b: _Builder) -> None:
    """Pooling-like reads at `o * stride + r * dilation - padding` through `pad_read`: max or
    sum over a 1-D or 2-D window, an optional average, and depthwise weights."""
    rng = b.rng
    nd = rng.choice((1, 2))
    n, c = b.dim(4), b.dim(4)
    geometry = []
    for _ in range(nd):
        k, s, d = rng.randint(1, 4), rng.randint(1, 3), rng.choice((1, 1, 2))
        p = rng.randint(0, k // 2)
        size = b.dim(33 if nd == 1 else 13, lo=max(1, d * (k - 1) + 1 - 2 * p))
        geometry.append((size, k, s, p, d))
    kind = rng.choice(("max", "sum", "avg", "depthwise"))
    dtype = b.dtype()
    x = b.input([n, c] + [g[0] for g in geometry], dtype)
    outs, idx = [], []
    for q, (size, k, s, p, d) in enumerate(geometry):
        shift = 2 * p - d * (k - 1) - 1
        outs.append(["bin", "add", size, shift + 1] if s == 1 else
                    ["bin", "add", ["bin", "floordiv", ["bin", "add", size, shift], s], 1])
        o, r = _axis(f"o{q}"), _axis(f"r{q}")
        idx.append(["bin", "sub", ["bin", "add", ["bin", "mul", o, s], ["bin", "mul", r, d]], p])
    axes = ["n", "c"] + [f"o{q}" for q in range(nd)]
    spatial = [_axis("n"), _axis("c")] + idx
    reduce_axes = [[f"r{q}", g[1]] for q, g in enumerate(geometry)]
    rnames = [f"r{q}" for q in range(nd)]
    shape = [n, c] + outs
    if kind == "max":
        b.stage(shape, axes, ["reduce", "max", rnames, ["pad", x, spatial, float("-inf")]], reduce_axes)
        return
    value = ["pad", x, spatial, 0.0]
    if kind == "depthwise":
        w = b.input([c] + [g[1] for g in geometry], dtype, "w")
        value = ["bin", "mul", value, _read(w, [_axis("c")] + [_axis(r) for r in rnames])]
    total = b.stage(shape, axes, ["reduce", "sum", rnames, value], reduce_axes)
    if kind == "avg" or rng.random() < 0.3:
        count = math.prod(g[1] for g in geometry)
        b.stage(shape, axes, ["cast", dtype, ["bin", "truediv", _read(total, [_axis(a) for a in axes]), ["const", float(count)]]])


def scan(b: _Builder) -> None:
    """An inclusive sum, product, max or min scan along any axis of a rank 1-4 tensor, of an
    elementwise producer, with an optional consumer."""
    rng = b.rng
    rank = rng.randint(1, 4)
    dims = b.dims_for(rank)
    axis = rng.randrange(rank)
    op = rng.choice(("sum", "sum", "prod", "max", "min"))
    axes = [f"i{k}" for k in range(rank)]
    idx = [_axis(a) for a in axes]
    if op == "prod":  # products of factors near 1 stay finite over any length
        b.dims[dims[axis]] = min(b.dims[dims[axis]], 33)
        x = b.input(dims, b.dtype(), domain=[0.8, 1.25])
        value = _read(x, idx)
    else:
        x_dtype = b.dtype()
        x = b.input(dims, x_dtype)
        leaves: list[Leaf] = [(_read(x, idx), INPUT_BOUND, True, x_dtype)]
        if rng.random() < 0.3:
            y_dtype = b.dtype()
            y = b.input(dims[-1:], y_dtype)
            leaves.append((_read(y, idx[-1:]), INPUT_BOUND, True, y_dtype))
        value, _, dtype = _value(b, leaves, 1)
        if _read(x, idx) not in list(nodes(value)):  # the scan must run along x's axis
            xa, va, _ = _unify(rng, _read(x, idx), x_dtype, value, dtype)
            value = ["bin", "add", va, xa]
        if rng.random() < 0.3:
            value = _read(b.stage(dims, axes, value), idx)
    s = b.stage(dims, axes, ["scan", op, axes[axis], value])
    if rng.random() < 0.3:
        b.stage(dims, axes, ["cast", b.dtype(), ["bin", "mul", _read(s, idx), ["const", 0.5]]])
    elif rng.random() < 0.3:
        b.stages[-1]["body"] = ["cast", b.dtype(), b.stages[-1]["body"]]


def gather(b: _Builder) -> None:
    """Reads through an index tensor (a row gather x[n, t[n]], an embedding lookup w[t[n], d],
    or a sum over a gather), masked where the index is -1 as the losses do."""
    rng = b.rng
    kind = rng.choice(("row", "embedding", "total"))
    n, v = b.dim(64), b.dim(64)
    dtype = b.dtype()
    t = b.input([n], rng.choice(("int64", "int32")), "t")
    tn = _read(t, [_axis("i")])
    ok = ["cmp", "ge", tn, ["const", 0]]
    if kind == "embedding":
        d = b.dim(16)
        w = b.input([v, d], dtype, "w")
        b.stage([n, d], ["i", "j"], ["cast", b.dtype(), ["where", ok, _read(w, [tn, _axis("j")]), ["const", 0.0]]])
        return
    x = b.input([n, v], dtype)
    picked = ["where", ok, _read(x, [_axis("i"), tn]), ["const", 0.0]]
    if kind == "row":
        b.stage([n], ["i"], ["cast", b.dtype(), ["bin", "mul", picked, ["const", -1.0]]])
        return
    total_idx = [_axis("r"), ["read", t, [_axis("r")]]]
    masked = ["where", ["cmp", "ge", ["read", t, [_axis("r")]], ["const", 0]], _read(x, total_idx), ["const", 0.0]]
    s = b.stage([], [], ["reduce", "sum", ["r"], masked], [["r", n]])
    b.stage([], [], ["cast", dtype, ["bin", "truediv", _read(s, []), ["const", float(b.dims[n])]]])


def indexing(b: _Builder) -> None:
    """Index arithmetic in injective stages: an upsample `x[i, j // 2]`, a flip `x[i, B-1-j]`,
    a shifted read through `pad_read` and `where` on an index comparison."""
    rng = b.rng
    rows, cols = b.dim(32), b.dim(32)
    dtype = b.dtype()
    x = b.input([rows, cols], dtype)
    i, j = _axis("i"), _axis("j")
    factor = rng.choice((1, 2, 3))
    src = ["bin", "floordiv", j, factor] if factor > 1 else j
    terms = [_read(x, [i, src])]
    if rng.random() < 0.5:
        terms.append(["pad", x, [i, ["bin", "add", src, rng.choice((1, 2, -1))]], 0.0])
    if rng.random() < 0.5:
        flipped = ["bin", "sub", ["bin", "sub", ["dim", cols], 1], ["bin", "mod", j, ["dim", cols]]]
        terms.append(_read(x, [i, flipped]))
    value = terms[0]
    for term in terms[1:]:
        value = ["bin", rng.choice(("add", "sub", "maximum")), value, term]
    if rng.random() < 0.5:
        value = ["where", ["cmp", "lt", i, ["bin", "floordiv", ["dim", rows], 2]], value, ["un", "neg", value]]
    out_cols = ["bin", "mul", cols, factor] if factor > 1 else cols
    b.stage([rows, out_cols], ["i", "j"], ["cast", b.dtype(), value])


def normalization(b: _Builder) -> None:
    """Two reductions in sequence over the last axes and a read back at the input's shape: a
    layer-norm (mean, variance, normalise) or an RMS norm, with an optional weight."""
    rng = b.rng
    rank = rng.randint(1, 3)
    dims = b.dims_for(rank)
    dtype = b.dtype()
    x = b.input(dims, dtype)
    nred = rng.randint(1, rank)
    kept, reduced = list(range(rank - nred)), list(range(rank - nred, rank))
    full = [_axis(f"i{k}") if k in kept else _axis(f"r{k}") for k in range(rank)]
    spatial = [_axis(f"i{k}") for k in range(rank)]
    kept_shape, kept_axes = [dims[k] for k in kept], [f"i{k}" for k in kept]
    kept_idx = [_axis(a) for a in kept_axes]
    reduce_axes = [[f"r{k}", dims[k]] for k in reduced]
    rnames = [f"r{k}" for k in reduced]
    count = float(math.prod(b.dims[dims[k]] for k in reduced))
    xf = ["cast", "float32", _read(x, full)]
    if rng.random() < 0.5:
        mean = b.stage(kept_shape, kept_axes, ["reduce", "sum", rnames, xf], reduce_axes)
        centred = ["bin", "sub", xf, ["bin", "truediv", _read(mean, kept_idx), ["const", count]]]
        var = b.stage(kept_shape, kept_axes, ["reduce", "sum", rnames, ["bin", "mul", centred, centred]], reduce_axes)
        out = ["bin", "sub", ["cast", "float32", _read(x, spatial)], ["bin", "truediv", _read(mean, kept_idx), ["const", count]]]
    else:
        var = b.stage(kept_shape, kept_axes, ["reduce", "sum", rnames, ["bin", "mul", xf, xf]], reduce_axes)
        out = ["cast", "float32", _read(x, spatial)]
    scale = ["un", "rsqrt", ["bin", "add", ["bin", "truediv", _read(var, kept_idx), ["const", count]], ["const", 1e-5]]]
    out = ["bin", "mul", out, scale]
    if rng.random() < 0.5:
        w = b.input([dims[-1]], "float32", "w")
        out = ["bin", "mul", out, _read(w, spatial[-1:])]
    b.stage(dims, [f"i{k}" for k in range(rank)], ["cast", dtype, out])


TEMPLATES: dict[str, Callable[[_Builder], None]] = {
    "indexing": indexing,
    "normalization": normalization,
    "injective": injective,
    "reduction": reduction,
    "contraction": contraction,
    "window": window,
    "scan": scan,
    "gather": gather,
}
# How often each template is drawn: the interpreter is slowest on contractions and windows.
WEIGHTS = {"injective": 3, "reduction": 3, "contraction": 2, "window": 2, "scan": 2, "gather": 1,
           "indexing": 1, "normalization": 1}


def generate(seed: int, kind: str | None = None) -> Program:
    """The program of `seed` (from template `kind`, or one drawn by the seed)."""
    rng = random.Random(seed)
    if kind is None:
        kind = rng.choices(list(WEIGHTS), weights=list(WEIGHTS.values()))[0]
    builder = _Builder(rng, kind, seed)
    TEMPLATES[kind](builder)
    return builder.program()
