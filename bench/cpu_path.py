"""The CPU path of `tiletune.load` against plain torch on the same CPU tensors.

A loaded operator runs CPU tensors through vectorised torch ops by default (the reference
evaluator's fast mode: fp32 float math as in the kernels, reads as views, contractions as one
einsum, rounded at casts and the output). This prints, per operator,
the median time of a call of each and their ratio, measured in one run; with --interpreter it
also times one call of the kernel in Triton's interpreter (minutes at these shapes).

    python bench/cpu_path.py [--rounds 5] [--interpreter] [--json PATH]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable

import torch

os.environ.setdefault("TRITON_INTERPRET", "1")  # only read by --interpreter

import tiletune as tt  # noqa: E402


def _rmsnorm(x, w):
    return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + 1e-6) * w


def _layernorm(x, w, b):
    return torch.nn.functional.layer_norm(x, x.shape[-1:], w, b, eps=1e-5)


# name: (plain torch, input shapes)
CASES: dict[str, tuple[Callable[..., torch.Tensor], list[tuple[int, ...]]]] = {
    "rmsnorm": (_rmsnorm, [(4096, 1000), (1000,)]),
    "softmax": (lambda x: torch.softmax(x, -1), [(4096, 1000)]),
    "layernorm": (_layernorm, [(4096, 1000), (1000,), (1000,)]),
    "matmul": (lambda a, b: a @ b, [(512, 512), (512, 512)]),
}


def median_s(fn: Callable[[], object], rounds: int) -> float:
    """Median wall time of one call over `rounds` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--interpreter", action="store_true", help="also time one interpreter call per operator")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = []
    db = Path(tempfile.mkdtemp()) / "none.db"
    print(f"{'operator':10s} {'shapes':34s} {'torch ms':>10s} {'tiletune ms':>12s} {'ratio':>7s}"
          + (f" {'interpreter s':>14s}" if args.interpreter else ""))
    for name, (reference, shapes) in CASES.items():
        gen = torch.Generator().manual_seed(0)
        inputs = [torch.randn(*s, generator=gen) for s in shapes]
        loaded = tt.load(name, db=db)
        assert loaded.path(*inputs) == "torch"
        torch_s = median_s(lambda: reference(*inputs), args.rounds)
        ours_s = median_s(lambda: loaded(*inputs), args.rounds)
        row = {"operator": name, "shapes": shapes, "torch_s": torch_s, "tiletune_s": ours_s,
               "ratio": ours_s / torch_s, "threads": torch.get_num_threads()}
        line = f"{name:10s} {str(shapes):34s} {torch_s * 1e3:10.2f} {ours_s * 1e3:12.2f} {ours_s / torch_s:7.1f}"
        if args.interpreter:
            kernel = tt.load(name, db=db, cpu="interpreter")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                start = time.perf_counter()
                kernel(*inputs)
            row["interpreter_s"] = time.perf_counter() - start
            line += f" {row['interpreter_s']:14.1f}"
        print(line, flush=True)
        rows.append(row)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
