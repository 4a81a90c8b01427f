"""Read a compiled kernel's machine code (SASS): what decides its speed that the CPU can see.

`cuobjdump -sass` (shipped in Triton's NVIDIA backend) disassembles a cubin without a GPU.
`summarize` reduces the listing to the facts that compare two kernels at one config:

- tensor-core work: the number of warpgroup MMAs (`HGMMA`) and their shapes;
- how operands arrive: asynchronous copies (`LDGSTS`, sm_80 style), TMA loads (`UTMALDG`) and
  stores (`UTMASTG`), plain global loads and stores (`LDG`, `STG`);
- the **main loop**: the steady-state loop body, found from backward branches, and its
  instruction count, the figure that separates a lean kernel from one that recomputes masks
  and addresses on every trip.

The main loop is the innermost loop with the most MMAs (then the most global loads, for kernels
without MMAs); among equal loops, the one with the fewest instructions, because equal loops
are a peeled steady state and its masked variant (attention's off-diagonal and diagonal
blocks), and the steady state runs most trips. A kernel without any loop reports its whole
body. Padding `NOP`s after the final `EXIT` are not counted anywhere.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict, dataclass

from tiletune.errors import CompileError
from tiletune.kernels.compile import run_cuobjdump

__all__ = ["Instruction", "Loop", "SassSummary", "disassemble", "find_loops", "parse_sass", "summarize"]

# `/*0630*/  @!P0 LDGSTS.E.BYPASS.128 [R43], desc[UR14][R2.64], P0 ;`
_LINE = re.compile(r"^\s*/\*(?P<addr>[0-9a-f]{4,})\*/\s+(?P<pred>@!?U?P\w+\s+)?(?P<op>[A-Z][\w.]*)(?P<rest>[^;]*);")
_FUNCTION = re.compile(r"^\s*Function\s*:\s*(?P<name>\S+)")
_BRANCH_TARGET = re.compile(r"0x(?P<target>[0-9a-f]+)")


@dataclass(frozen=True, slots=True)
class Instruction:
    address: int
    opcode: str
    """The full mnemonic with its modifiers: `HGMMA.64x128x16.F32`, `LDGSTS.E.BYPASS.128`."""
    operands: str
    predicated: bool

    @property
    def base(self) -> str:
        """The mnemonic without modifiers: `HGMMA`, `LDGSTS`."""
        return self.opcode.split(".", 1)[0]

    def branch_target(self) -> int | None:
        """The absolute address a branch jumps to, or None for any other instruction."""
        if self.base not in ("BRA", "BRX", "JMP"):
            return None
        match = _BRANCH_TARGET.search(self.operands)
        return int(match["target"], 16) if match else None


@dataclass(frozen=True, slots=True)
class Loop:
    """Instructions `start..end` (indices, inclusive) close with a branch back to `start`."""

    start: int
    end: int

    def contains(self, other: Loop) -> bool:
        return self.start <= other.start and other.end <= self.end and self != other

    @property
    def size(self) -> int:
        return self.end - self.start + 1


@dataclass(frozen=True, slots=True)
class SassSummary:
    instructions: int
    hgmma: int
    hgmma_shapes: tuple[str, ...]
    """Distinct MMA shapes and accumulator types, e.g. `64x128x16.F32`."""
    ldgsts: int
    utmaldg: int
    utmastg: int
    ldg: int
    stg: int
    loops: int
    main_loop_instructions: int
    main_loop_hgmma: int

    @property
    def load_kind(self) -> str:
        """How operands reach shared memory: `UTMALDG`, `LDGSTS`, both, or plain `LDG`."""
        kinds = [k for k, n in (("UTMALDG", self.utmaldg), ("LDGSTS", self.ldgsts)) if n]
        return "+".join(kinds) if kinds else ("LDG" if self.ldg else "none")

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "hgmma_shapes": list(self.hgmma_shapes), "load_kind": self.load_kind}


def parse_sass(text: str, function: str | None = None) -> list[Instruction]:
    """The instructions of `function` (the first function when None) in a `cuobjdump -sass` listing."""
    instructions: list[Instruction] = []
    current: str | None = None
    for line in text.splitlines():
        header = _FUNCTION.match(line)
        if header:
            if instructions:
                break  # the wanted function ended
            current = header["name"]
            continue
        if current is None or (function is not None and current != function):
            continue
        match = _LINE.match(line)
        if match:
            instructions.append(Instruction(int(match["addr"], 16), match["op"], match["rest"].strip(),
                                            match["pred"] is not None))
    if not instructions:
        which = f"function {function!r}" if function else "any function"
        raise CompileError(f"cuobjdump -sass listing has no instructions for {which}")
    return _without_tail_padding(instructions)


def disassemble(cubin: bytes, function: str | None = None) -> list[Instruction]:
    """Disassemble a cubin with the `cuobjdump` in Triton's NVIDIA backend."""
    return parse_sass(run_cuobjdump(cubin, "-sass"), function)


def find_loops(instructions: list[Instruction]) -> list[Loop]:
    """Every backward branch's loop, by instruction index."""
    index = {ins.address: i for i, ins in enumerate(instructions)}
    loops = []
    for i, ins in enumerate(instructions):
        target = ins.branch_target()
        if target is not None and target <= ins.address and target in index:
            loops.append(Loop(index[target], i))
    return loops


def summarize(instructions: list[Instruction]) -> SassSummary:
    counts = Counter(ins.base for ins in instructions)
    shapes = sorted({ins.opcode.split(".", 1)[1] for ins in instructions if ins.base == "HGMMA" and "." in ins.opcode})
    loops = find_loops(instructions)
    main = _main_loop(instructions, loops)
    body = instructions[main.start:main.end + 1] if main else instructions
    return SassSummary(
        instructions=len(instructions),
        hgmma=counts["HGMMA"],
        hgmma_shapes=tuple(shapes),
        ldgsts=counts["LDGSTS"],
        utmaldg=counts["UTMALDG"],
        utmastg=counts["UTMASTG"],
        ldg=counts["LDG"],
        stg=counts["STG"],
        loops=len(loops),
        main_loop_instructions=len(body),
        main_loop_hgmma=sum(1 for ins in body if ins.base == "HGMMA"),
    )


_GLOBAL_LOADS = ("LDG", "LDGSTS", "UTMALDG")


def _main_loop(instructions: list[Instruction], loops: list[Loop]) -> Loop | None:
    if not loops:
        return None

    def weight(loop: Loop) -> tuple[int, int]:
        body = instructions[loop.start:loop.end + 1]
        return (sum(1 for i in body if i.base == "HGMMA"), sum(1 for i in body if i.base in _GLOBAL_LOADS))

    best = max(weight(loop) for loop in loops)
    heaviest = [loop for loop in loops if weight(loop) == best]
    innermost = [loop for loop in heaviest if not any(loop.contains(other) for other in heaviest)]
    return min(innermost, key=lambda loop: (loop.size, loop.start))


def _without_tail_padding(instructions: list[Instruction]) -> list[Instruction]:
    """Drop the `BRA`-to-self and `NOP`s that pad the code after the last `EXIT`."""
    last_exit = max((i for i, ins in enumerate(instructions) if ins.base == "EXIT"), default=len(instructions) - 1)
    tail = instructions[last_exit + 1:]
    kept = [ins for ins in tail if ins.base != "NOP" and ins.branch_target() != ins.address]
    return instructions[:last_exit + 1] + kept
