"""A fuzz program: a plain JSON description of a TE graph that rebuilds it.

A program is a dict (so a finding is a self-contained reproducer file):

    {"version": 1, "name": "fz_...", "dims": {"D0": 17, ...},
     "inputs": [{"name": "x0", "shape": ["D0", 1], "dtype": "float16", "domain": null}, ...],
     "stages": [{"name": "s0", "shape": [...], "axes": ["i0", ...],
                 "reduce_axes": [["r0", "D1"], ...], "body": EXPR}, ...]}

The last stage is the output. A shape entry (an extent) is an int literal, a dim name or an
expression over dims. An EXPR is a JSON list whose head names the node:

    ["axis", name]            a spatial or reduce axis of the stage
    ["dim", name]             a dim's value
    ["const", value]          a number (weakly typed, as a Python literal in the DSL)
    ["read", tensor, [idx]]   tensor[idx...]
    ["pad", tensor, [idx], v] te.pad_read(tensor, idx, v)
    ["bin", op, a, b]         add sub mul truediv floordiv mod maximum minimum
    ["un", op, x]             neg exp log sqrt rsqrt tanh sigmoid erf abs
    ["cmp", op, a, b]         lt le gt ge eq ne
    ["where", c, a, b]        te.where
    ["cast", dtype, x]        x.astype(dtype)
    ["reduce", op, [axes], x] te.sum/max/min/argmax/argmin over reduce axes
    ["scan", op, axis, x]     te.scan(op, x, axis)

`build` turns it into an Operator through the ordinary DSL functions, so every check the DSL
makes on a user's declaration applies to a fuzz program too.
"""
from __future__ import annotations

import copy
import inspect
import json
import math
from typing import Any

from tiletune import tensorexpr as te
from tiletune.errors import DSLError
from tiletune.tensorexpr.expr import DimVar, Expr, as_expr, binary, compare, select, unary
from tiletune.tensorexpr.operator import Graph, Operator

VERSION = 1
Program = dict[str, Any]

_REDUCERS = {"sum": te.sum, "max": te.max, "min": te.min, "argmax": te.argmax, "argmin": te.argmin}


def dumps(program: Program) -> str:
    """The program as canonical JSON text (sorted keys; infinities as JSON's Infinity)."""
    return json.dumps(program, sort_keys=True)


def loads(text: str) -> Program:
    """A program from its JSON text, checked to be of a version this code reads."""
    program = json.loads(text)
    if not isinstance(program, dict) or program.get("version") != VERSION:
        raise DSLError(f"fuzz program: expected a JSON object with version {VERSION}, got "
                       f"{program.get('version') if isinstance(program, dict) else type(program).__name__}")
    return program


def clone(program: Program) -> Program:
    """A deep copy (programs are plain JSON data)."""
    return copy.deepcopy(program)


def build(program: Program) -> Operator:
    """The operator the program describes (DSLError if the DSL refuses it)."""
    dim_names = list(program["dims"])

    def declare(*dims: DimVar) -> tuple[list, object]:
        env_dims = dict(zip(dim_names, dims))
        tensors: dict[str, te.Tensor] = {}
        for spec in program["inputs"]:
            shape = tuple(_extent(s, env_dims) for s in spec["shape"])
            domain = tuple(spec["domain"]) if spec.get("domain") else None
            tensors[spec["name"]] = te.placeholder(shape, spec["dtype"], name=spec["name"], domain=domain)
        out = None
        for stage in program["stages"]:
            shape = tuple(_extent(s, env_dims) for s in stage["shape"])
            reduce_axes = {name: te.reduce_axis(_extent(ext, env_dims), name=name)
                           for name, ext in stage.get("reduce_axes", [])}

            def body(*axes, stage=stage, reduce_axes=reduce_axes):
                env = {**reduce_axes, **{n: a for n, a in zip(stage["axes"], axes)}}
                return _expr(stage["body"], env, env_dims, tensors)

            body.__signature__ = inspect.Signature(
                [inspect.Parameter(n, inspect.Parameter.POSITIONAL_ONLY) for n in stage["axes"]])
            out = tensors[stage["name"]] = te.compute(shape, body, name=stage["name"])
        if out is None:
            raise DSLError("fuzz program: it has no stages")
        used = _inputs_read(program)
        return [tensors[s["name"]] for s in program["inputs"] if s["name"] in used], out

    declare.__signature__ = inspect.Signature(
        [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in dim_names])
    return Operator(declare, program.get("name", "fuzz"))


def graph(program: Program) -> Graph:
    """The program's graph."""
    return build(program).graph()


def _inputs_read(program: Program) -> set[str]:
    names = {s["name"] for s in program["inputs"]}
    found: set[str] = set()
    for stage in program["stages"]:
        for node in nodes(stage["body"]):
            if node[0] in ("read", "pad") and node[1] in names:
                found.add(node[1])
    return found


def nodes(expr: list):
    """Every node of an expression, parents before children."""
    if not isinstance(expr, list):
        return  # a literal (an int or float inside an index or extent expression)
    yield expr
    for child in children(expr):
        yield from nodes(child)


def children(expr: list) -> list[list]:
    """The sub-expressions of one node (index lists included)."""
    head = expr[0]
    if head in ("read",):
        return list(expr[2])
    if head == "pad":
        return [*expr[2], expr[3]] if isinstance(expr[3], list) else list(expr[2])
    if head in ("bin", "cmp"):
        return [expr[2], expr[3]]
    if head == "un":
        return [expr[2]]
    if head == "where":
        return [expr[1], expr[2], expr[3]]
    if head == "cast":
        return [expr[2]]
    if head in ("reduce", "scan"):
        return [expr[3]]
    return []


def _extent(spec: object, dims: dict[str, DimVar]) -> int | Expr:
    if isinstance(spec, bool):
        raise DSLError(f"fuzz program: an extent must be an int, a dim name or an expression, got {spec!r}")
    if isinstance(spec, int):
        return spec
    if isinstance(spec, str):
        if spec not in dims:
            raise DSLError(f"fuzz program: unknown dim {spec!r}")
        return dims[spec]
    return _expr(spec, {}, dims, {})


def _expr(e: object, env: dict, dims: dict[str, DimVar], tensors: dict) -> Expr:
    if isinstance(e, (int, float)) and not isinstance(e, bool):
        return as_expr(e)
    if isinstance(e, str):
        return _extent(e, dims)  # a dim name used as a value
    if not isinstance(e, list) or not e:
        raise DSLError(f"fuzz program: malformed expression {e!r}")
    head, args = e[0], e[1:]

    def sub(x: object) -> Expr:
        return _expr(x, env, dims, tensors)

    if head == "axis":
        if args[0] not in env:
            raise DSLError(f"fuzz program: unknown axis {args[0]!r}")
        return env[args[0]]
    if head == "dim":
        return _extent(args[0], dims)
    if head == "const":
        return as_expr(float(args[0]) if isinstance(args[0], float) or not math.isfinite(args[0]) else args[0])
    if head in ("read", "pad"):
        if args[0] not in tensors:
            raise DSLError(f"fuzz program: unknown tensor {args[0]!r}")
        idx = tuple(sub(i) for i in args[1])
        if head == "read":
            return tensors[args[0]][idx]
        return te.pad_read(tensors[args[0]], idx, args[2])
    if head == "bin":
        return binary(args[0], sub(args[1]), sub(args[2]))
    if head == "un":
        return unary(args[0], sub(args[1]))
    if head == "cmp":
        return compare(args[0], sub(args[1]), sub(args[2]))
    if head == "where":
        return select(sub(args[0]), sub(args[1]), sub(args[2]))
    if head == "cast":
        return sub(args[1]).astype(args[0])
    if head == "reduce":
        if args[0] not in _REDUCERS:
            raise DSLError(f"fuzz program: unknown reduction {args[0]!r}")
        return _REDUCERS[args[0]](sub(args[2]), axis=[env[a] for a in args[1]])
    if head == "scan":
        return te.scan(args[0], sub(args[2]), axis=env[args[1]])
    raise DSLError(f"fuzz program: unknown expression node {head!r}")
