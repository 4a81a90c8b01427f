"""tiletune's kernels against tutorial-structured Triton kernels, compared in sm_90 machine code.

No GPU needed: both kernels of a case are compiled for Hopper (sm_90) on the CPU at the same
config, with the launch specialization Triton's JIT would apply to contiguous tensors at the
case's shape (integers equal to 1 become constants, multiples of 16 and every pointer are marked
aligned), then disassembled. Per case it reports registers, spills, shared memory, HGMMA count
and shape, how operands load (LDGSTS / UTMALDG), the main loop's instruction count
(`kernels/sass.py` says how the main loop is found) and the ratios. The bar: main loop at most
1.05x the reference's, registers at most the reference's + 8, no spills.

    python bench/sass_parity.py                  # every case, a table
    python bench/sass_parity.py -k attention     # cases whose name contains "attention"
    python bench/sass_parity.py --json out.json --check   # exit 1 when a case misses the bar

The reference kernels live in `bench/reference_kernels.py`; they are the structure of Triton's
tutorials 02, 03, 05, 06 and 09, written for tiletune's operand layouts.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ["TRITON_INTERPRET"] = "0"  # this script compiles; it never runs a kernel

sys.path.insert(0, str(Path(__file__).resolve().parent))

import reference_kernels as ref

from tiletune.errors import IllegalConfig, TiletuneError
from tiletune.kernels.compile import CompiledKernel, aot_compile_binary
from tiletune.kernels.runtime import load_module
from tiletune.kernels.sass import SassSummary, disassemble, summarize
from tiletune.kernels.task import TaskSpec
from tiletune.schedules.config import Config

MAIN_LOOP_BAR = 1.05
REGISTER_SLACK = 8
NUM_SMS = 132  # H100 SXM; a persistent grid's program count is a constexpr in the references

_TRITON_TYPES = {"float16": "fp16", "bfloat16": "bf16", "float32": "fp32"}


@dataclass(frozen=True)
class Reference:
    """A reference kernel and the arguments it would be launched with."""

    kernel: object
    pointers: tuple[str, ...]
    ints: dict[str, int]
    floats: tuple[str, ...] = ()
    constexprs: dict[str, object] = field(default_factory=dict)

    def compile(self, dtype: str, num_warps: int, num_stages: int) -> CompiledKernel:
        signature = {name: f"*{_TRITON_TYPES[dtype]}" for name in self.pointers}
        signature.update({name: "i32" for name in self.ints})
        signature.update({name: "fp32" for name in self.floats})
        # What Triton's JIT does at launch: ints equal to 1 become constants, multiples of 16
        # (and torch's 16-byte aligned pointers) are marked divisible by 16.
        constants = {name: 1 for name, value in self.ints.items() if value == 1}
        signature.update({name: "constexpr" for name in constants})
        aligned = [*self.pointers, *(n for n, v in self.ints.items() if v % 16 == 0 and v != 1)]
        return aot_compile_binary(self.kernel, signature, {**self.constexprs, **constants},
                                  num_warps=num_warps, num_stages=num_stages, aligned=aligned)


@dataclass(frozen=True)
class Case:
    name: str
    op: str
    dims: dict[str, int]
    dtype: str
    config: dict[str, object]
    reference: Reference


def _gemm_cases() -> list[Case]:
    cases = []
    # 4000^3 divides no tile (4000 = 31 * 128 + 32): masks belong on the last K tile and the edges only
    shapes = {"4096^3": (4096, 4096, 4096), "M128xN4096": (128, 4096, 4096), "M128xN14336": (128, 14336, 4096),
              "4000^3": (4000, 4000, 4000)}
    structures = [  # (name, shape, BLOCK_M, BLOCK_N, BLOCK_K, stages, warps, LOAD, PERSISTENT, WARP_SPECIALIZE)
        ("pointer", "4096^3", 128, 256, 64, 3, 8, "pointer", False, False),
        ("pointer", "4096^3", 128, 128, 64, 4, 4, "pointer", False, False),
        ("pointer", "M128xN4096", 64, 128, 64, 4, 4, "pointer", False, False),
        ("pointer", "M128xN14336", 128, 128, 64, 4, 4, "pointer", False, False),
        ("tma", "4096^3", 128, 256, 64, 3, 8, "tma", False, False),
        ("tma", "M128xN14336", 128, 128, 64, 4, 4, "tma", False, False),
        ("warp-specialized", "4096^3", 128, 128, 64, 3, 4, "tma", False, True),
        ("persistent-tma", "4096^3", 128, 128, 64, 3, 8, "tma", True, False),
        ("persistent-pointer", "4096^3", 128, 128, 64, 3, 8, "pointer", True, False),
        ("pointer", "4000^3", 128, 128, 64, 4, 4, "pointer", False, False),
        ("tma", "4000^3", 128, 128, 64, 4, 4, "tma", False, False),
    ]
    for dtype in ("float16", "bfloat16"):
        for name, shape, bm, bn, bk, stages, warps, load, persistent, ws in structures:
            if dtype == "bfloat16" and name not in ("pointer", "tma") :
                continue
            M, N, K = shapes[shape]
            config = dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=8, num_stages=stages, num_warps=warps,
                          LOAD=load, PERSISTENT=persistent, WARP_SPECIALIZE=ws)
            tiles = dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=8)
            if load == "pointer":
                kernel = ref.tutorial_persistent_matmul_kernel if persistent else ref.tutorial_matmul_kernel
                ints = dict(M=M, N=N, K=K, stride_am=K, stride_ak=1, stride_bk=N, stride_bn=1, stride_cm=N, stride_cn=1)
            else:
                kernel = ref.tutorial_persistent_tma_matmul_kernel if persistent else ref.tutorial_tma_matmul_kernel
                ints = dict(M=M, N=N, K=K, stride_am=K, stride_bk=N, stride_cm=N)
                if not persistent:
                    tiles["WARP_SPECIALIZE"] = ws
            if persistent:
                tiles["NUM_PROGRAMS"] = NUM_SMS
            cases.append(Case(f"gemm {dtype} {name} {shape} {bm}x{bn}x{bk} s{stages}w{warps}", "matmul",
                              dict(M=M, N=N, K=K), dtype, config,
                              Reference(kernel, ("a_ptr", "b_ptr", "c_ptr"), ints, constexprs=tiles)))
    return cases


def _attention_cases() -> list[Case]:
    cases = []
    B, H, S = 4, 16, 4096
    for causal in (False, True):
        for head_dim, bm, bn, warps in ((64, 128, 64, 4), (128, 128, 128, 8)):
            # warp specialization applies with one consumer warpgroup (num_warps=4) only
            structures = (("pointer", False), ("tma", False)) + ((("tma", True),) if warps == 4 else ())
            for load, ws in structures:
                op = "causal_attention" if causal else "attention"
                config = dict(BLOCK_M=bm, BLOCK_N=bn, num_stages=3, num_warps=warps, LOAD=load, WARP_SPECIALIZE=ws)
                reference = Reference(
                    ref.tutorial_attention_kernel, ("q_ptr", "k_ptr", "v_ptr", "o_ptr"), dict(BH=B * H, S=S),
                    floats=("sm_scale",),
                    constexprs=dict(HEAD_DIM=head_dim, BLOCK_M=bm, BLOCK_N=bn, CAUSAL=causal,
                                    LOAD_TMA=load == "tma", WARP_SPECIALIZE=ws))
                structure = "tma+ws" if ws else load
                cases.append(Case(f"{op} float16 {structure} D{head_dim} {bm}x{bn} s3w{warps}", op,
                                  dict(B=B, H=H, S=S, D=head_dim), "float16", config, reference))
    return cases


def _row_cases() -> list[Case]:
    N, D = 4096, 4096
    row = dict(D=D, stride_x=D, stride_y=D)
    kernels = {
        "softmax": (ref.softmax_kernel, ("x_ptr", "y_ptr"), ()),
        "layernorm": (ref.layernorm_kernel, ("x_ptr", "w_ptr", "b_ptr", "y_ptr"), ("eps",)),
        "rmsnorm": (ref.rmsnorm_kernel, ("x_ptr", "w_ptr", "y_ptr"), ("eps",)),
    }
    cases = []
    for op, (kernel, pointers, floats) in kernels.items():
        for warps in (4, 8):
            config = dict(BLOCK_RED=D, BLOCK_ROWS=1, num_warps=warps)
            cases.append(Case(f"{op} float16 {N}x{D} w{warps}", op, dict(N=N, D=D), "float16", config,
                              Reference(kernel, pointers, row, floats, dict(BLOCK=D))))
    return cases


CASES: list[Case] = [*_gemm_cases(), *_attention_cases(), *_row_cases()]


def compile_tiletune(case: Case) -> CompiledKernel:
    """tiletune's kernel for the case, compiled as `compile_step` compiles a candidate."""
    task = TaskSpec.make(case.op, case.dims, case.dtype).build()
    default = task.space.default().as_dict()
    unknown = sorted(set(case.config) - set(default))
    values = {k: v for k, v in case.config.items() if k in default}
    config = Config.from_dict({**default, **values})
    task.space.check(config)
    if unknown and any(case.config[k] not in (False, "pointer") for k in unknown):
        raise TiletuneError(f"the space of {case.op} has no knob(s) {unknown}")
    src = task.source(config)
    constants, aligned = task.specialization(src)
    signature = dict(src.signature)
    signature.update({name: "constexpr" for name in constants})
    fn = getattr(load_module(src), src.kernel_name)
    return aot_compile_binary(fn, signature, {**src.constexprs, **constants},
                              num_warps=src.num_warps, num_stages=src.num_stages, aligned=aligned)


def _side(compiled: CompiledKernel) -> dict[str, object]:
    summary: SassSummary = summarize(disassemble(compiled.cubin, compiled.name))
    usage = compiled.usage
    return {"registers": usage.registers, "spill_bytes": usage.spill_bytes, "shared_bytes": usage.shared_bytes,
            **summary.to_dict()}


def run_case(case: Case) -> dict[str, object]:
    row: dict[str, object] = {"case": case.name, "op": case.op, "dims": case.dims, "dtype": case.dtype,
                              "config": case.config}
    warps, stages = int(case.config["num_warps"]), int(case.config.get("num_stages", 1))
    try:
        row["reference"] = _side(case.reference.compile(case.dtype, warps, stages))
    except TiletuneError as error:
        row["reference"] = {"error": str(error)}
    try:
        row["tiletune"] = _side(compile_tiletune(case))
    except IllegalConfig as error:  # the space refuses the config, with its reason
        row["tiletune"] = {"error": str(error)}
        row["verdict"] = "refused"
        return row
    except TiletuneError as error:
        row["tiletune"] = {"error": str(error)}
    ours, theirs = row["tiletune"], row["reference"]
    if "error" in ours or "error" in theirs:
        row["verdict"] = "error"
        return row
    row["main_loop_ratio"] = round(ours["main_loop_instructions"] / max(1, theirs["main_loop_instructions"]), 3)
    row["register_delta"] = ours["registers"] - theirs["registers"]
    ok = (row["main_loop_ratio"] <= MAIN_LOOP_BAR and row["register_delta"] <= REGISTER_SLACK
          and ours["spill_bytes"] == 0)
    row["verdict"] = "parity" if ok else "behind"
    return row


def _cell(side: dict[str, object]) -> str:
    if "error" in side:
        return "—"
    shapes = ",".join(s.split(".")[0] for s in side["hgmma_shapes"]) or "-"
    return (f"{side['registers']:>3} reg {side['spill_bytes']:>3} spill {side['shared_bytes'] // 1024:>3} KiB "
            f"{side['hgmma']:>3}x{shapes:<10} {side['load_kind']:<14} loop {side['main_loop_instructions']:>4}")


def format_table(rows: list[dict[str, object]]) -> str:
    lines = ["| case | tiletune | reference | loop ratio | reg Δ | verdict |", "|---|---|---|---|---|---|"]
    for row in rows:
        ours, theirs = row["tiletune"], row["reference"]
        if row["verdict"] in ("refused", "error"):
            reason = ours.get("error") or theirs.get("error") or ""
            reason = reason.split("): ", 1)[-1] if reason.startswith("illegal config") else reason[:110]
            lines.append(f"| {row['case']} | {_cell(ours)} | {_cell(theirs)} | | | {row['verdict']}: {reason} |")
            continue
        lines.append(f"| {row['case']} | {_cell(ours)} | {_cell(theirs)} | {row['main_loop_ratio']:.2f} "
                     f"| {row['register_delta']:+d} | {row['verdict']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-k", dest="pattern", default="", help="only cases whose name contains this text")
    parser.add_argument("--json", type=Path, help="write every row as JSON to this file")
    parser.add_argument("--check", action="store_true", help="exit 1 when a case misses the bar")
    args = parser.parse_args(argv)
    cases = [c for c in CASES if args.pattern in c.name]
    if not cases:
        parser.error(f"no case name contains {args.pattern!r}; cases: {[c.name for c in CASES]}")
    rows = []
    start = time.perf_counter()
    for case in cases:
        rows.append(run_case(case))
        print(f"{case.name}: {rows[-1]['verdict']}", file=sys.stderr, flush=True)
    print(format_table(rows))
    behind = [r["case"] for r in rows if r["verdict"] in ("behind", "error")]
    print(f"\n{len(rows) - len(behind)}/{len(rows)} cases at parity or refused with a reason "
          f"({time.perf_counter() - start:.0f} s)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        import triton
        meta = {"date": time.strftime("%Y-%m-%d"), "target": "sm_90 (compiled on the CPU; no GPU ran)",
                "triton": triton.__version__, "python": sys.version.split()[0]}
        args.json.write_text(json.dumps({**meta, "bar": {"main_loop_ratio": MAIN_LOOP_BAR,
                                                          "register_slack": REGISTER_SLACK},
                                         "rows": rows}, indent=1) + "\n")
    return 1 if args.check and behind else 0


if __name__ == "__main__":
    sys.exit(main())
