"""The Hopper knobs of the contraction family: persistent programs, TMA tensor-descriptor loads
and warp specialization. Here are the legality rules that decide where each applies, and the
code paths of the contraction kernel that each one turns on.

Each knob defaults to the behaviour from before it existed (one program per tile, pointer
loads, no specialization), and a config that leaves it out means that default, so recorded
configs, tuning DBs and sweeps stay valid; with every knob at its default the generated source
is exactly what it was before they existed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from tiletune.kernels.emit import TL_DTYPES, Value, variable
from tiletune.kernels.families.contraction.operands import TENSOR_CORE_DTYPES
from tiletune.kernels.families.pattern import Pattern
from tiletune.kernels.kernel import KernelContext, narrowing_cast
from tiletune.kernels.grid import Grid
from tiletune.kernels.specialize import GridSize, RowsAligned
from tiletune.kernels.target import KERNEL_TARGET
from tiletune.kernels.triton_versions import installed as installed_triton
from tiletune.schedules.knobs import Boolean, Choice
from tiletune.schedules.schedule import Schedule
from tiletune.tensorexpr import dtypes as dt
from tiletune.tensorexpr.analysis import inline_injective, strip_casts
from tiletune.tensorexpr.expr import IterVar, Read, walk
from tiletune.tensorexpr.operator import evaluate_extent
from tiletune.tensorexpr.tensor import Tensor

# A TMA box's global strides must be multiples of 16 bytes, and so must its base address.
TMA_ALIGN_BYTES = 16
TMA_DTYPES = ("float16", "bfloat16", "float32", "float8_e4m3fn")


@dataclass(frozen=True, slots=True)
class TmaOperand:
    """A factor of the contraction that a tensor descriptor can load: the read, and whether
    the tensor is stored transposed against the tile ([k, m] for a, [n, k] for b)."""

    read: Read
    transposed: bool


def tma_operand(pattern: Pattern, factor: str, dims: Mapping[str, int] | None) -> tuple[TmaOperand | None, str]:
    """The descriptor load of factor "a" or "b", or None and why a descriptor cannot load it
    (`dims` None: the structure only, as lowering asks; the launcher checks the strides)."""
    contraction = pattern.contraction
    if factor == "a":
        expr, roles = contraction.a, (contraction.m, contraction.k)
    else:
        expr, roles = contraction.b, (contraction.k, contraction.n)
    if contraction.fused is not None:
        return None, "an implicit GEMM gathers its tiles through index arithmetic"
    if contraction.batch:
        return None, "batched contractions keep pointer loads"
    narrowing = narrowing_cast(expr)
    if narrowing is not None:
        return None, f"factor {factor} narrows to {narrowing.dtype} after loading"
    expr = strip_casts(expr)
    if not (isinstance(expr, Read) and expr.tensor.is_placeholder):
        return None, f"factor {factor} is computed, not a plain read of an input"
    t = expr.tensor
    if t.dtype not in TMA_DTYPES:
        return None, f"'{t.name}' is {t.dtype}, not one of {', '.join(TMA_DTYPES)}"
    if t.ndim != 2 or not all(isinstance(i, IterVar) for i in expr.indices) or set(expr.indices) != set(roles):
        return None, f"'{t.name}' is not read as a 2-D tile of the contraction's axes"
    if dims is None:
        return TmaOperand(expr, transposed=expr.indices[0] is not roles[0]), ""
    row = evaluate_extent(expr.indices[1].extent, dims) * dt.itemsize(t.dtype)
    if row % TMA_ALIGN_BYTES:
        return None, (f"rows of '{t.name}' are {row} bytes, not a multiple of {TMA_ALIGN_BYTES} "
                      "(a descriptor's strides must be 16-byte aligned)")
    return TmaOperand(expr, transposed=expr.indices[0] is not roles[0]), ""


def add_hopper_knobs(schedule: Schedule, pattern: Pattern, dims: Mapping[str, int], split: bool, operand: str) -> None:
    """PERSISTENT, LOAD and WARP_SPECIALIZE on a contraction schedule whose dots take `operand`
    tiles, with their constraints."""
    schedule.persistent(Boolean("PERSISTENT", default=False))
    schedule.load_via(Choice("LOAD", ("pointer", "tma"), default="pointer"))
    schedule.warp_specialize("k", Boolean("WARP_SPECIALIZE", default=False))
    operands = [tma_operand(pattern, f, dims) for f in ("a", "b")]
    triton = installed_triton()
    if not triton.tensor_descriptors:
        schedule.constrain("TMA loads need tl.make_tensor_descriptor",
                           lambda cfg: f"Triton {triton.version} has no device-side tensor descriptors"
                           if cfg["LOAD"] == "tma" else None)
    # the kernel source does not depend on dims: it loads every factor of descriptor form through
    # a descriptor, so each of those must be aligned at these dims, not just one of them
    unaligned = [reason for f, (op, reason) in zip(("a", "b"), operands)
                 if op is None and tma_operand(pattern, f, None)[0] is not None]
    if not any(op for op, _ in operands):
        reason = f"no factor can use a tensor descriptor: a: {operands[0][1]}; b: {operands[1][1]}"
        schedule.constrain("TMA loads need an aligned 2-D operand",
                           lambda cfg: reason if cfg["LOAD"] == "tma" else None)
    elif unaligned:
        reason = f"a factor loaded through a descriptor is not aligned: {unaligned[0]}"
        schedule.constrain("TMA loads need every descriptor operand aligned",
                           lambda cfg: reason if cfg["LOAD"] == "tma" else None)
    if split:
        # split-K programs own (tile, split) pairs and write a workspace slice picked by their
        # program ids: a persistent loop over output tiles does not cover them
        schedule.constrain(
            "persistent programs do not split K",
            lambda cfg: f"PERSISTENT with SPLIT_K={cfg['SPLIT_K']}" if cfg["PERSISTENT"] and cfg["SPLIT_K"] > 1 else None,
        )
    schedule.constrain("warp specialization applies on sm_90", lambda cfg: warp_specialization_fits(cfg, operand))


def warp_specialization_fits(cfg, operand: str) -> str | None:
    """Where the installed Triton splits the K loop into producer and consumer warps on sm_90,
    read off sm_90 compiles (Triton 3.6 to 3.9 alike: `triton_versions`): elsewhere the flag
    either fails to compile (pointer loads at 4 warps) or is dropped silently (a config that
    only duplicates its neighbour)."""
    if not cfg["WARP_SPECIALIZE"]:
        return None
    if not installed_triton().warp_specialized_loops:
        return f"Triton {installed_triton().version} does not warp-specialize loops"
    if cfg["LOAD"] != "tma":
        return "WARP_SPECIALIZE needs LOAD='tma': the producer warps issue descriptor copies"
    if cfg["PERSISTENT"]:
        return "WARP_SPECIALIZE of the K loop is not applied inside a persistent tile loop"
    if operand not in TENSOR_CORE_DTYPES:
        return f"WARP_SPECIALIZE needs a wgmma operand (16- or 8-bit), not {operand}"
    if cfg["num_stages"] < 2:
        return "WARP_SPECIALIZE needs num_stages >= 2: the producer runs ahead by the buffered stages"
    if cfg["num_warps"] != 4:
        return f"WARP_SPECIALIZE needs num_warps=4 (one consumer warpgroup), got {cfg['num_warps']}"
    if cfg["BLOCK_M"] < 64:
        return f"WARP_SPECIALIZE needs BLOCK_M >= 64 (wgmma's rows), got {cfg['BLOCK_M']}"
    return None


# Shared memory beyond the pipeline's stages, read off sm_90 compiles: descriptor loads add
# their mbarriers (tens of bytes); a persistent kernel with descriptors stages the output tile
# (BLOCK_M x BLOCK_N 16-bit) for the next tile's overlap; warp specialization hands the
# accumulator over through ~16.5 KiB.
def extra_shared_bytes(cfg) -> int:
    """Bytes of shared memory the Hopper knobs of `cfg` add to its pipeline buffers."""
    extra = 0
    if cfg["LOAD"] == "tma":
        extra += 1024
        if cfg["PERSISTENT"]:
            extra += cfg["BLOCK_M"] * cfg["BLOCK_N"] * 2
    if cfg["WARP_SPECIALIZE"]:
        extra += 17 * 1024
    return extra


def programs_per_sm(bm: int, bn: int, bk: int, stages: int, warps: int, item: int) -> int:
    """Blocks of this tile config one SM of the kernel target holds at once, estimated before
    any compile: the pipeline's shared memory, and the fp32 accumulator plus ~64 registers of
    addresses and loop state per thread. The persistent grid launches this many per SM."""
    registers = bm * bn // (32 * warps) + 64
    return KERNEL_TARGET.blocks_per_sm(registers, stages * (bm + bn) * bk * item, warps)


def open_persistent_loop(kernel: KernelContext, tiles: str, batch: str, grid: Grid) -> None:
    """Start the loop of a persistent program over tile ids (batch folded in, outermost) and
    leave `pid` as the tile's index within its batch entry; the body is indented under it.
    Programs stride by the launcher's program count, passed as the constexpr NUM_PROGRAMS."""
    programs = kernel.specialize(GridSize("NUM_PROGRAMS", grid))
    body = kernel.body
    body.line(f"num_tiles = {tiles}" if batch == "1" else f"num_tiles = {tiles} * {batch}")
    body.line("# persistent: this program walks tiles pid0, pid0 + programs, ... in the grouped order below;")
    body.line("# flatten lets the pipeliner run the next tile's first loads under this tile's last dots")
    body.line(f"for tile_id in tl.range(tl.program_id(0), num_tiles, {programs}, flatten=True):")
    body.indent += 1
    body.line("pid = tile_id" if batch == "1" else f"pid = tile_id % ({tiles})")


def tma_operands(kernel: KernelContext) -> dict[str, TmaOperand]:
    """The factors ("a", "b") this kernel loads through tensor descriptors."""
    found = {}
    for factor in ("a", "b"):
        op, _ = tma_operand(kernel.pattern, factor, None)
        if op is not None:
            found[factor] = op
    return found


def make_descriptors(kernel: KernelContext, operands: dict[str, TmaOperand], blocks: dict[str, tuple[str, str]]) -> dict[str, str]:
    """Emit one device-side descriptor per operand (before any tile loop: made once per
    program) and return their names. `blocks` gives each factor's (rows, cols) tile names in
    the kernel's orientation; a transposed operand's box is the other way round."""
    names = {}
    for factor, op in operands.items():
        arg = kernel.args[op.read.tensor]
        shape = [kernel.extent(axis.extent) for axis in op.read.indices]
        box = blocks[factor][::-1] if op.transposed else blocks[factor]
        # the launcher checked the last stride is 1: a descriptor's innermost dim is contiguous
        names[factor] = kernel.body.assign(
            f"{factor}_desc",
            f"tl.make_tensor_descriptor({arg.ptr}, shape=[{', '.join(shape)}], strides=[{arg.strides[0]}, 1], "
            f"block_shape=[{', '.join(box)}])",
        )
    return names


def descriptor_tile(kernel: KernelContext, factor: str, op: TmaOperand, desc: str, offsets: tuple[str, str]) -> Value:
    """Load one tile through `desc` at (row, col) `offsets` in the kernel's orientation; the
    copy engine fills out-of-bounds elements with zeros, so no mask is needed."""
    at = offsets[::-1] if op.transposed else offsets
    code = f"{desc}.load([{', '.join(at)}])"
    if op.transposed:
        code = f"tl.trans({code})"
    return Value(kernel.body.assign(f"{factor}_tile", code), frozenset({0, 1}), op.read.tensor.dtype)


def output_descriptor(kernel: KernelContext, block: tuple[str, str]) -> str | None:
    """With LOAD='tma', the descriptor the epilogue stores the output tile through, or None
    where a descriptor cannot hold the output: it must be a plain 2-D [M, N] tensor of a
    descriptor dtype that the epilogue writes element for element of the accumulator. Whether
    its rows are 16-byte aligned is a fact of each call: the launcher's `TMA_STORE` flag
    (`tiletune.kernels.specialize.RowsAligned`); without it the epilogue keeps masked stores."""
    graph, contraction = kernel.graph, kernel.pattern.contraction
    out = graph.output
    if contraction.fused is not None or contraction.batch or out.dtype not in TMA_DTYPES:
        return None
    if tuple(out.shape) != (contraction.m.extent, contraction.n.extent):
        return None
    if tuple(contraction.stage.op.axes) != (contraction.m, contraction.n):
        return None
    if out is not contraction.stage:
        reads = {r for r in walk(inline_injective(out.op.body, frozenset({contraction.stage})))
                 if isinstance(r, Read) and r.tensor is contraction.stage}
        if len(reads) != 1 or next(iter(reads)).indices != tuple(out.op.axes):
            return None
    flag = kernel.specialize(RowsAligned("TMA_STORE", out))
    arg = kernel.args[out]
    body = kernel.body
    body.line(f"if {flag}:  # the output's rows suit a descriptor: the epilogue stores the tile by TMA")
    body.indent += 1
    name = body.assign(
        f"{variable(out.name)}_desc",
        f"tl.make_tensor_descriptor({arg.ptr}, shape=[{kernel.extent(out.shape[0])}, {kernel.extent(out.shape[1])}], "
        f"strides=[{arg.strides[0]}, 1], block_shape=[{', '.join(block)}])",
    )
    body.indent -= 1
    return name


def launcher_checks(kernel: KernelContext, operands: dict[str, TmaOperand]) -> list[str]:
    """`descriptor_checks` for the operands loaded through descriptors."""
    return descriptor_checks(kernel, [op.read.tensor for op in operands.values()])


def descriptor_checks(kernel: KernelContext, tensors: Sequence[Tensor]) -> list[str]:
    """Launcher lines that refuse tensors a descriptor cannot address (a strided last dim,
    strides or base not 16-byte aligned), and give Triton the scratch allocator that
    device-side descriptors are built in on a GPU."""
    lines = []
    for t in tensors:
        name = kernel.args[t].ptr[: -len("_ptr")]
        item = dt.itemsize(t.dtype)
        outer = " or ".join(f"({name}.stride({n}) * {item}) % {TMA_ALIGN_BYTES}" for n in range(t.ndim - 1))
        lines += [
            f"    if {name}.stride({t.ndim - 1}) != 1 or {outer} or {name}.data_ptr() % {TMA_ALIGN_BYTES}:",
            "        from tiletune.errors import UsageError",
            f"        raise UsageError(f\"'{t.name}' needs a contiguous last dim, 16-byte aligned strides and base for "
            f"LOAD='tma'; got strides {{{name}.stride()}}: pass a contiguous tensor or use LOAD='pointer'\")",
        ]
    out = kernel.args[kernel.graph.output].ptr[: -len("_ptr")]
    lines += [f"    if {out}.is_cuda:", "        triton.set_allocator(_descriptor_scratch)"]
    return lines


SCRATCH_ALLOCATOR = '''def _descriptor_scratch(size, alignment, stream):
    """Global scratch memory for device-side tensor descriptors (one per program)."""
    return torch.empty(size, dtype=torch.int8, device="cuda")'''


def cast_to(value: Value, operand: str, kernel: KernelContext, name: str) -> Value:
    """`value` converted to the dot's operand type (a no-op when it already is)."""
    if value.dtype == operand:
        return value
    return Value(kernel.body.assign(f"{name}_op", f"{value.code}.to({TL_DTYPES[operand]})"), value.dims, operand)
