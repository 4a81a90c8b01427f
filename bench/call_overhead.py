"""Library call overhead: what `tiletune.load(...)` adds to a raw launch of the same kernel.

Two measurements, side by side in one run, printed as ratios:

1. **Python dispatch** (any machine): a loaded operator's call with its kernel launch replaced
   by a no-op, against allocating the output and calling that no-op directly. What remains is
   the keying, the cache lookup and the argument handling of `LoadedOperator.__call__`.
2. **On the GPU** (when there is one): the loaded call against the raw Triton launch of the
   same compiled kernel (the generated `launch(*inputs, out, *dims)`), both allocating their
   output: host time per call in a tight loop at a small shape (where launch overhead is all
   there is), and device time at a large shape (`search.timing`).

    python bench/call_overhead.py [--calls 20000] [--json PATH]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Callable

import torch

# Kernels on CPU tensors run in Triton's interpreter, chosen per process before Triton loads.
os.environ.setdefault("TRITON_INTERPRET", "0" if torch.cuda.is_available() else "1")
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")

import tiletune as tt  # noqa: E402


def per_call_ns(fn: Callable[[], object], calls: int, rounds: int = 7, sync: bool = False) -> float:
    """Median over `rounds` of the host time per call of `calls` calls in a loop."""
    results = []
    for _ in range(rounds):
        if sync:
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        if sync:
            torch.cuda.synchronize()
        results.append((time.perf_counter() - start) / calls * 1e9)
    return statistics.median(results)


def loaded_with(op: str, inputs: list[torch.Tensor], db: Path):
    """The loaded operator, its cache entry for `inputs` (prepared once), and the entry's key."""
    loaded = tt.load(op, db=db)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "not tuned, using the default config": expected here
        loaded.selection(*inputs)
    key = loaded._key(inputs)
    return loaded, loaded._entries[key], key


def dispatch_overhead(device: str, calls: int, db: Path) -> dict:
    """Python cost of a loaded call with the launch replaced by a no-op, vs the no-op direct."""
    a = torch.randn(64, 32, dtype=torch.float16, device=device)
    b = torch.randn(32, 48, dtype=torch.float16, device=device)
    loaded, entry, key = loaded_with("matmul", [a, b], db)

    def noop(*args: object) -> None:
        return None

    loaded._entries[key] = dataclasses.replace(entry, launch=noop)
    shape, dtype, dims = entry.out_shape, entry.out_dtype, entry.dim_values

    def direct() -> None:
        noop(a, b, torch.empty(shape, dtype=dtype, device=a.device), *dims)

    loaded_ns = per_call_ns(lambda: loaded(a, b), calls)
    direct_ns = per_call_ns(direct, calls)
    return {"device": device, "loaded_ns": loaded_ns, "direct_ns": direct_ns,
            "dispatch_ns": loaded_ns - direct_ns, "ratio": loaded_ns / direct_ns}


def gpu_overhead(calls: int, db: Path) -> dict:
    """The loaded call against the raw launch of the same kernel on the GPU."""
    from tiletune.search.measurement.timing import CudaTimer

    figures = {}
    small_a = torch.randn(64, 64, dtype=torch.float16, device="cuda")
    small_b = torch.randn(64, 64, dtype=torch.float16, device="cuda")
    loaded, entry, _ = loaded_with("matmul", [small_a, small_b], db)

    def raw_small() -> None:
        out = torch.empty(entry.out_shape, dtype=entry.out_dtype, device="cuda")
        entry.launch(small_a, small_b, out, *entry.dim_values)

    torch.testing.assert_close(loaded(small_a, small_b).float(), small_a.float() @ small_b.float(),
                               rtol=2e-2, atol=2e-2)
    loaded_ns = per_call_ns(lambda: loaded(small_a, small_b), calls, sync=True)
    raw_ns = per_call_ns(raw_small, calls, sync=True)
    figures["host_64"] = {"loaded_ns": loaded_ns, "raw_ns": raw_ns, "ratio": loaded_ns / raw_ns}

    big_a = torch.randn(4096, 4096, dtype=torch.float16, device="cuda")
    big_b = torch.randn(4096, 4096, dtype=torch.float16, device="cuda")
    loaded, entry, _ = loaded_with("matmul", [big_a, big_b], db)

    def raw_big() -> None:
        out = torch.empty(entry.out_shape, dtype=entry.out_dtype, device="cuda")
        entry.launch(big_a, big_b, out, *entry.dim_values)

    timer = CudaTimer()
    t_loaded, t_raw = timer.time(lambda: loaded(big_a, big_b), graphs=False), timer.time(raw_big, graphs=False)
    figures["device_4096"] = {"loaded_us": t_loaded.median_us, "raw_us": t_raw.median_us,
                              "ratio": t_loaded.median_us / t_raw.median_us}
    # The same small call, timed on the device in the loop a model would run (no graphs: the
    # host-side launch cost is what is compared).
    t_loaded, t_raw = (timer.time(lambda: loaded(small_a, small_b), graphs=False),
                       timer.time(raw_small, graphs=False))
    figures["device_64"] = {"loaded_us": t_loaded.median_us, "raw_us": t_raw.median_us,
                            "ratio": t_loaded.median_us / t_raw.median_us}
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000, help="calls per timed loop")
    parser.add_argument("--json", type=Path, default=None, help="write the figures to this JSON file")
    args = parser.parse_args()
    db = Path(os.environ.get("TILETUNE_DB", "tiletune.db"))
    cuda = torch.cuda.is_available()
    result: dict = {"dispatch": dispatch_overhead("cuda" if cuda else "cpu", args.calls, db)}
    d = result["dispatch"]
    print(f"python dispatch ({d['device']} tensors, launch replaced by a no-op): loaded {d['loaded_ns']:.0f} ns, "
          f"direct {d['direct_ns']:.0f} ns per call; dispatch adds {d['dispatch_ns']:.0f} ns "
          f"(ratio {d['ratio']:.2f})")
    if cuda:
        result["gpu"] = gpu_overhead(args.calls, db)
        g = result["gpu"]
        print(f"GPU 64x64x64 fp16, host time per call: loaded {g['host_64']['loaded_ns'] / 1e3:.2f} us, "
              f"raw launch {g['host_64']['raw_ns'] / 1e3:.2f} us (ratio {g['host_64']['ratio']:.3f})")
        for name, label in (("device_64", "64x64x64"), ("device_4096", "4096^3")):
            print(f"GPU {label} fp16, device time: loaded {g[name]['loaded_us']:.2f} us, "
                  f"raw launch {g[name]['raw_us']:.2f} us (ratio {g[name]['ratio']:.3f})")
    else:
        print("no CUDA GPU here: the GPU comparison (loaded call vs raw Triton launch) was skipped")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
