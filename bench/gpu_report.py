"""The GPU suite's report: figures per case, summary geomeans, the results JSON and the README
table. Plain Python (no GPU, no torch), so that it is tested with made-up figures.

A case, as `bench/gpu_suite.py` measures it:

    {"id": "gemm-fp16-4096x4096x4096", "kind": "gemm" | "epilogue" | "memory" | "attention",
     "op": "matmul", "dtype": "float16", "dims": {...}, "flops": 1.4e11, "bytes": 1.0e8,
     "us": {"tiletune": 610.2, "eager": 640.0, "compile": 655.1, "triton": 700.3},  # None: failed
     "spread": {"tiletune": 0.01, ...}, "failures": {"triton": "why"}, "errors": {"eager": 1e-4},
     "tuning_seconds": 58.1, "tiletune_config": {...}}

Ratios are baseline time over tiletune time: above 1, tiletune is faster.
"""
from __future__ import annotations

import json
import math
import os
import statistics
import tempfile
from pathlib import Path
from typing import Iterable, Mapping

BASELINES = ("eager", "compile", "triton")
BASELINE_NAMES = {"eager": "torch eager (cuBLAS / SDPA)", "compile": "torch.compile max-autotune-no-cudagraphs",
                  "triton": "Triton references (fastest of autotune, tutorial TMA / WS / persistent)"}
README_BEGIN = "<!-- gpu-suite:begin -->"
README_END = "<!-- gpu-suite:end -->"


def geomean(values: Iterable[float | None]) -> float | None:
    """Geometric mean of the positive finite values (None if there are none)."""
    kept = [v for v in values if v is not None and math.isfinite(v) and v > 0]
    return math.exp(statistics.fmean(math.log(v) for v in kept)) if kept else None


def ratios(case: Mapping) -> dict[str, float | None]:
    """Each baseline's time over tiletune's (None where either is missing)."""
    mine = case["us"].get("tiletune")
    return {b: (case["us"][b] / mine if mine and case["us"].get(b) else None) for b in BASELINES if b in case["us"]}


def throughput(case: Mapping, impl: str) -> dict[str, float]:
    """TFLOP/s and GB/s of one implementation of a case (empty if it has no time)."""
    us = case["us"].get(impl)
    if not us:
        return {}
    return {"tflops": case["flops"] / us / 1e6, "gbps": case["bytes"] / us / 1e3}


def enrich(case: Mapping, copy_gbps: float | None, ceiling_tflops: float | None) -> dict:
    """The case with its ratios, throughputs and percentages of the measured ceilings."""
    out = dict(case)
    out["ratios"] = ratios(case)
    out["throughput"] = {impl: throughput(case, impl) for impl in case["us"] if case["us"].get(impl)}
    mine = out["throughput"].get("tiletune", {})
    out["pct_of_copy_bw"] = 100 * mine["gbps"] / copy_gbps if mine and copy_gbps else None
    out["pct_of_compute_ceiling"] = 100 * mine["tflops"] / ceiling_tflops if mine and ceiling_tflops else None
    return out


def summarize(cases: list[Mapping], copy_gbps: float | None, ceiling_tflops: float | None) -> dict:
    """The headline figures over the cases."""
    rich = [enrich(c, copy_gbps, ceiling_tflops) for c in cases]

    def of(kind: str, baseline: str) -> float | None:
        return geomean(c["ratios"].get(baseline) for c in rich if c["kind"] == kind)

    memory = [c["pct_of_copy_bw"] for c in rich if c["kind"] == "memory"]
    tuning = [c["tuning_seconds"] for c in rich if c.get("tuning_seconds") is not None]
    by_kind = {kind: {b: of(kind, b) for b in BASELINES}
               for kind in sorted({c["kind"] for c in rich})}
    return {
        "gemm_vs_cublas_geomean": of("gemm", "eager"),
        "epilogue_vs_eager_geomean": of("epilogue", "eager"),
        "attention_vs_sdpa_geomean": of("attention", "eager"),
        "memory_bound_pct_of_copy_bw": geomean(memory),
        "tuning_seconds_median": statistics.median(tuning) if tuning else None,
        "geomean_ratios_by_kind": by_kind,
        "cases": rich,
    }


def merge_cases(old: list[Mapping], new: list[Mapping]) -> list[dict]:
    """`old` with every case of `new` added or replacing the one of the same id; order kept."""
    merged = {c["id"]: dict(c) for c in old}
    merged.update({c["id"]: dict(c) for c in new})
    return list(merged.values())


def build_result(device: str, versions: Mapping, cases: list[Mapping], copy_gbps: float | None,
                 ceiling_tflops: float | None, extra: Mapping | None = None) -> dict:
    """The results JSON: device, versions, the summary keys, then the enriched cases."""
    summary = summarize(cases, copy_gbps, ceiling_tflops)
    return {"device": device, "versions": dict(versions), **summary, "copy_bandwidth_gbps": copy_gbps,
            "compute_ceiling_tflops": ceiling_tflops, **(dict(extra) if extra else {})}


def load_result(path: Path) -> dict | None:
    """An earlier results file of this device and date, or None."""
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    return data if isinstance(data, dict) and isinstance(data.get("cases"), list) else None


def write_json(path: Path, data: Mapping) -> None:
    """Write `data` as JSON atomically (temp file in the folder, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(json.dumps(data, indent=2) + "\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _x(value: float | None) -> str:
    return f"{value:.2f}x" if value is not None else "-"


def markdown_table(result: Mapping, source: str) -> str:
    """The README table: per kind, geomean ratios against each baseline, and the headlines."""
    lines = [
        f"Measured on {result['device']} ({source}); ratios are baseline time / tiletune time "
        "(above 1: tiletune is faster), geometric means over the cases of each kind.",
        "",
        "| kind | cases | vs " + " | vs ".join(BASELINE_NAMES[b] for b in BASELINES) + " |",
        "| --- | --- |" + " --- |" * len(BASELINES),
    ]
    for kind, by_baseline in result["geomean_ratios_by_kind"].items():
        count = sum(1 for c in result["cases"] if c["kind"] == kind)
        lines.append(f"| {kind} | {count} | " + " | ".join(_x(by_baseline[b]) for b in BASELINES) + " |")
    pct = result.get("memory_bound_pct_of_copy_bw")
    tuning = result.get("tuning_seconds_median")
    copy = result.get("copy_bandwidth_gbps")
    lines += [
        "",
        f"GEMM vs cuBLAS {_x(result.get('gemm_vs_cublas_geomean'))}; matmul + bias + GELU vs eager "
        f"{_x(result.get('epilogue_vs_eager_geomean'))}; memory-bound ops at "
        + (f"{pct:.0f}%" if pct is not None else "-")
        + " of the measured copy bandwidth" + (f" ({copy:.0f} GB/s)" if copy else "")
        + "; median tuning time per workload " + (f"{tuning:.0f} s." if tuning is not None else "-."),
    ]
    return "\n".join(lines)


def headline(result: Mapping) -> str:
    """The four headline figures in one line."""
    pct = result.get("memory_bound_pct_of_copy_bw")
    return (f"GEMM vs cuBLAS {_x(result.get('gemm_vs_cublas_geomean'))} (geomean); matmul + bias + GELU vs eager "
            f"{_x(result.get('epilogue_vs_eager_geomean'))}; softmax/layernorm/rmsnorm at "
            + (f"{pct:.0f}%" if pct is not None else "-") + " of the copy bandwidth; attention vs SDPA "
            f"{_x(result.get('attention_vs_sdpa_geomean'))}")


def update_readme(text: str, table: str) -> str:
    """`text` with the part between the gpu-suite markers replaced by `table`."""
    begin, end = text.find(README_BEGIN), text.find(README_END)
    if begin < 0 or end < begin:
        raise ValueError(f"the README has no {README_BEGIN} ... {README_END} markers to put the table between")
    return text[:begin + len(README_BEGIN)] + "\n" + table + "\n" + text[end:]
