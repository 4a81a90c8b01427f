"""Operators: a function of symbolic dims that declares a graph of tensors.

`@operator` turns `def rmsnorm(N, D): ... return [x, w], y` into an `Operator`; `op.graph()`
builds the `Graph` (one per dtype for operators that take a `dtype` parameter), which knows its
stages in order, binds dims from input shapes and has a stable structural hash.
"""
from __future__ import annotations

import ast
import hashlib
import inspect
import math
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

from tiletune.errors import DSLError
from tiletune.tensorexpr import dtypes as dt
from tiletune.tensorexpr.expr import (
    Binary,
    BinaryOp,
    Cast,
    Compare,
    Const,
    DimVar,
    Expr,
    IterVar,
    Logical,
    Read,
    Reduce,
    Scan,
    Select,
    Unary,
    UnaryOp,
    describe,
    walk,
)
from tiletune.tensorexpr.tensor import ComputeOp, Tensor, format_shape


def evaluate_extent(e: Expr, dims: Mapping[str, int]) -> int:
    """The integer value of a shape expression once the dims are bound."""
    if isinstance(e, Const):
        return int(e.value)
    if isinstance(e, DimVar):
        if e.name not in dims:
            raise DSLError(f"dim {e.name} is not bound; expected a value for it")
        return int(dims[e.name])
    if isinstance(e, Binary) and SHAPE_ARITHMETIC[e.op] is not None:
        a, b = evaluate_extent(e.a, dims), evaluate_extent(e.b, dims)
        if e.op in (BinaryOp.FLOORDIV, BinaryOp.MOD) and b == 0:
            raise DSLError(f"shape expression divides by zero with dims {dict(dims)}")
        return SHAPE_ARITHMETIC[e.op](a, b)
    if isinstance(e, Unary) and e.op is UnaryOp.NEG:
        return -evaluate_extent(e.x, dims)
    raise DSLError(f"cannot evaluate shape expression of kind {type(e).__name__}")


def _solve_affine(extent: Expr, name: str, size: int, dims: Mapping[str, int]) -> int | None:
    """The positive value of dim `name` for which `extent` is `size`, if the extent is affine
    in it (a * name + b, read off at name = 1 and 2) and that value is a whole number."""
    try:
        at1 = evaluate_extent(extent, {**dims, name: 1})
        slope = evaluate_extent(extent, {**dims, name: 2}) - at1
    except DSLError:
        return None
    if slope == 0 or (size - at1) % slope:
        return None
    value = 1 + (size - at1) // slope
    try:
        exact = value >= 1 and evaluate_extent(extent, {**dims, name: value}) == size
    except DSLError:
        return None
    return value if exact else None


_SHAPE_SYMBOLS = {BinaryOp.ADD: "+", BinaryOp.SUB: "-", BinaryOp.MUL: "*", BinaryOp.FLOORDIV: "//", BinaryOp.MOD: "%"}


def shape_text(e: Expr) -> str:
    """A shape expression as the user wrote it (`D2 * 2`), for messages."""
    if isinstance(e, Const):
        return str(e.value)
    if isinstance(e, DimVar):
        return e.name
    if isinstance(e, Binary) and e.op in _SHAPE_SYMBOLS:
        inner = [shape_text(x) if isinstance(x, (Const, DimVar)) else f"({shape_text(x)})" for x in (e.a, e.b)]
        return f" {_SHAPE_SYMBOLS[e.op]} ".join(inner)
    if isinstance(e, Unary) and e.op is UnaryOp.NEG:
        return f"-{shape_text(e.x)}"
    return describe(e)


# Integer arithmetic a shape expression may use; None: not allowed in a shape.
SHAPE_ARITHMETIC: dict[BinaryOp, Callable[[int, int], int] | None] = {
    BinaryOp.ADD: int.__add__, BinaryOp.SUB: int.__sub__, BinaryOp.MUL: int.__mul__,
    BinaryOp.FLOORDIV: int.__floordiv__, BinaryOp.MOD: int.__mod__,
    BinaryOp.TRUEDIV: None, BinaryOp.MAXIMUM: None, BinaryOp.MINIMUM: None,
}


# Bounds on a workload's sizes: a dim must fit the kernels' int32 index arithmetic, and no tensor
# can hold more elements than the largest device memory (2**40 bytes is over 1 TB).
MAX_DIM = 2**31 - 1
MAX_ELEMENTS = 2**40


@dataclass(frozen=True, slots=True, eq=False)
class Graph:
    """One instantiated operator: inputs in call order, computed stages in order, the output."""

    name: str
    dims: tuple[DimVar, ...]
    inputs: tuple[Tensor, ...]
    stages: tuple[Tensor, ...]
    output: Tensor

    @property
    def dim_names(self) -> tuple[str, ...]:
        """The names of the symbolic dims, in declaration order."""
        return tuple(d.name for d in self.dims)

    def consumers(self, tensor: Tensor) -> list[Tensor]:
        """The stages that read `tensor`."""
        return [s for s in self.stages if any(isinstance(n, Read) and n.tensor is tensor for n in walk(s.op.body))]

    def shape_of(self, tensor: Tensor, dims: Mapping[str, int]) -> tuple[int, ...]:
        """The concrete shape of `tensor` once dims are bound."""
        return tuple(evaluate_extent(s, dims) for s in tensor.shape)

    def check_dims(self, dims: Mapping[str, int]) -> dict[str, int]:
        """`dims` checked to name every dim of the operator with a positive int."""
        unknown = sorted(set(dims) - set(self.dim_names))
        if unknown:
            raise DSLError(f"{self.name}: unknown dim {', '.join(unknown)}; it takes dims {', '.join(self.dim_names)}")
        missing = [n for n in self.dim_names if n not in dims]
        if missing:
            raise DSLError(f"{self.name}: missing a value for dim {', '.join(missing)}; it takes dims {', '.join(self.dim_names)}")
        out = {}
        for n in self.dim_names:
            v = dims[n]
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise DSLError(f"{self.name}: dim {n} must be a positive integer, got {v!r}")
            if v > MAX_DIM:
                raise DSLError(f"{self.name}: dim {n}={v} is larger than {MAX_DIM}, the largest extent the "
                               "generated kernels index (int32 offsets)")
            out[n] = int(v)
        for t in (*self.inputs, *self.stages):
            shape = self.shape_of(t, out)
            if any(s < 1 for s in shape):
                raise DSLError(f"{self.name}: tensor '{t.name}' would have shape {shape} with dims {out}; "
                               "every extent must be at least 1")
            if math.prod(shape) > MAX_ELEMENTS:
                raise DSLError(f"{self.name}: tensor '{t.name}' would have {math.prod(shape):.3g} elements with "
                               f"dims {out}, more than any device holds (at most {MAX_ELEMENTS:.3g})")
        return out

    def _check_input_count(self, shapes: Sequence[Sequence[int]]) -> None:
        if len(shapes) != len(self.inputs):
            raise DSLError(
                f"{self.name} takes {len(self.inputs)} inputs "
                f"({', '.join(t.name for t in self.inputs)}), got {len(shapes)}"
            )

    def check_shapes(self, shapes: Sequence[Sequence[int]], dims: Mapping[str, int]) -> None:
        """Check the inputs' concrete shapes against their declarations under bound `dims`."""
        self._check_input_count(shapes)
        for t, shape in zip(self.inputs, shapes):
            expected = self.shape_of(t, dims)
            if tuple(int(s) for s in shape) != expected:
                raise DSLError(
                    f"{self.name}: input '{t.name}' has shape {tuple(int(s) for s in shape)}, "
                    f"expected {expected} with dims {dict(dims)}"
                )

    def bind(self, shapes: Sequence[Sequence[int]]) -> dict[str, int]:
        """Bind the symbolic dims from the inputs' concrete shapes, checking every input."""
        self._check_input_count(shapes)
        dims: dict[str, int] = {}
        origin: dict[str, str] = {}
        for t, shape in zip(self.inputs, shapes):
            shape = tuple(int(s) for s in shape)
            if len(shape) != t.ndim:
                raise DSLError(
                    f"{self.name}: input '{t.name}' has rank {len(shape)} (shape {shape}) "
                    f"but is declared with rank {t.ndim} {format_shape(t.shape)}"
                )
            for axis, (decl, size) in enumerate(zip(t.shape, shape)):
                if isinstance(decl, DimVar):
                    if decl.name in dims and dims[decl.name] != size:
                        raise DSLError(
                            f"{self.name}: dim {decl.name} is {dims[decl.name]} from input '{origin[decl.name]}' "
                            f"but {size} from input '{t.name}' axis {axis}"
                        )
                    dims.setdefault(decl.name, size)
                    origin.setdefault(decl.name, t.name)
        self._solve_from_expressions(shapes, dims)
        missing = [n for n in self.dim_names if n not in dims]
        if missing:
            raise DSLError(f"{self.name}: dim {', '.join(missing)} does not appear as an input dimension; it cannot be bound from the inputs")
        self.check_shapes(shapes, dims)
        return dims

    def _solve_from_expressions(self, shapes: Sequence[Sequence[int]], dims: dict[str, int]) -> None:
        """Bind dims that appear only inside an extent expression (`D2 * 2`, `D + 1`): an
        extent with one unbound dim is solved as the affine function it is in that dim; the
        caller's `check_shapes` then checks every extent, so a wrong solution cannot pass."""
        progress = True
        while progress:
            progress = False
            for t, shape in zip(self.inputs, shapes):
                for axis, (decl, size) in enumerate(zip(t.shape, shape)):
                    unbound = {n.name for n in walk(decl) if isinstance(n, DimVar)} - set(dims)
                    if len(unbound) != 1:
                        continue
                    (name,) = unbound
                    value = _solve_affine(decl, name, int(size), dims)
                    if value is None:
                        raise DSLError(
                            f"{self.name}: input '{t.name}' axis {axis} has size {int(size)}, which no positive "
                            f"value of dim {name} gives for its declared extent {shape_text(decl)}"
                        )
                    dims[name] = value
                    progress = True

    def structural_hash(self) -> str:
        """A stable hash of what the graph computes (not of its Python names)."""
        return hashlib.sha256(canonical_text(self).encode()).hexdigest()[:16]


def canonical_text(graph: Graph) -> str:
    """A canonical rendering of the graph: tensors and axes numbered by position, operators by
    their DSL names (the enum members' values: the text, and so the hash that keys the tuning
    DB, is what it was when operators were strings)."""
    names: dict[object, str] = {}
    for n, t in enumerate(graph.inputs):
        names[t] = f"in{n}"
    for n, t in enumerate(graph.stages):
        names[t] = f"s{n}"

    def expr_text(e: Expr, axes: dict[IterVar, str]) -> str:
        if isinstance(e, Const):
            return f"{e.value!r}:{e.dtype}"
        if isinstance(e, DimVar):
            return f"${e.name}"
        if isinstance(e, IterVar):
            if e not in axes:
                axes[e] = f"{'r' if e.kind == 'reduce' else 'a'}{len(axes)}<{expr_text(e.extent, axes)}>"
            return axes[e]
        if isinstance(e, Read):
            return f"{names[e.tensor]}[{','.join(expr_text(i, axes) for i in e.indices)}]"
        if isinstance(e, (Binary, Compare, Logical)):
            return f"{e.op.value}({expr_text(e.a, axes)},{expr_text(e.b, axes)}):{e.dtype}"
        if isinstance(e, Unary):
            return f"{e.op.value}({expr_text(e.x, axes)}):{e.dtype}"
        if isinstance(e, Cast):
            return f"cast({expr_text(e.x, axes)}):{e.dtype}"
        if isinstance(e, Select):
            return f"where({expr_text(e.cond, axes)},{expr_text(e.a, axes)},{expr_text(e.b, axes)}):{e.dtype}"
        if isinstance(e, Reduce):
            ax = ",".join(expr_text(a, axes) for a in e.axes)
            return f"{e.op.value}[{ax}]({expr_text(e.body, axes)}):{e.dtype}"
        if isinstance(e, Scan):
            return f"scan_{e.op.value}[{expr_text(e.axis, axes)}]({expr_text(e.body, axes)}):{e.dtype}"
        raise TypeError(type(e))

    lines = [f"dims {','.join(graph.dim_names)}"]
    for t in graph.inputs:
        lines.append(f"{names[t]} = input{tuple(expr_text(s, {}) for s in t.shape)}:{t.dtype}")
    for t in graph.stages:
        axes: dict[IterVar, str] = {}
        head = ",".join(expr_text(a, axes) for a in t.op.axes)
        lines.append(f"{names[t]}({head}) = {expr_text(t.op.body, axes)}:{t.dtype}")
    lines.append(f"out {names[graph.output]}")
    return "\n".join(lines)


def _collect_stages(name: str, output: Tensor, inputs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    order: list[Tensor] = []
    seen: set[int] = set()

    def visit(t: Tensor) -> None:
        if id(t) in seen:
            return
        seen.add(id(t))
        if t.is_placeholder:
            if not any(t is i for i in inputs):
                raise DSLError(
                    f"{name}: the output reads placeholder '{t.name}', which is not among the returned inputs "
                    f"({', '.join(i.name for i in inputs)})"
                )
            return
        assert isinstance(t.op, ComputeOp)
        for node in walk(t.op.body):
            if isinstance(node, Read):
                visit(node.tensor)
        order.append(t)

    visit(output)
    return tuple(order)


def _is_literal(value: object) -> bool:
    if isinstance(value, tuple):
        return all(_is_literal(v) for v in value)
    return value is None or isinstance(value, (bool, int, float, str))


def attrs_suffix(attrs: Mapping[str, object]) -> str:
    """`[k=v, ...]` naming attributes that differ from a declaration, or "" when none do."""
    return "[" + ", ".join(f"{k}={v!r}" for k, v in attrs.items()) + "]" if attrs else ""


def parse_attrs(ref: str) -> tuple[str, dict[str, object]]:
    """Split `base[k=v, ...]` into the base reference and its attributes. Values are Python
    literals, read with `ast.literal_eval`: a reference (from a DB or a command line) is data
    and never runs code."""
    if not ref.endswith("]") or "[" not in ref:
        return ref, {}
    base, _, inner = ref[:-1].partition("[")
    try:
        call = ast.parse(f"f({inner})", mode="eval").body
        if not isinstance(call, ast.Call) or call.args or any(k.arg is None for k in call.keywords):
            raise ValueError("expected name=value pairs")
        attrs = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
    except (SyntaxError, ValueError) as error:
        raise DSLError(f"operator reference {ref!r}: attributes must be name=literal pairs, as in "
                       f"softmax_nd[dim=1] ({error})") from None
    return base, attrs


class Operator:
    """A declared operator: a function of symbolic dims (and optionally `dtype`) returning
    `(inputs, output)`. Build its graph with `graph(dtype)`.

    Keyword-only parameters (after `*`) other than `dtype` are *attributes*: fixed scalars such
    as a slope or an epsilon, not dims. They take their defaults; `with_attrs` gives another
    value."""

    def __init__(self, fn: Callable[..., object], name: str | None = None) -> None:
        self.fn = fn
        self.name = name or fn.__name__
        params = list(inspect.signature(fn).parameters.values())
        self.takes_dtype = any(p.name == "dtype" for p in params)
        self.default_dtype: str | None = None
        self.attrs: dict[str, object] = {}
        # attributes given by `with_attrs` rather than the declaration's defaults
        self.bound_attrs: dict[str, object] = {}
        self.base: Operator | None = None  # the declared operator a `with_attrs` variant comes from
        dim_names = []
        for p in params:
            if p.name == "dtype":
                if p.default is not inspect.Parameter.empty:
                    self.default_dtype = dt.canonical(p.default)
                continue
            if p.kind == p.KEYWORD_ONLY:
                # keyword-only parameters are attributes (a slope, a reduced `dim`), not dims
                if p.default is inspect.Parameter.empty:
                    raise DSLError(f"operator {self.name}: attribute {p.name} needs a default value")
                self.attrs[p.name] = p.default
                continue
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                raise DSLError(f"operator {self.name}: parameters must be named dims, not *{p.name}")
            dim_names.append(p.name)
        self.dim_names: tuple[str, ...] = tuple(dim_names)
        self._graphs: dict[str | None, Graph] = {}  # cache: one graph per dtype
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn

    def __repr__(self) -> str:
        return f"<tiletune operator {self.name}({', '.join(self.dim_names)})>"

    def with_attrs(self, **attrs: object) -> Operator:
        """This operator with some attributes set: `softmax_nd.with_attrs(dim=1)`.

        The variant is named after what differs from the declaration, `softmax_nd[dim=1]`, so
        that tuning records of different attributes never mix; `attrs_ref` spells the same for
        workers, which rebuild it from the base operator (see `parse_attrs`)."""
        unknown = sorted(set(attrs) - set(self.attrs))
        if unknown:
            known = ", ".join(self.attrs) or "none"
            raise DSLError(f"operator {self.name}: unknown attribute {', '.join(unknown)}; its attributes are {known}")
        for key, value in attrs.items():
            if not _is_literal(value):
                raise DSLError(f"operator {self.name}: attribute {key}={value!r} must be a number, bool, string "
                               "or tuple of them")
        base = self.base or self
        bound = {k: v for k, v in {**self.bound_attrs, **attrs}.items() if v != base.attrs[k]}
        op = Operator(self.fn, base.name + attrs_suffix(bound))
        op.attrs = {**base.attrs, **bound}
        op.bound_attrs = bound
        op.base = base if bound else None
        return op if bound else base

    def graph(self, dtype: object | None = None) -> Graph:
        """The graph of this operator, for `dtype` if the operator takes one."""
        if dtype is not None and not self.takes_dtype:
            fixed = self.graph()
            wanted = dt.canonical(dtype)
            if wanted not in {t.dtype for t in fixed.inputs}:
                raise DSLError(
                    f"{self.name} is declared for {', '.join(sorted({t.dtype for t in fixed.inputs}))} "
                    f"and takes no dtype parameter; got dtype {wanted}"
                )
            return fixed
        key = dt.canonical(dtype) if dtype is not None else self.default_dtype
        if key in self._graphs:
            return self._graphs[key]
        if self.takes_dtype and key is None:
            raise DSLError(f"{self.name} takes a dtype; give one (e.g. --dtype float16)")
        dims = tuple(DimVar(n) for n in self.dim_names)
        kwargs = {"dtype": key} if self.takes_dtype else {}
        kwargs.update(self.attrs)
        try:
            result = self.fn(*dims, **kwargs)
        except DSLError as e:
            # Declaration errors are raised before the operator's name is known; add it here.
            raise DSLError(f"{self.name}: {e}") from e
        except Exception as e:  # the user's own code failed: say where, not only what
            raise DSLError(f"{self.name}: declaring its graph raised {type(e).__name__}: {e}{_origin(e)}") from e
        graph = self._make_graph(dims, result)
        self._graphs[key] = graph
        return graph

    def _make_graph(self, dims: tuple[DimVar, ...], result: object) -> Graph:
        usage = (
            f"{self.name} must return (inputs, output): a list of te.placeholder tensors "
            "in call order and the output tensor"
        )
        if not isinstance(result, tuple) or len(result) != 2:
            raise DSLError(usage)
        inputs, output = result
        if isinstance(inputs, Tensor):
            inputs = [inputs]
        if not isinstance(inputs, (list, tuple)) or not all(isinstance(t, Tensor) for t in inputs):
            raise DSLError(usage)
        if not isinstance(output, Tensor):
            raise DSLError(usage)
        inputs = tuple(inputs)
        for t in inputs:
            if not t.is_placeholder:
                raise DSLError(f"{self.name}: input '{t.name}' is a computed stage; inputs must be te.placeholder tensors")
        names = [t.name for t in inputs]
        if len(set(names)) != len(names):
            raise DSLError(f"{self.name}: two inputs share a name ({', '.join(names)}); give each a distinct name=")
        if output.is_placeholder:
            raise DSLError(f"{self.name}: the output '{output.name}' is a placeholder; it must be computed")
        stages = _collect_stages(self.name, output, inputs)
        stage_names = [t.name for t in stages]
        clash = sorted({n for n in stage_names if stage_names.count(n) > 1} | (set(stage_names) & set(names)))
        if clash:
            raise DSLError(f"{self.name}: tensor name {', '.join(clash)} is used twice; give each stage a distinct name=")
        allowed = set(self.dim_names)
        for t in inputs + stages:
            for s in t.shape:
                for node in walk(s):
                    if isinstance(node, DimVar) and node.name not in allowed:
                        raise DSLError(
                            f"{self.name}: tensor '{t.name}' uses dim {node.name}, which is not a parameter "
                            f"of the operator ({', '.join(self.dim_names)})"
                        )
        return Graph(self.name, dims, inputs, stages, output)


def _origin(error: BaseException) -> str:
    """` (file.py line N)`: the last frame of `error` outside tiletune, where the user's code failed."""
    frames = [f for f in traceback.extract_tb(error.__traceback__)
              if _PACKAGE_ROOT not in Path(f.filename).resolve().parents]
    return f" ({Path(frames[-1].filename).name} line {frames[-1].lineno})" if frames else ""


# tiletune's own code: the root above tensorexpr/, whether installed or in a checkout
_PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def operator(fn: Callable[..., object] | None = None, *, name: str | None = None):
    """Declare an operator: `@operator def rmsnorm(N, D): ... return [x, w], y`."""
    if fn is None:
        return lambda f: Operator(f, name)
    return Operator(fn, name)
