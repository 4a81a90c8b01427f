"""Checking a generated kernel against the reference evaluator.

Tolerance rule: an output element passes when |out - ref| <= atol + rtol * |ref|, with rtol set
by the output dtype (float32 1e-4, float16 1e-2, bfloat16 4e-2, float8_e4m3fn 1.25e-1) and
atol = rtol * mean(|ref|) * max(1, sqrt(L)), L the longest reduction or scan in the operator:
rounding errors of a sum grow like the square root of its length (a scan's last element is a
sum of that length, its earlier ones shorter sums). Every run writes into a fresh output
filled with NaN (integers: the type's minimum, having no NaN), so a kernel that leaves part of
its output unwritten cannot pass; the output lies between two guard bands of that fill, so a
kernel that writes outside its output (a wrong mask) fails instead of corrupting memory unseen.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch

from tiletune.kernels import runtime
from tiletune.kernels.families import Pattern, family_for
from tiletune.kernels.grid import Grid, Persistent, Product, Tiles
from tiletune.kernels.kernel import KernelSource
from tiletune.schedules.schedule import ResolvedSchedule
from tiletune.tensorexpr import dtypes as dt
from tiletune.tensorexpr.expr import Read, walk
from tiletune.tensorexpr.operator import Graph, evaluate_extent
from tiletune.tensorexpr.reference import evaluate, torch_dtype

RTOL = {"float32": 1e-4, "float64": 1e-7, "float16": 1e-2, "bfloat16": 4e-2, "float8_e4m3fn": 1.25e-1}


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of one check: ok, the worst error relative to the allowed one, and why not."""

    ok: bool
    worst: float
    reason: str = ""


def make_inputs(graph: Graph, dims: Mapping[str, int], seed: int = 0, device: str = "cpu") -> list[torch.Tensor]:
    """Random inputs for `graph` at `dims`, reproducible from `seed`."""
    gen = torch.Generator().manual_seed(seed)
    inputs = []
    gathers = gather_extents(graph, dims)
    for t in graph.inputs:
        shape = graph.shape_of(t, dims)
        domain = getattr(t.op, "domain", None)
        if t in gathers:
            # indices into an axis: mostly in range, and -1 to exercise the masked read
            x = torch.randint(-1, gathers[t], shape, generator=gen).to(torch_dtype(t.dtype))
        elif t.dtype.startswith(("float", "bfloat")) and domain is not None:
            low, high = domain
            x = (low + (high - low) * torch.rand(shape, generator=gen)).to(torch_dtype(t.dtype))
        elif t.dtype == "float8_e4m3fn":
            # e4m3 holds +-448 but only 3 mantissa bits: keep to +-8, where its spacing is fine
            x = torch.randn(shape, generator=gen, dtype=torch.float32).clamp(-8, 8).to(torch_dtype(t.dtype))
        elif t.dtype.startswith(("float", "bfloat")):
            x = torch.randn(shape, generator=gen, dtype=torch.float32).to(torch_dtype(t.dtype))
        elif t.dtype == "bool":
            x = torch.randint(0, 2, shape, generator=gen).bool()
        else:
            x = torch.randint(-8, 8, shape, generator=gen).to(torch_dtype(t.dtype))
        inputs.append(x.to(device))
    return inputs


def gather_extents(graph: Graph, dims: Mapping[str, int]) -> dict:
    """Integer inputs read as indices of another read (a gather, x[n, t[n]]), each mapped to
    the smallest extent of the axes it indexes."""
    found: dict = {}
    for stage in graph.stages:
        for node in walk(stage.op.body):
            if not isinstance(node, Read):
                continue
            for axis_no, index in enumerate(node.indices):
                if isinstance(index, Read) and index.tensor.is_placeholder:
                    extent = evaluate_extent(node.tensor.shape[axis_no], dims)
                    found[index.tensor] = min(found.get(index.tensor, extent), extent)
    return found


def longest_reduction(graph: Graph, dims: Mapping[str, int]) -> int:
    """The length of the longest reduction or scan in the operator (1 if it has none)."""
    longest = 1
    for stage in graph.stages:
        if stage.scan is not None:
            longest = max(longest, evaluate_extent(stage.scan.axis.extent, dims))
        red = stage.reduction
        if red is not None:
            longest = max(longest, math.prod(evaluate_extent(a.extent, dims) for a in red.axes))
    return longest


def compare(out: torch.Tensor, ref: torch.Tensor, dtype: str, reduction_length: int,
            tolerance_dtype: str | None = None) -> Verdict:
    """Compare a kernel's output with the reference under the tolerance rule above (rtol of
    `tolerance_dtype` if given, else of `dtype`)."""
    out64, ref64 = out.detach().cpu().double(), ref.double()
    if out64.shape != ref64.shape:
        return Verdict(False, math.inf, f"output shape {tuple(out64.shape)}, expected {tuple(ref64.shape)}")
    if dt.is_float(dtype):
        unwritten = torch.isnan(out64) & ~torch.isnan(ref64)
    else:
        fill = unwritten_fill(dtype)
        unwritten = (out64 == fill) & (ref64 != fill)
    if unwritten.any():
        return Verdict(False, math.inf, f"{int(unwritten.sum())} of {out64.numel()} output elements left unwritten "
                       f"({'NaN' if dt.is_float(dtype) else 'the fill value'})")
    rtol = RTOL.get(tolerance_dtype or dtype, 0.0)
    finite = ref64[torch.isfinite(ref64)]
    scale = float(finite.abs().mean()) if finite.numel() else 0.0
    atol = rtol * max(scale, 1e-30) * max(1.0, math.sqrt(reduction_length))
    # the same infinity, or NaN where the reference is NaN (a mean over nothing), is right
    same = (torch.isinf(ref64) & (out64 == ref64)) | (torch.isnan(ref64) & torch.isnan(out64))
    err = torch.where(same, torch.zeros_like(out64), (out64 - ref64).abs())
    allowed = atol + rtol * torch.nan_to_num(ref64.abs())
    ratio = float((err / allowed.clamp_min(1e-300)).max()) if err.numel() else 0.0
    if ratio > 1.0 or math.isnan(ratio):
        where = int(torch.argmax(torch.nan_to_num(err / allowed, nan=math.inf)))
        expected = float(ref64.flatten()[where])
        # a NaN reference is usually random inputs outside the operator's domain, not a bad kernel
        hint = ("; the reference is NaN there: if the random inputs leave the operator's domain, bound "
                "them with te.placeholder(..., domain=(low, high))") if math.isnan(expected) else ""
        return Verdict(
            False, ratio,
            f"max error {float(err.flatten()[where]):.3g} at flat index {where} exceeds tolerance "
            f"{float(allowed.flatten()[where]):.3g} (got {float(out64.flatten()[where]):.6g}, "
            f"expected {expected:.6g}){hint}",
        )
    return Verdict(True, ratio)


def check(graph: Graph, src: KernelSource, dims: Mapping[str, int], seed: int = 0, device: str = "cpu",
          tolerance_dtype: str | None = None) -> Verdict:
    """Run `src` at `dims` on random inputs (CPU tensors run through the interpreter) and
    compare it with the reference evaluator; `tolerance_dtype` overrides the output's dtype
    in the tolerance rule (a program that rounds to a narrower type on the way)."""
    dims = graph.check_dims(dims)
    inputs = make_inputs(graph, dims, seed)
    ref = evaluate(graph, inputs, dims)
    out, stray = launch_guarded(graph, src, [x.to(device) for x in inputs], dims, device)
    if stray:
        return Verdict(False, math.inf, f"the kernel wrote {stray} elements outside its output (a mask is wrong)")
    return compare(out, ref, graph.output.dtype, longest_reduction(graph, dims), tolerance_dtype)


def launch_guarded(graph: Graph, src: KernelSource, inputs: Sequence[torch.Tensor], dims: Mapping[str, int],
                   device: str = "cpu") -> tuple[torch.Tensor, int]:
    """Run `src` into a fresh output filled with `unwritten_fill` between guard bands of it;
    (the output, how many guard elements the kernel wrote)."""
    dtype = graph.output.dtype
    shape = graph.shape_of(graph.output, dims)
    numel = math.prod(shape)
    fill = unwritten_fill(dtype)
    guard = max(256, min(numel, 1 << 16))
    buffer = torch.full((guard + numel + guard,), fill, dtype=torch_dtype(dtype), device=device)
    out = buffer[guard: guard + numel].view(shape)
    # The interpreter computes masked-off lanes too (on the load's fill value): numpy's overflow
    # and divide-by-zero warnings there say nothing about the kernel and must not reach the user.
    with np.errstate(all="ignore"):
        runtime.launch(src, inputs, out, dims)
    bands = torch.cat([buffer[:guard], buffer[guard + numel:]]).double().cpu()
    stray = int((~torch.isnan(bands)).sum()) if dt.is_float(dtype) else int((bands != fill).sum())
    return out, stray


def _tiles(terms) -> list[Tiles]:
    """The `Tiles` terms among grid `terms` (inside products and persistent grids too)."""
    found = []
    for term in terms:
        if isinstance(term, Tiles):
            found.append(term)
        elif isinstance(term, Product):
            found += _tiles(term.terms)
        elif isinstance(term, Persistent):
            found += _tiles([term.work])
    return found


def unwritten_fill(dtype: str) -> float | int:
    """What a fresh output is filled with before a run: NaN, or for an integer type (which has
    no NaN) its minimum."""
    return float("nan") if dt.is_float(dtype) else torch.iinfo(torch_dtype(dtype)).min


def verification_dims(
    graph: Graph, dims: Mapping[str, int], schedule: ResolvedSchedule, pattern: Pattern | None = None
) -> dict[str, int]:
    """Smaller dims at which to check a candidate cheaply in the interpreter, as the operator's
    family chooses them: each dim that sizes a tiled axis shrinks to just over two tiles and an
    odd remainder, so masks and loop tails are exercised (see each `Family.verification_dims`);
    then outer dims shrink further while the interpreter would run more than
    MAX_VERIFY_PROGRAMS programs (`fewer_programs`)."""
    family = family_for(graph, pattern)
    return fewer_programs(graph, family.grid(schedule), family.verification_dims(dims, schedule))


# The interpreter runs a kernel's programs one after another at some 0.1 s each on a busy
# core: a window kernel with one row per program checked at N=C=H=W=7 ran 147 of them (13 s).
MAX_VERIFY_PROGRAMS = 32


def fewer_programs(graph: Graph, grid: Grid, dims: Mapping[str, int]) -> dict[str, int]:
    """`dims` with dims stepped down by 2 (keeping their parity, so an odd size keeps its odd
    remainder) while the grid launches more than MAX_VERIFY_PROGRAMS programs, largest dim
    first; a step is taken only if it launches fewer programs, every tensor keeps a non-empty
    shape, every grid axis keeps at least three programs (or as many as it had), and every
    tiled extent with a partial last tile keeps one (so the masks the family meant to check run)."""
    small = dict(dims)
    before = grid.shape(small, None)
    floor = [min(n, 3) for n in before]
    partial = [t for t in _tiles(grid.axes) if t.extent.size(small, None) % t.block]
    while grid.programs(small, None) > MAX_VERIFY_PROGRAMS:
        for name in sorted(small, key=lambda k: (-small[k], k)):
            if small[name] <= 2:
                continue
            trial = {**small, name: small[name] - 2}
            shape = grid.shape(trial, None)
            if (math.prod(shape) < grid.programs(small, None) and all(n >= f for n, f in zip(shape, floor))
                    and all(t.extent.size(trial, None) % t.block for t in partial)
                    and all(s >= 1 for t in (*graph.inputs, *graph.stages) for s in graph.shape_of(t, trial))):
                small = trial
                break
        else:
            return small  # no dim can step down further
    return small


def check_candidate(graph: Graph, src: KernelSource, dims: Mapping[str, int], schedule: ResolvedSchedule,
                    seed: int = 0) -> Verdict:
    """Check a tuning candidate at its verification dims (see `verification_dims`)."""
    return check(graph, src, verification_dims(graph, dims, schedule), seed)

