"""Hopper code paths of the contraction kernel: the persistent tile loop, tensor-descriptor
(TMA) loads, and the launcher pieces they need (the persistent grid, the descriptors' scratch
allocator and their stride checks).

The contraction kernel calls these only when the schedule turns a knob on; with every knob at
its default the generated source is exactly what it was before they existed.
"""
from __future__ import annotations

from tiletune.kernels.emit import TL_DTYPES, Value
from tiletune.kernels.kernel import KernelContext
from tiletune.schedules.hopper_rules import TmaOperand, tma_operand
from tiletune.tensorexpr import dtypes as dt

# Programs of a persistent grid in the interpreter: a small "GPU", so that CPU tests see every
# program loop over several tiles.
INTERPRETER_PROGRAMS = 4
# Hopper: 228 KiB of shared memory, 64 warps and 64K registers per SM.
SM_SHARED_BYTES = 228 * 1024
SM_WARPS = 64
SM_REGISTERS = 65536


def programs_per_sm(bm: int, bn: int, bk: int, stages: int, warps: int, item: int) -> int:
    """Blocks of this tile config one SM can hold at once (shared memory, warps, registers),
    estimated as the schedule rules do; the persistent grid launches this many per SM."""
    shared = stages * (bm + bn) * bk * item + 1024  # + the driver's reserve per block
    # the fp32 accumulator plus ~64 registers of addresses and loop state per thread
    registers = (bm * bn // (32 * warps) + 64) * 32 * warps
    return max(1, min(SM_SHARED_BYTES // shared, SM_WARPS // warps, SM_REGISTERS // registers))


def open_persistent_loop(k: KernelContext, tiles: str, batch: str) -> None:
    """Start the loop of a persistent program over tile ids (batch folded in, outermost) and
    leave `pid` as the tile's index within its batch entry; the body is indented under it."""
    b = k.body
    b.line(f"num_tiles = {tiles} * {batch}")
    b.line("# persistent: this program walks tiles pid0, pid0 + programs, ... in the grouped order below;")
    b.line("# flatten lets the pipeliner run the next tile's first loads under this tile's last dots")
    b.line("for tile_id in tl.range(tl.program_id(0), num_tiles, tl.num_programs(0), flatten=True):")
    b.indent += 1
    b.line(f"pid = tile_id % ({tiles})")


def persistent_grid(k: KernelContext, tiles: str, batch: str, per_sm: int) -> str:
    """The launcher's grid size of a persistent kernel: all tiles, or SM count x `per_sm`."""
    out = k.args[k.graph.output].ptr[: -len("_ptr")]
    programs = (f"(torch.cuda.get_device_properties({out}.device).multi_processor_count * {per_sm} "
                f"if {out}.is_cuda else {INTERPRETER_PROGRAMS})")
    return f"min({tiles} * {batch}, {programs})"


def tma_operands(k: KernelContext) -> dict[str, TmaOperand]:
    """The factors ("a", "b") this kernel loads through tensor descriptors."""
    found = {}
    for factor in ("a", "b"):
        op, _ = tma_operand(k.pattern, factor, None)
        if op is not None:
            found[factor] = op
    return found


def make_descriptors(k: KernelContext, operands: dict[str, TmaOperand], blocks: dict[str, tuple[str, str]]) -> dict[str, str]:
    """Emit one device-side descriptor per operand (before any tile loop: made once per
    program) and return their names. `blocks` gives each factor's (rows, cols) tile names in
    the kernel's orientation; a transposed operand's box is the other way round."""
    names = {}
    for factor, op in operands.items():
        arg = k.args[op.read.tensor]
        shape = [k.extent(axis.extent) for axis in op.read.indices]
        box = blocks[factor][::-1] if op.transposed else blocks[factor]
        # the launcher checked the last stride is 1: a descriptor's innermost dim is contiguous
        names[factor] = k.body.assign(
            f"{factor}_desc",
            f"tl.make_tensor_descriptor({arg.ptr}, shape=[{', '.join(shape)}], strides=[{arg.strides[0]}, 1], "
            f"block_shape=[{', '.join(box)}])",
        )
    return names


def descriptor_tile(k: KernelContext, factor: str, op: TmaOperand, desc: str, offsets: tuple[str, str]) -> Value:
    """Load one tile through `desc` at (row, col) `offsets` in the kernel's orientation; the
    copy engine fills out-of-bounds elements with zeros, so no mask is needed."""
    at = offsets[::-1] if op.transposed else offsets
    code = f"{desc}.load([{', '.join(at)}])"
    if op.transposed:
        code = f"tl.trans({code})"
    return Value(k.body.assign(f"{factor}_tile", code), frozenset({0, 1}), op.read.tensor.dtype)


def launcher_checks(k: KernelContext, operands: dict[str, TmaOperand]) -> list[str]:
    """Launcher lines that refuse tensors a descriptor cannot address, and give Triton the
    scratch allocator that device-side descriptors are built in on a GPU."""
    lines = []
    for op in operands.values():
        t = op.read.tensor
        name = k.args[t].ptr[: -len("_ptr")]
        item = dt.itemsize(t.dtype)
        lines += [
            f"    if {name}.stride(1) != 1 or ({name}.stride(0) * {item}) % 16 or {name}.data_ptr() % 16:",
            "        from tiletune.errors import UsageError",
            f"        raise UsageError(f\"'{t.name}' needs a contiguous last dim, 16-byte aligned rows and base for "
            f"LOAD='tma'; got strides {{{name}.stride()}}: pass a contiguous tensor or use LOAD='pointer'\")",
        ]
    out = k.args[k.graph.output].ptr[: -len("_ptr")]
    lines += [
        f"    if {out}.is_cuda:",
        "        triton.set_allocator(_descriptor_scratch)",
    ]
    return lines


SCRATCH_ALLOCATOR = '''def _descriptor_scratch(size, alignment, stream):
    """Global scratch memory for device-side tensor descriptors (one per program)."""
    return torch.empty(size, dtype=torch.int8, device="cuda")'''


def cast_to(value: Value, operand: str, k: KernelContext, name: str) -> Value:
    """`value` converted to the dot's operand type (a no-op when it already is)."""
    if value.dtype == operand:
        return value
    return Value(k.body.assign(f"{name}_op", f"{value.code}.to({TL_DTYPES[operand]})"), value.dims, operand)
