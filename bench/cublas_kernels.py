"""Which cuBLAS kernel runs each published cuBLAS figure's GEMM on this GPU, and its cluster.

The calibration table (`bench/data/published_figures.json`) describes each published figure's
kernel structure; for cuBLAS the thread-block cluster is read from the kernel's name
(`nvjet_hsh_128x256_64x4_2x1_...`, `..._cgasize1x2x1_...`), and where a source profiled a name
without one the cluster stays 1x1, "not stated". A device run settles it: `probe()` runs each
figure's GEMM under torch.profiler and records the names of the CUDA kernels it launched
(`bench/gpu_quick.py` stores them in its results JSON under "cublas_kernels").

    python bench/cublas_kernels.py            # on a GPU: print the names and clusters
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

TABLE = Path(__file__).resolve().parent / "data" / "published_figures.json"

# `nvjet_hsh_128x256_64x4_2x1_v_bz_coopA_TNN`: tile, K-tile x stages, then the cluster;
# `..._cgasize1x2x1_...`: cuBLASLt's cluster (CGA) field, x by y by z
_NVJET = re.compile(r"nvjet_\w+?_\d+x\d+_\d+x\d+_(\d+)x(\d+)(?:_|$)")
_CGA = re.compile(r"cgasize(\d+)x(\d+)x(\d+)")


def cluster_of(kernel_name: str) -> tuple[int, int] | None:
    """The (M, N) cluster a cuBLAS kernel name states, or None when it states none."""
    found = _NVJET.search(kernel_name)
    if found:
        return int(found.group(1)), int(found.group(2))
    found = _CGA.search(kernel_name)
    if found:
        return int(found.group(1)), int(found.group(2))
    return None


def cublas_figures(table: Path = TABLE) -> list[dict]:
    """The table's cuBLAS figures (those whose id names cuBLAS)."""
    figures = json.loads(table.read_text())["figures"]
    return [f for f in figures if "cublas" in f["id"]]


def _gemm(figure: dict):
    """A callable running the figure's GEMM the way its source ran it, on CUDA tensors."""
    import torch

    dims = figure["dims"]
    m, n, k = dims["M"], dims["N"], dims["K"]
    if figure["op"] == "matmul_fp8":
        a = torch.randn(m, k, device="cuda").to(torch.float8_e4m3fn)
        b = torch.randn(n, k, device="cuda").to(torch.float8_e4m3fn).t()  # column-major B, as _scaled_mm wants
        one = torch.ones((), device="cuda")
        return lambda: torch._scaled_mm(a, b, scale_a=one, scale_b=one, out_dtype=torch.float16)
    dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16}[figure["dtype"]]
    a = torch.randn(m, k, device="cuda", dtype=dtype)
    if figure["op"].endswith("_a_bt"):  # B stored [N, K], as a linear layer's weight
        b = torch.randn(n, k, device="cuda", dtype=dtype).t()
    else:
        b = torch.randn(k, n, device="cuda", dtype=dtype)
    return lambda: a @ b


def kernel_names(fn) -> list[str]:
    """The names of the CUDA kernels one call of `fn` launches (after a warm-up call)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return sorted({e.key for e in prof.key_averages() if e.device_type.name == "CUDA" and e.key})


def probe(table: Path = TABLE) -> dict[str, dict]:
    """For each cuBLAS figure of the table: the kernels its GEMM launches here and the cluster
    their names state (None: not stated), or why it could not run."""
    found: dict[str, dict] = {}
    for figure in cublas_figures(table):
        try:
            names = kernel_names(_gemm(figure))
        except Exception as error:  # noqa: BLE001 - one figure's failure is recorded, the rest still run
            found[figure["id"]] = {"error": f"{type(error).__name__}: {error}"}
            continue
        clusters = {n: cluster_of(n) for n in names}
        found[figure["id"]] = {"kernels": names,
                               "cluster": next((list(c) for c in clusters.values() if c is not None), None)}
    return found


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("cublas_kernels: no CUDA GPU is visible; this probe profiles cuBLAS on a GPU", file=sys.stderr)
        return 3
    print(json.dumps({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "figures": probe()},
                     indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
