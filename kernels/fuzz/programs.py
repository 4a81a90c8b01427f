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

from tiletune.kernels.fuzz.builder import (
    ELEMENT_BUDGET,
    INPUT_BOUND,
    Builder,
    Leaf,
    Source,
    axis_ref,
    random_value,
    read,
    unify,
)
from tiletune.kernels.fuzz.program import Program, nodes

# -- templates ------------------------------------------------------------------------------

def injective(b: Builder) -> None:
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
            shape, idx = [dims[p] for p in perm], [axis_ref(axes[p]) for p in perm]
        else:
            ones = [rng.random() < 0.3 for _ in range(r)]
            shape = [1 if one else dims[lead + k] for k, one in enumerate(ones)]
            idx = [["const", 0] if one else axis_ref(axes[lead + k]) for k, one in enumerate(ones)]
        dtype = b.dtype()
        name = b.input(shape, dtype)
        leaves.append((read(name, idx), INPUT_BOUND, True, dtype))
    if rng.random() < 0.4:
        body, bound, dtype = random_value(b, leaves, 2)
        producer = b.stage(dims, axes, body)
        leaves.append((read(producer, [axis_ref(a) for a in axes]), bound, False, dtype))
    body, _, _ = random_value(b, leaves, 3)
    b.stage(dims, axes, ["cast", b.dtype(), body])


def reduction(b: Builder, source: Source | None = None, axis: int = -1) -> Source:
    """Sum, max, min, argmax or argmin over one or several axes (not only the last), with an
    optional producer stage and a consumer: a map of the result, or a read back at the input's
    shape (softmax-like). From a computed `source` (a composite program): a reduction over its
    axis `axis`, no argmax or argmin (a computed value's near-ties may break either way).
    Returns the output (its bound a loose one)."""
    rng = b.rng
    if source is None:
        rank = rng.randint(1, 4)
        dims = b.dims_for(rank)
        reduced = sorted(rng.sample(range(rank), rng.randint(1, rank)))
        x_dtype = b.dtype()
        x = b.input(dims, x_dtype)
        x_bound, exact = INPUT_BOUND, True
    else:
        x, dims, x_dtype, x_bound = source
        rank, exact = len(dims), False
        reduced = [axis % rank]
    kept = [k for k in range(rank) if k not in reduced]
    full = [axis_ref(f"i{k}") if k in kept else axis_ref(f"r{k}") for k in range(rank)]
    op = rng.choice(("sum", "sum", "max", "min", "argmax", "argmin") if exact else ("sum", "sum", "max", "min"))
    leaves: list[Leaf] = [(read(x, full), x_bound, exact, x_dtype)]
    if rng.random() < 0.4:
        y_dtype = b.dtype()
        y = b.input(dims[-1:] if rank and rng.random() < 0.5 else dims, y_dtype)
        idx = full[-1:] if len(b.inputs[-1]["shape"]) == 1 else full
        leaves.append((read(y, idx), INPUT_BOUND, True, y_dtype))
    if op.startswith("arg"):
        value = read(x, full) if rng.random() < 0.7 else ["cast", "float32", read(x, full)]
        dtype, v_bound = x_dtype, x_bound
    elif rng.random() < 0.4:
        spatial = [axis_ref(f"i{k}") for k in range(rank)]
        renamed = [(read(leaf[0][1], _rename(leaf[0][2], full, spatial)), *leaf[1:]) for leaf in leaves]
        body, v_bound, dtype = random_value(b, renamed, 2)
        if source is not None and read(x, spatial) not in list(nodes(body)):  # a composite reads its source
            xa, body, dtype = unify(rng, read(x, spatial), x_dtype, body, dtype)
            body, v_bound = ["bin", "add", xa, body], v_bound + x_bound
        producer = b.stage(dims, [f"i{k}" for k in range(rank)], body)
        value = read(producer, full)
    else:
        value, v_bound, dtype = random_value(b, leaves, 2)
    uses_x = source is None or read(x, full) in list(nodes(value)) or value[1] == b.stages[-1]["name"]
    if not uses_x or not all(f'"r{k}"' in json.dumps(value) for k in reduced):  # the body must use every reduce axis
        xa, va, dtype = unify(rng, read(x, full), x_dtype, value, dtype)
        value, v_bound = ["bin", "add", xa, va], v_bound + x_bound
    count = math.prod(b.size(dims[k]) for k in reduced)
    s = b.stage([dims[k] for k in kept], [f"i{k}" for k in kept],
                ["reduce", op, [f"r{k}" for k in reduced], value], [[f"r{k}", dims[k]] for k in reduced])
    kept_idx = [axis_ref(f"i{k}") for k in kept]
    out: Source = (s, [dims[k] for k in kept], "int64" if op.startswith("arg") else dtype,
                   float(count) if op.startswith("arg") else v_bound * (count if op == "sum" else 1))
    epilogue = rng.choice(("none", "map", "back")) if not op.startswith("arg") else rng.choice(("none", "map"))
    if epilogue == "map":
        if op.startswith("arg"):
            body = ["cast", b.dtype(), ["bin", "mul", read(s, kept_idx), ["const", 0.5]]]
        else:
            body = ["cast", b.dtype(), rng.choice((
                ["bin", "truediv", read(s, kept_idx), ["const", float(count)]],
                ["un", "sqrt", ["un", "abs", read(s, kept_idx)]],
                ["bin", "mul", read(s, kept_idx), ["const", -2.0]],
            ))]
        out = (b.stage(out[1], [f"i{k}" for k in kept], body), out[1], body[1], 2.0 * out[3])
    elif epilogue == "back":
        spatial = [axis_ref(f"i{k}") for k in range(rank)]
        back = read(s, kept_idx)
        xs, back, _ = unify(rng, read(x, spatial), x_dtype, back, dtype)
        diff = ["bin", "sub", xs, back]
        if op == "sum":
            body = ["bin", "truediv", xs, ["bin", "add", ["un", "abs", back], ["const", 1.0]]]
        elif op == "max":  # x - max f(x) is at most 0 only where f is x: clamp, so exp stays finite
            body = ["un", "exp", diff if source is None else ["bin", "minimum", diff, ["const", 0.0]]]
        else:
            body = diff
        body = ["cast", b.dtype(), body]
        out = (b.stage(dims, [f"i{k}" for k in range(rank)], body), dims, body[1], x_bound + out[3])
    return out


def _rename(idx: list, full: list, spatial: list) -> list:
    """Index list `idx` (written with the reduction's axes) rewritten over the spatial axes."""
    mapping = {str(f): s for f, s in zip(full, spatial)}
    return [mapping.get(str(i), i) for i in idx]


def contraction(b: Builder, a_source: Source | None = None, size: int = 64) -> Source:
    """A sum of products over K with either layout of each operand, 0-2 batch axes (the second
    operand batched or shared), casts of the operands, an optional prologue on A and an
    optional epilogue (bias, activation, cast). With a computed `a_source` of shape [M, K]
    (a composite program) A is that tensor; `size` bounds M and N. Returns the output."""
    rng = b.rng
    if a_source is None:
        batch = b.dims_for(rng.choice((0, 0, 1, 2)), budget=4)
        m, n, k = b.dim(size), b.dim(size), b.dim(64)
        a_bound = INPUT_BOUND
    else:
        batch, (m, k), a_bound = [], a_source[1], a_source[3]
        n = b.dim(min(size, ELEMENT_BUDGET // b.dims[k]))  # K is the source's: it may not shrink
    while b.dims[m] * b.dims[k] > ELEMENT_BUDGET or b.dims[n] * b.dims[k] > ELEMENT_BUDGET:
        b.dims[k] = max(1, b.dims[k] // 2)
    dtype = b.dtype() if a_source is None else a_source[2]
    bax = [f"b{z}" for z in range(len(batch))]
    a_t, b_t = rng.random() < 0.5 and a_source is None, rng.random() < 0.5
    a_shape = batch + ([k, m] if a_t else [m, k])
    a_idx = [axis_ref(z) for z in bax] + ([axis_ref("k"), axis_ref("i")] if a_t else [axis_ref("i"), axis_ref("k")])
    shared = bool(batch) and rng.random() < 0.3
    bb = [] if shared else batch
    b_shape = bb + ([n, k] if b_t else [k, n])
    b_idx = ([] if shared else [axis_ref(z) for z in bax]) + ([axis_ref("j"), axis_ref("k")] if b_t else [axis_ref("k"), axis_ref("j")])
    a = b.input(a_shape, dtype, "a") if a_source is None else a_source[0]
    w = b.input(b_shape, dtype, "w")
    if rng.random() < 0.25:
        axes = [f"p{z}" for z in range(len(a_shape))]
        a = b.stage(a_shape, axes, ["cast", dtype, ["bin", "mul", read(a, [axis_ref(p) for p in axes]), ["const", 0.5]]])
    left, right = read(a, a_idx), read(w, b_idx)
    if rng.random() < 0.2:
        left, right = ["cast", "float32", left], ["cast", "float32", right]
    out_shape = batch + [m, n]
    out_axes = bax + ["i", "j"]
    c = b.stage(out_shape, out_axes, ["reduce", "sum", ["k"], ["bin", "mul", left, right]], [["k", k]])
    c_dtype = "float32" if left[0] == "cast" else dtype
    bound = b.dims[k] * a_bound * INPUT_BOUND
    if rng.random() < 0.6:
        value = read(c, [axis_ref(z) for z in out_axes])
        if rng.random() < 0.5:
            bias_dtype = b.dtype()
            bias = b.input([n], bias_dtype, "bias")
            value = ["bin", "add", *unify(rng, value, c_dtype, read(bias, [axis_ref("j")]), bias_dtype)[:2]]
            bound += INPUT_BOUND
        act = rng.choice(("none", "tanh", "relu", "sigmoid"))
        if act == "relu":
            value = ["bin", "maximum", value, ["const", 0.0]]
        elif act != "none":
            value, bound = ["un", act, value], 1.0
        c_dtype = rng.choice((dtype, "float32"))
        c = b.stage(out_shape, out_axes, ["cast", c_dtype, value])
    return c, out_shape, c_dtype, bound


def window(b: Builder) -> Source:
    """Pooling-like reads at `o * stride + r * dilation - padding` through `pad_read`: max or
    sum over a 1-D or 2-D window, an optional average, and depthwise weights. Returns the
    output."""
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
        o, r = axis_ref(f"o{q}"), axis_ref(f"r{q}")
        idx.append(["bin", "sub", ["bin", "add", ["bin", "mul", o, s], ["bin", "mul", r, d]], p])
    axes = ["n", "c"] + [f"o{q}" for q in range(nd)]
    spatial = [axis_ref("n"), axis_ref("c")] + idx
    reduce_axes = [[f"r{q}", g[1]] for q, g in enumerate(geometry)]
    rnames = [f"r{q}" for q in range(nd)]
    shape = [n, c] + outs
    if kind == "max":
        out = b.stage(shape, axes, ["reduce", "max", rnames, ["pad", x, spatial, float("-inf")]], reduce_axes)
        return out, shape, dtype, INPUT_BOUND
    value = ["pad", x, spatial, 0.0]
    count = math.prod(g[1] for g in geometry)
    bound = count * INPUT_BOUND
    if kind == "depthwise":
        w = b.input([c] + [g[1] for g in geometry], dtype, "w")
        value = ["bin", "mul", value, read(w, [axis_ref("c")] + [axis_ref(r) for r in rnames])]
        bound *= INPUT_BOUND
    total = b.stage(shape, axes, ["reduce", "sum", rnames, value], reduce_axes)
    if kind == "avg" or rng.random() < 0.3:
        out = b.stage(shape, axes, ["cast", dtype, ["bin", "truediv", read(total, [axis_ref(a) for a in axes]), ["const", float(count)]]])
        return out, shape, dtype, bound / count
    return total, shape, dtype, bound


def scan(b: Builder, source: Source | None = None, axis: int = -1) -> Source:
    """An inclusive sum, product, max or min scan along any axis of a rank 1-4 tensor, of an
    elementwise producer, with an optional consumer. From a computed `source` (a composite
    program): a sum, max or min scan along its axis `axis`. Returns the output."""
    rng = b.rng
    if source is None:
        rank = rng.randint(1, 4)
        dims = b.dims_for(rank)
        axis = rng.randrange(rank)
        op = rng.choice(("sum", "sum", "prod", "max", "min"))
    else:
        dims = source[1]
        rank = len(dims)
        axis %= rank
        op = rng.choice(("sum", "sum", "max", "min"))
    axes = [f"i{k}" for k in range(rank)]
    idx = [axis_ref(a) for a in axes]
    if op == "prod":  # products of factors near 1 stay finite over any length
        b.dims[dims[axis]] = min(b.dims[dims[axis]], 33)
        dtype = b.dtype()
        x = b.input(dims, dtype, domain=[0.8, 1.25])
        value, bound = read(x, idx), 1.25 ** 33
    else:
        if source is None:
            x_dtype = b.dtype()
            x = b.input(dims, x_dtype)
            x_bound, exact = INPUT_BOUND, True
        else:
            x, _, x_dtype, x_bound = source
            exact = False
        leaves: list[Leaf] = [(read(x, idx), x_bound, exact, x_dtype)]
        if rng.random() < 0.3:
            y_dtype = b.dtype()
            y = b.input(dims[-1:], y_dtype)
            leaves.append((read(y, idx[-1:]), INPUT_BOUND, True, y_dtype))
        value, bound, dtype = random_value(b, leaves, 1)
        if read(x, idx) not in list(nodes(value)):  # the scan must run along x's axis
            xa, va, dtype = unify(rng, read(x, idx), x_dtype, value, dtype)
            value, bound = ["bin", "add", va, xa], bound + x_bound
        bound *= b.size(dims[axis]) if op == "sum" else 1
        if rng.random() < 0.3:
            value = read(b.stage(dims, axes, value), idx)
    s = b.stage(dims, axes, ["scan", op, axes[axis], value])
    if rng.random() < 0.3:
        dtype = b.dtype()
        s = b.stage(dims, axes, ["cast", dtype, ["bin", "mul", read(s, idx), ["const", 0.5]]])
    elif rng.random() < 0.3:
        dtype = b.dtype()
        b.stages[-1]["body"] = ["cast", dtype, b.stages[-1]["body"]]
    return s, dims, dtype, bound


def gather(b: Builder) -> None:
    """Reads through an index tensor (a row gather x[n, t[n]], an embedding lookup w[t[n], d],
    or a sum over a gather), masked where the index is -1 as the losses do."""
    rng = b.rng
    kind = rng.choice(("row", "embedding", "total"))
    n, v = b.dim(64), b.dim(64)
    dtype = b.dtype()
    t = b.input([n], rng.choice(("int64", "int32")), "t")
    tn = read(t, [axis_ref("i")])
    ok = ["cmp", "ge", tn, ["const", 0]]
    if kind == "embedding":
        d = b.dim(16)
        w = b.input([v, d], dtype, "w")
        b.stage([n, d], ["i", "j"], ["cast", b.dtype(), ["where", ok, read(w, [tn, axis_ref("j")]), ["const", 0.0]]])
        return
    x = b.input([n, v], dtype)
    picked = ["where", ok, read(x, [axis_ref("i"), tn]), ["const", 0.0]]
    if kind == "row":
        b.stage([n], ["i"], ["cast", b.dtype(), ["bin", "mul", picked, ["const", -1.0]]])
        return
    total_idx = [axis_ref("r"), ["read", t, [axis_ref("r")]]]
    masked = ["where", ["cmp", "ge", ["read", t, [axis_ref("r")]], ["const", 0]], read(x, total_idx), ["const", 0.0]]
    s = b.stage([], [], ["reduce", "sum", ["r"], masked], [["r", n]])
    b.stage([], [], ["cast", dtype, ["bin", "truediv", read(s, []), ["const", float(b.dims[n])]]])


def indexing(b: Builder) -> None:
    """Index arithmetic in injective stages: an upsample `x[i, j // 2]`, a flip `x[i, B-1-j]`,
    a shifted read through `pad_read` and `where` on an index comparison."""
    rng = b.rng
    rows, cols = b.dim(32), b.dim(32)
    dtype = b.dtype()
    x = b.input([rows, cols], dtype)
    i, j = axis_ref("i"), axis_ref("j")
    factor = rng.choice((1, 2, 3))
    src = ["bin", "floordiv", j, factor] if factor > 1 else j
    terms = [read(x, [i, src])]
    if rng.random() < 0.5:
        terms.append(["pad", x, [i, ["bin", "add", src, rng.choice((1, 2, -1))]], 0.0])
    if rng.random() < 0.5:
        flipped = ["bin", "sub", ["bin", "sub", ["dim", cols], 1], ["bin", "mod", j, ["dim", cols]]]
        terms.append(read(x, [i, flipped]))
    value = terms[0]
    for term in terms[1:]:
        value = ["bin", rng.choice(("add", "sub", "maximum")), value, term]
    if rng.random() < 0.5:
        value = ["where", ["cmp", "lt", i, ["bin", "floordiv", ["dim", rows], 2]], value, ["un", "neg", value]]
    out_cols = ["bin", "mul", cols, factor] if factor > 1 else cols
    b.stage([rows, out_cols], ["i", "j"], ["cast", b.dtype(), value])


def normalization(b: Builder, source: Source | None = None, rank: int | None = None) -> Source:
    """Two reductions in sequence over the last axes and a read back at the input's shape: a
    layer-norm (mean, variance, normalise) or an RMS norm, with an optional weight. From a
    computed `source` (a composite program) it normalises over the last axis; `rank` fixes the
    rank of a new input."""
    rng = b.rng
    if source is None:
        rank = rank or rng.randint(1, 3)
        dims = b.dims_for(rank)
        dtype = b.dtype()
        x = b.input(dims, dtype)
        nred = rng.randint(1, rank)
    else:
        x, dims, dtype, _ = source
        rank, nred = len(dims), 1
    kept, reduced = list(range(rank - nred)), list(range(rank - nred, rank))
    full = [axis_ref(f"i{k}") if k in kept else axis_ref(f"r{k}") for k in range(rank)]
    spatial = [axis_ref(f"i{k}") for k in range(rank)]
    kept_shape, kept_axes = [dims[k] for k in kept], [f"i{k}" for k in kept]
    kept_idx = [axis_ref(a) for a in kept_axes]
    reduce_axes = [[f"r{k}", dims[k]] for k in reduced]
    rnames = [f"r{k}" for k in reduced]
    count = float(math.prod(b.size(dims[k]) for k in reduced))
    xf = ["cast", "float32", read(x, full)]
    if rng.random() < 0.5:
        mean = b.stage(kept_shape, kept_axes, ["reduce", "sum", rnames, xf], reduce_axes)
        centred = ["bin", "sub", xf, ["bin", "truediv", read(mean, kept_idx), ["const", count]]]
        var = b.stage(kept_shape, kept_axes, ["reduce", "sum", rnames, ["bin", "mul", centred, centred]], reduce_axes)
        out = ["bin", "sub", ["cast", "float32", read(x, spatial)], ["bin", "truediv", read(mean, kept_idx), ["const", count]]]
    else:
        var = b.stage(kept_shape, kept_axes, ["reduce", "sum", rnames, ["bin", "mul", xf, xf]], reduce_axes)
        out = ["cast", "float32", read(x, spatial)]
    scale = ["un", "rsqrt", ["bin", "add", ["bin", "truediv", read(var, kept_idx), ["const", count]], ["const", 1e-5]]]
    bound = math.sqrt(count)
    out = ["bin", "mul", out, scale]
    if rng.random() < 0.5:
        w = b.input([dims[-1]], "float32", "w")
        out = ["bin", "mul", out, read(w, spatial[-1:])]
        bound *= INPUT_BOUND
    # |x - mean| / sqrt(var) is at most sqrt(count), however large x is
    return b.stage(dims, [f"i{k}" for k in range(rank)], ["cast", dtype, out]), dims, dtype, bound


def composite(b: Builder) -> None:
    """Anchors no one kernel holds together, so that the program runs as several kernels
    (`tensorexpr.partition`): a contraction, a window, a scan or a reduction whose output
    (with its epilogue) feeds a reduction, a normalisation or a scan (over its last axis
    mostly, any axis sometimes); a normalisation feeding a contraction as its prologue; a
    reduction beside a scan of the same rows (a reverse cumsum); two contractions in a chain,
    attention-shaped or not. The first anchor's output is scaled by a power of two where the
    second could otherwise overflow float16."""
    rng = b.rng
    shape = rng.choice(("then", "then", "then", "norm_gemm", "scan_beside", "chain", "attention", "diamond", "glu"))
    if shape == "then":
        first = rng.choice(("contraction", "contraction", "window", "scan", "reduction"))
        source = contraction(b, size=32) if first == "contraction" else TEMPLATES[first](b)
        if not source[1]:  # a reduction to a scalar: nothing to go on from
            return
        if not source[2].startswith(("float", "bfloat")):  # an argmax: go on from its float value
            axes = [f"i{k}" for k in range(len(source[1]))]
            body = ["cast", "float32", read(source[0], [axis_ref(a) for a in axes])]
            source = (b.stage(source[1], axes, body), source[1], "float32", source[3])
        axis = -1 if rng.random() < 0.6 else rng.randrange(len(source[1]))
        then = rng.choice(("reduction", "reduction", "normalization", "scan"))
        source = _scaled(b, source, b.size(source[1][axis]))
        if then == "normalization":
            normalization(b, source)
        else:
            TEMPLATES[then](b, source, axis)
    elif shape == "norm_gemm":
        contraction(b, a_source=normalization(b, rank=2), size=32)
    elif shape == "chain":
        first = contraction(b, size=32)
        if len(first[1]) == 2:
            contraction(b, a_source=_scaled(b, first, INPUT_BOUND * b.size(first[1][-1])))
        else:  # batched: a row reduction of the batch's matrices instead
            reduction(b, _scaled(b, first, b.size(first[1][-1])))
    elif shape == "attention":
        _attention(b)
    elif shape == "diamond":
        _diamond(b)
    elif shape == "glu":
        _glu(b)
    else:
        _scan_beside(b)


def _diamond(b: Builder) -> None:
    """One contraction read by a reduction over its rows, one over its columns and the
    output beside both: c - sum_j c / N + max_i c (each reduction needs c whole)."""
    rng = b.rng
    c, shape, dtype, _ = _scaled(b, contraction(b, size=32), 64)
    *batch, m, n = shape
    axes = [f"b{z}" for z in range(len(batch))] + ["i", "j"]
    bax = [axis_ref(a) for a in axes[:-2]]
    i, j = axis_ref("i"), axis_ref("j")
    row = b.stage(batch + [m], axes[:-1], ["reduce", "sum", ["r"], read(c, bax + [i, axis_ref("r")])], [["r", n]])
    op = rng.choice(("max", "min", "sum"))
    col = b.stage(batch + [n], axes[:-2] + ["j"], ["reduce", op, ["r"], read(c, bax + [axis_ref("r"), j])], [["r", m]])
    body = ["bin", "add", ["bin", "sub", read(c, bax + [i, j]), ["bin", "truediv", read(row, bax + [i]), ["const", float(b.size(n))]]],
            read(col, bax + [j])]
    b.stage(shape, axes, ["cast", rng.choice((dtype, "float32")), body])


def _glu(b: Builder) -> None:
    """Two contractions of the same A joined elementwise (a gated linear unit:
    (A W1) * sigmoid(A W2)), or one beside a row reduction of A."""
    rng = b.rng
    m, n, k = b.dim(32), b.dim(32), b.dim(64)
    while b.dims[k] * max(b.dims[m], b.dims[n]) > ELEMENT_BUDGET:
        b.dims[k] = max(1, b.dims[k] // 2)
    dtype = b.dtype()
    a, w1 = b.input([m, k], dtype, "a"), b.input([k, n], dtype, "w")
    i, j, kk = axis_ref("i"), axis_ref("j"), axis_ref("k")
    up = b.stage([m, n], ["i", "j"], ["reduce", "sum", ["k"], ["bin", "mul", read(a, [i, kk]), read(w1, [kk, j])]], [["k", k]])
    if rng.random() < 0.7:
        w2_t = rng.random() < 0.5  # stored as [n, k]
        w2 = b.input([n, k] if w2_t else [k, n], dtype, "w")
        w2_idx = [j, kk] if w2_t else [kk, j]
        gate = b.stage([m, n], ["i", "j"], ["reduce", "sum", ["k"], ["bin", "mul", read(a, [i, kk]), read(w2, w2_idx)]], [["k", k]])
        gated = ["un", "sigmoid", read(gate, [i, j])]
    else:
        norm = b.stage([m], ["i"], ["reduce", "sum", ["k"], ["bin", "mul", read(a, [i, kk]), read(a, [i, kk])]], [["k", k]])
        gated = ["un", "rsqrt", ["bin", "add", read(norm, [i]), ["const", 1.0]]]
    b.stage([m, n], ["i", "j"], ["cast", rng.choice((dtype, "float32")), ["bin", "mul", read(up, [i, j]), gated]])


def _scaled(b: Builder, source: Source, length: int) -> Source:
    """`source`, or a stage scaling it by a power of two (exact in every float type) so that
    a sum of `length` of its elements stays within float16."""
    name, shape, dtype, bound = source
    factor = 1.0
    while bound * factor * length > 30000.0:
        factor /= 2.0
    if factor == 1.0:
        return source
    axes = [f"i{k}" for k in range(len(shape))]
    body = ["cast", dtype, ["bin", "mul", read(name, [axis_ref(a) for a in axes]), ["const", factor]]]
    return b.stage(shape, axes, body), shape, dtype, bound * factor


def _attention(b: Builder) -> None:
    """o = softmax(scale * q k^T) v over an optional batch axis, in the forms attention takes
    (the division by the row sum before or after the second contraction, a causal mask, k
    stored either way), or variants no attention kernel holds (tanh-bounded scores without
    the max; the max taken over the queries)."""
    rng = b.rng
    batch = b.dims_for(rng.choice((0, 1)), budget=3)
    m, n = b.dim(32), b.dim(32)
    budget = ELEMENT_BUDGET // (max(b.dims[m], b.dims[n]) * math.prod(b.dims[z] for z in batch))
    d, e = b.dim(max(1, budget)), b.dim(max(1, min(16, budget)))
    dtype = b.dtype()
    bax = [axis_ref(f"b{z}") for z in range(len(batch))]
    q = b.input(batch + [m, d], dtype, "q")
    k_t = rng.random() < 0.3  # k stored as [d, n]
    k = b.input(batch + ([d, n] if k_t else [n, d]), dtype, "k")
    v = b.input(batch + [n, e], dtype, "v")
    i, j, dd, ee = axis_ref("i"), axis_ref("j"), axis_ref("d"), axis_ref("e")
    axes_ij = [f"b{z}" for z in range(len(batch))] + ["i", "j"]
    rows = batch + [m]
    row_axes = [f"b{z}" for z in range(len(batch))] + ["i"]
    score_dtype = rng.choice((dtype, "float32"))
    widen = (lambda x: ["cast", "float32", x]) if score_dtype != dtype else (lambda x: x)
    product = ["bin", "mul", widen(read(q, bax + [i, dd])), widen(read(k, bax + ([dd, j] if k_t else [j, dd])))]
    product = ["bin", "mul", product, ["const", 1.0 / math.sqrt(b.dims[d])]]  # the scale inside the sum
    s = b.stage(batch + [m, n], axes_ij, ["reduce", "sum", ["d"], product], [["d", d]])
    score = read(s, bax + [i, j])
    variant = rng.choice(("after", "before", "causal", "tanh", "column_max"))
    if variant == "causal":  # j <= i keeps j = 0 on every row: no row is empty
        score = ["where", ["cmp", "le", j, i], score, ["const", float("-inf")]]
        s = b.stage(batch + [m, n], axes_ij, score)
        score = read(s, bax + [i, j])
    if variant == "tanh":
        p = b.stage(batch + [m, n], axes_ij, ["un", "exp", ["un", "tanh", score]])
    elif variant == "column_max":  # the max over the queries, not the keys: no attention
        col_axes = [f"b{z}" for z in range(len(batch))] + ["j"]
        mx = b.stage(batch + [n], col_axes, ["reduce", "max", ["r"], read(s, bax + [axis_ref("r"), j])], [["r", m]])
        p = b.stage(batch + [m, n], axes_ij, ["un", "exp", ["bin", "sub", score, read(mx, bax + [j])]])
    else:
        mx = b.stage(rows, row_axes, ["reduce", "max", ["r"], read(s, bax + [i, axis_ref("r")])], [["r", n]])
        p = b.stage(batch + [m, n], axes_ij, ["un", "exp", ["bin", "sub", score, read(mx, bax + [i])]])
    total = b.stage(rows, row_axes, ["reduce", "sum", ["r"], read(p, bax + [i, axis_ref("r")])], [["r", n]])
    out_axes = [f"b{z}" for z in range(len(batch))] + ["i", "e"]
    pv = ["bin", "mul", read(p, bax + [i, j]), ["cast", score_dtype, read(v, bax + [j, ee])]]
    if variant == "before":
        pv = ["bin", "mul", ["bin", "truediv", read(p, bax + [i, j]), read(total, bax + [i])],
              ["cast", score_dtype, read(v, bax + [j, ee])]]
        b.stage(batch + [m, e], out_axes, ["cast", dtype, ["reduce", "sum", ["j"], pv]], [["j", n]])
        return
    o = b.stage(batch + [m, e], out_axes, ["reduce", "sum", ["j"], pv], [["j", n]])
    b.stage(batch + [m, e], out_axes, ["cast", dtype, ["bin", "truediv", read(o, bax + [i, ee]), read(total, bax + [i])]])


def _scan_beside(b: Builder) -> None:
    """A reduction and a scan of the same rows, combined: sum - cumsum + x (a reverse cumsum),
    or the running max (min) against the row's max (min); the scan sometimes reversed, the
    row's value sometimes the next row's."""
    rng = b.rng
    rows, length = b.dims_for(2)
    dtype = b.dtype()
    x = b.input([rows, length], dtype)
    op = rng.choice(("sum", "sum", "max", "min"))
    i, j = axis_ref("i"), axis_ref("j")
    total = b.stage([rows], ["i"], ["reduce", op, ["r"], read(x, [i, axis_ref("r")])], [["r", length]])
    # reversed: the scan runs from the row's end, read back reversed (no scan kernel holds the
    # reversed read); the row's total may be read at the next row (s[i + 1], zero past the end)
    reverse = rng.random() < 0.3
    jj = ["bin", "sub", ["bin", "sub", ["dim", length], 1], j] if reverse else j
    running = b.stage([rows, length], ["i", "j"], ["scan", op, "j", read(x, [i, jj])])
    whole = ["pad", total, [["bin", "add", i, 1]], 0.0] if rng.random() < 0.3 else read(total, [i])
    if op == "sum":
        body = ["bin", "add", ["bin", "sub", whole, read(running, [i, jj])], read(x, [i, j])]
    else:
        body = ["bin", "sub", read(running, [i, jj]), whole]
    b.stage([rows, length], ["i", "j"], ["cast", rng.choice((dtype, "float32")), body])


TEMPLATES: dict[str, Callable[[Builder], None]] = {
    "indexing": indexing,
    "normalization": normalization,
    "injective": injective,
    "reduction": reduction,
    "contraction": contraction,
    "window": window,
    "scan": scan,
    "gather": gather,
    "composite": composite,
}
# How often each template is drawn: the interpreter is slowest on contractions and windows,
# and a composite program runs several kernels.
WEIGHTS = {"injective": 3, "reduction": 3, "contraction": 2, "window": 2, "scan": 2, "gather": 1,
           "indexing": 1, "normalization": 1, "composite": 2}


def generate(seed: int, kind: str | None = None) -> Program:
    """The program of `seed` (from template `kind`, or one drawn by the seed)."""
    rng = random.Random(seed)
    if kind is None:
        kind = rng.choices(list(WEIGHTS), weights=list(WEIGHTS.values()))[0]
    builder = Builder(rng, kind, seed)
    TEMPLATES[kind](builder)
    return builder.program()
