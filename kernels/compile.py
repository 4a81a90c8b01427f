"""Ahead-of-time compile of a Triton kernel for an NVIDIA target on the CPU, and its resource usage.

`aot_compile` turns one (kernel, signature, constexprs, num_warps, num_stages) into a cubin
without a GPU and reads what the hardware will have to provide for it: registers per thread,
spilled bytes, shared memory. These static facts feed legality checks, the simulated device
and the cost model's features.

    usage = aot_compile(matmul_kernel, {"a_ptr": "*fp16", ..., "BLOCK_M": "constexpr"},
                        {"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64},
                        num_warps=8, num_stages=3, aligned=("a_ptr", "b_ptr", "c_ptr"))
"""
from __future__ import annotations

import contextlib
import io
import re
import subprocess
import tempfile
import time
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import triton
import triton.backends.nvidia
from triton.backends.compiler import GPUTarget
from triton.runtime.errors import OutOfResources, PTXASError
from triton.runtime.jit import JITFunction

from tiletune.errors import CompileError, UsageError
from tiletune.kernels import process_mode
from tiletune.kernels.target import H100

__all__ = [
    "MAX_SHARED_PER_BLOCK",
    "CompiledKernel",
    "ResourceUsage",
    "aot_compile",
    "aot_compile_binary",
    "compiler_mode",
    "cuobjdump_path",
    "parse_resource_usage",
    "run_cuobjdump",
]

#: Largest dynamic shared memory one block may opt in to, in bytes, per compute capability
#: (CUDA C Programming Guide, "Technical Specifications per Compute Capability"). Triton checks
#: the same limit only when a kernel is loaded on a device, so an AOT compile must check it here.
MAX_SHARED_PER_BLOCK: Mapping[int, int] = {
    80: 166_912,  # A100: 163 KiB
    86: 101_376,  # GA10x: 99 KiB
    87: 166_912,
    89: 101_376,  # Ada: 99 KiB
    90: H100.max_smem_per_block,  # H100/H200: 227 KiB
    100: 232_448,
    120: 101_376,
}

#: Threads per block, the same on every capability Triton targets.
MAX_THREADS_PER_BLOCK = 1024

_WARP_SIZE = 32


@dataclass(frozen=True, slots=True)
class ResourceUsage:
    """What one compiled kernel asks of the hardware, and what compiling it cost."""

    registers: int
    """Registers per thread (cuobjdump `REG`)."""
    spill_bytes: int
    """Per-thread local memory in bytes: cuobjdump `STACK` + `LOCAL` (spills land in STACK)."""
    shared_bytes: int
    """Dynamic shared memory per block in bytes (the compiled kernel's `metadata.shared`)."""
    num_warps: int
    num_stages: int
    compile_seconds: float
    """Wall time of `triton.compile`; a hit in Triton's on-disk cache makes this small."""

    def to_dict(self) -> dict[str, int | float]:
        """A JSON-ready dict of the fields."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> ResourceUsage:
        """Rebuild from `to_dict()` output; unknown keys are an error, not silently dropped."""
        names = [f.name for f in fields(cls)]
        missing = [n for n in names if n not in data]
        extra = sorted(set(data) - set(names))
        if missing or extra:
            raise UsageError(f"ResourceUsage.from_dict: missing keys {missing}, unknown keys {extra}; "
                             f"expected exactly {names}")
        return cls(
            registers=int(data["registers"]),  # type: ignore[arg-type]
            spill_bytes=int(data["spill_bytes"]),  # type: ignore[arg-type]
            shared_bytes=int(data["shared_bytes"]),  # type: ignore[arg-type]
            num_warps=int(data["num_warps"]),  # type: ignore[arg-type]
            num_stages=int(data["num_stages"]),  # type: ignore[arg-type]
            compile_seconds=float(data["compile_seconds"]),  # type: ignore[arg-type]
        )


def cuobjdump_path() -> Path:
    """The `cuobjdump` shipped in Triton's NVIDIA backend (no CUDA toolkit needed)."""
    return Path(triton.backends.nvidia.__file__).parent / "bin" / "cuobjdump"


_FUNCTION_LINE = re.compile(r"^\s*Function\s+(?P<name>\S+?)\s*:\s*$")
_FIELD = re.compile(r"(?P<key>[A-Z_]+(?:\[\d+\])?):(?P<value>\d+)")
_REQUIRED_FIELDS = ("REG", "STACK", "SHARED", "LOCAL")


def parse_resource_usage(text: str, function: str | None = None) -> dict[str, int]:
    """Parse `cuobjdump --dump-resource-usage` output into `{"REG": .., "STACK": .., ...}`.

    Reads the block of `function`, or of the first function when none is named. Every
    `KEY:value` field of that block is returned (`CONSTANT[0]` included); `REG`, `STACK`,
    `SHARED` and `LOCAL` are guaranteed present.
    """
    lines = text.splitlines()
    for i, line in enumerate(lines):
        match = _FUNCTION_LINE.match(line)
        if match is None or (function is not None and match["name"] != function):
            continue
        usage: dict[str, int] = {}
        # The fields sit on the line after the header; read until the next header to be safe
        # against a cuobjdump that wraps them.
        for body in lines[i + 1:]:
            if _FUNCTION_LINE.match(body):
                break
            usage.update({m["key"]: int(m["value"]) for m in _FIELD.finditer(body)})
        missing = [k for k in _REQUIRED_FIELDS if k not in usage]
        if missing:
            raise CompileError(f"cuobjdump output for {match['name']!r} lacks {missing}: {line.strip()!r}")
        return usage
    which = f"function {function!r}" if function is not None else "any function"
    raise CompileError(f"cuobjdump output names no resource usage for {which}")


@dataclass(frozen=True, slots=True)
class CompiledKernel:
    """A cubin with its function name and resource usage, for reading its machine code."""

    name: str
    cubin: bytes
    usage: ResourceUsage


def aot_compile(
    fn: JITFunction,
    signature: Mapping[str, str],
    constexprs: Mapping[str, object],
    *,
    num_warps: int,
    num_stages: int,
    capability: int = 90,
    aligned: Collection[str] = (),
) -> ResourceUsage:
    """Compile `fn` for `sm_<capability>` on the CPU and return its resource usage (see
    `aot_compile_binary`, which also keeps the cubin)."""
    return aot_compile_binary(fn, signature, constexprs, num_warps=num_warps, num_stages=num_stages,
                              capability=capability, aligned=aligned).usage


def aot_compile_binary(
    fn: JITFunction,
    signature: Mapping[str, str],
    constexprs: Mapping[str, object],
    *,
    num_warps: int,
    num_stages: int,
    capability: int = 90,
    aligned: Collection[str] = (),
) -> CompiledKernel:
    """Compile `fn` for `sm_<capability>` on the CPU and return its cubin and resource usage.

    `signature` maps every argument name to its Triton type (`"*fp16"`, `"i32"`, ...), with
    `"constexpr"` for the ones bound in `constexprs` (added automatically where left out).
    `aligned` names arguments known to be multiples of 16 (16-byte-aligned pointers, strides
    and sizes divisible by 16): Triton's JIT specializes on exactly this at launch, and without
    it loads cannot be vectorized or pipelined, so leaving it out compiles a different kernel
    than the one that will run. Needs a process where Triton compiles (`compiler_mode()`);
    tiletune runs it in worker processes started with `TRITON_INTERPRET=0`. Raises `CompileError` with a one-line reason when Triton
    rejects the kernel or it cannot fit the target (shared memory, threads); `UsageError`
    when the arguments do not match `fn`.
    """
    process_mode.select()  # fixes Triton's fused multiply-add default before compiling
    if not compiler_mode():
        raise UsageError("aot_compile: this process runs Triton's interpreter (TRITON_INTERPRET was set "
                         "when Triton was first imported), which cannot compile; run it in a worker "
                         "process started with TRITON_INTERPRET=0")
    if not isinstance(fn, JITFunction):
        raise UsageError(f"aot_compile: expected a @triton.jit function, got {type(fn).__name__}")
    ordered = _ordered_signature(fn, signature, constexprs)
    unknown_aligned = sorted(set(aligned) - set(ordered))
    if unknown_aligned:
        raise UsageError(f"{fn.__name__}: aligned names unknown arguments {unknown_aligned}")
    attrs = {(fn.arg_names.index(name),): [["tt.divisibility", 16]] for name in aligned}
    config = _describe(constexprs, num_warps, num_stages)

    source = triton.compiler.ASTSource(fn=fn, signature=ordered, constexprs=dict(constexprs), attrs=attrs)
    target = GPUTarget("cuda", capability, _WARP_SIZE)
    start = time.perf_counter()
    try:
        # On a ptxas failure Triton prints the whole PTX to stdout; the reason we keep is enough.
        with contextlib.redirect_stdout(io.StringIO()):
            compiled = triton.compile(source, target=target,
                                      options={"num_warps": num_warps, "num_stages": num_stages})
    except Exception as exc:
        raise CompileError(f"{fn.__name__} ({config}): {_one_line_reason(exc)}") from None
    compile_seconds = time.perf_counter() - start

    shared = int(compiled.metadata.shared)
    shared_limit = MAX_SHARED_PER_BLOCK.get(capability)
    if shared_limit is not None and shared > shared_limit:
        reason = _one_line_reason(OutOfResources(shared, shared_limit, "shared memory"))
        raise CompileError(f"{fn.__name__} ({config}): {reason}")
    threads = num_warps * _WARP_SIZE
    if threads > MAX_THREADS_PER_BLOCK:
        reason = _one_line_reason(OutOfResources(threads, MAX_THREADS_PER_BLOCK, "threads"))
        raise CompileError(f"{fn.__name__} ({config}): {reason}")

    cubin = compiled.asm["cubin"]
    usage = parse_resource_usage(_dump_resource_usage(cubin), compiled.metadata.name)
    return CompiledKernel(compiled.metadata.name, cubin, ResourceUsage(
        registers=usage["REG"],
        spill_bytes=usage["STACK"] + usage["LOCAL"],
        shared_bytes=shared,
        num_warps=num_warps,
        num_stages=num_stages,
        compile_seconds=compile_seconds,
    ))


def compiler_mode() -> bool:
    """Whether this process's Triton compiles `@jit` functions rather than interpreting them.

    Triton fixes the mode when `triton.language` is first imported (its own `tl.sum` is a
    `@jit` function then), so a process that interprets cannot also compile.
    """
    return isinstance(triton.language.standard.sum, JITFunction)


def _ordered_signature(
    fn: JITFunction, signature: Mapping[str, str], constexprs: Mapping[str, object]
) -> dict[str, str]:
    """The signature in `fn`'s argument order: Triton reads its types positionally."""
    merged = dict(signature)
    for name in constexprs:
        merged.setdefault(name, "constexpr")
    names = list(fn.arg_names)
    missing = [n for n in names if n not in merged]
    extra = [n for n in merged if n not in names]
    not_const = [n for n in constexprs if merged.get(n) != "constexpr"]
    unbound = [n for n in names if merged.get(n) == "constexpr" and n not in constexprs]
    problems = []
    if missing:
        problems.append(f"no type for {missing}")
    if extra:
        problems.append(f"unknown arguments {extra}")
    if not_const:
        problems.append(f"constexprs {not_const} typed other than 'constexpr'")
    if unbound:
        problems.append(f"constexpr arguments {unbound} have no value")
    if problems:
        raise UsageError(f"{fn.__name__}: signature does not match the kernel: {'; '.join(problems)}; "
                         f"expected arguments {names}")
    return {n: merged[n] for n in names}


def _describe(constexprs: Mapping[str, object], num_warps: int, num_stages: int) -> str:
    """`BLOCK_M=64, ..., num_warps=4, num_stages=3`: the config, for error messages."""
    parts = [f"{k}={v}" for k, v in sorted(constexprs.items())]
    parts += [f"num_warps={num_warps}", f"num_stages={num_stages}"]
    return ", ".join(parts)


# Lines that frame a compiler error but do not say what went wrong.
_NOISE = re.compile(r"^(Repro command:|`ptxas` stderr:|ptxas fatal\s*:|at \d+:\d+:|\^$)")


def _one_line_reason(exc: BaseException) -> str:
    """The line of a Triton error that says what went wrong, without source context or advice."""
    if isinstance(exc, OutOfResources):
        # Its text ends in advice ("Reducing block sizes ... may help.") that belongs to the tuner.
        return f"out of resource: {exc.name}, Required: {exc.required}, Hardware limit: {exc.limit}"
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if isinstance(exc, PTXASError):
        # The ptxas log's own "error" line is the reason; the last line is a repro command.
        errors = [line for line in lines if "error" in line.lower() and not _NOISE.match(line)]
        return errors[-1] if errors else (lines[0] if lines else "ptxas failed")
    meaningful = [line for line in lines if not _NOISE.match(line)]
    if not meaningful:
        return type(exc).__name__
    return meaningful[-1]


def _dump_resource_usage(cubin: bytes) -> str:
    """Run cuobjdump on a cubin and return its text."""
    return run_cuobjdump(cubin, "--dump-resource-usage")


def run_cuobjdump(cubin: bytes, *options: str) -> str:
    """The text `cuobjdump OPTIONS` prints for `cubin`, with Triton's own cuobjdump."""
    tool = cuobjdump_path()
    if not tool.exists():
        raise CompileError(f"cuobjdump not found at {tool}; expected it in Triton's NVIDIA backend")
    with tempfile.TemporaryDirectory(prefix="tiletune-cubin-") as tmp:
        path = Path(tmp) / "kernel.cubin"
        path.write_bytes(cubin)
        result = subprocess.run([str(tool), *options, str(path)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        detail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise CompileError(f"cuobjdump {' '.join(options)} failed with code {result.returncode}: {detail}")
    return result.stdout
