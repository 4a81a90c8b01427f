"""Building blocks of the fuzz program generator: the program under construction (dims,
inputs and stages drawn from a seeded rng), and random elementwise values over bounded leaves.

Values carry a magnitude bound so that no program overflows float16 or takes the log of a
negative: a mismatch then means a wrong kernel, not a program outside its domain.
"""
from __future__ import annotations

import math
import random

from tiletune.kernels.fuzz.program import VERSION, Program

FLOATS = ("float32", "float16", "bfloat16")
SMALL_SIZES = (1, 2, 3, 4, 5, 7, 8, 11, 13)
EDGE_SIZES = (15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129)
# Elements of any one tensor: the interpreter runs each program instance in numpy, so a pair
# stays well under a second.
ELEMENT_BUDGET = 256
BOUND_LIMIT = 1000.0  # largest magnitude a generated value may reach (float16 holds 65504)


class Builder:
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

    def size(self, extent: object) -> int:
        """The value of a shape entry: an int, a dim name or an expression over dims (a
        window's output extent)."""
        if isinstance(extent, int):
            return extent
        if isinstance(extent, str):
            return self.dims[extent]
        _, op, a, c = extent
        x, y = self.size(a), self.size(c)
        if op == "floordiv":
            return x // y
        return {"add": x + y, "sub": x - y, "mul": x * y}[op]

    def program(self) -> Program:
        return {"version": VERSION, "name": self.name, "dims": dict(self.dims),
                "inputs": self.inputs, "stages": self.stages}


# -- values ---------------------------------------------------------------------------------

Leaf = tuple[list, float, bool, str]  # (expression, magnitude bound, exact: a raw input read, dtype)
# A computed tensor a template continues from: (stage name, shape, dtype, magnitude bound).
Source = tuple[str, list, str, float]


def random_value(b: Builder, leaves: list[Leaf], depth: int) -> tuple[list, float, str]:
    """A random elementwise expression over `leaves`, its magnitude bound and its dtype."""
    rng = b.rng
    if depth <= 0 or rng.random() < 0.25:
        expr, bound, _, dtype = rng.choice(leaves)
        return expr, bound, dtype
    kind = rng.choice(("bin", "bin", "bin", "un", "un", "where", "cast", "const"))
    if kind == "const":
        a, bound, dtype = random_value(b, leaves, depth - 1)
        c = rng.choice((0.5, 2.0, -1.5, 3.0))
        op = rng.choice(("add", "mul", "sub"))
        expr = ["bin", op, a, ["const", c]] if rng.random() < 0.5 else ["bin", op, ["const", c], a]
        return expr, _combine(op, bound, abs(c)), dtype
    if kind == "bin":
        a, ba, da = random_value(b, leaves, depth - 1)
        c, bc, dc = random_value(b, leaves, depth - 1)
        a, c, dtype = unify(rng, a, da, c, dc)
        op = rng.choice(("add", "sub", "mul", "maximum", "minimum", "truediv"))
        if op == "truediv":  # divide by |c| + 1: never by zero
            return ["bin", "truediv", a, ["bin", "add", ["un", "abs", c], ["const", 1.0]]], ba, dtype
        bound = _combine(op, ba, bc)
        if bound > BOUND_LIMIT:
            return ["bin", "maximum", a, c], max(ba, bc), dtype
        return ["bin", op, a, c], bound, dtype
    if kind == "un":
        a, ba, dtype = random_value(b, leaves, depth - 1)
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
            return random_value(b, leaves, depth - 1)
        cond = ["cmp", rng.choice(("lt", "le", "gt", "ge")), rng.choice(exact)[0], ["const", rng.choice((0.0, 0.5, -0.5))]]
        a, ba, da = random_value(b, leaves, depth - 1)
        c, bc, dc = random_value(b, leaves, depth - 1)
        a, c, dtype = unify(rng, a, da, c, dc)
        return ["where", cond, a, c], max(ba, bc), dtype
    a, ba, _ = random_value(b, leaves, depth - 1)
    dtype = b.dtype()
    return ["cast", dtype, a], ba, dtype


def unify(rng: random.Random, a: list, da: str, c: list, dc: str) -> tuple[list, list, str]:
    """Both operands in one dtype (the DSL refuses mixed float types): one cast to the other's
    type, or both to float32."""
    if da == dc:
        return a, c, da
    choice = rng.choice((da, dc, "float32"))
    cast = lambda e, d: e if d == choice else ["cast", choice, e]  # noqa: E731
    return cast(a, da), cast(c, dc), choice


def _combine(op: str, a: float, b: float) -> float:
    return a * b if op == "mul" else a + b if op in ("add", "sub") else max(a, b)


def read(name: str, idx: list) -> list:
    return ["read", name, idx]


def axis_ref(name: str) -> list:
    return ["axis", name]


INPUT_BOUND = 5.0  # |randn| over a few thousand draws
