"""Launchers for the tutorial-structured reference kernels of `bench/reference_kernels.py`
(Triton tutorials 03, 09 and 06), each tuned with `triton.autotune` over a short list of Hopper
configs, as a user who copied the tutorial would: the Triton reference columns of the GPU suite.

- `MATMUL_VARIANTS`: the plain tutorial matmul, TMA descriptors, TMA + warp specialization,
  persistent TMA (`name -> fn(a, b)`);
- `attention(q, k, v, causal)`: tutorial 06's forward pass with TMA loads, and
  `attention_ws` the same with its K/V loop warp-specialized.

The suite reports the fastest variant that computes the right result as its `triton` column
and every variant's time beside it. Needs a CUDA device (descriptors are made on the device);
the plan and the config lists are plain Python.
"""
from __future__ import annotations

import functools
from typing import Callable

import torch
import triton

import reference_kernels as ref

# BLOCK_M, BLOCK_N, BLOCK_K, num_stages, num_warps: tutorial 09's Hopper list, plus small-M
# tiles for decode shapes (M=16), where a 128-row tile wastes most of each MMA.
MATMUL_SHAPES = ((128, 256, 64, 3, 8), (128, 128, 64, 4, 4), (128, 128, 64, 3, 8), (64, 128, 64, 4, 4),
                 (64, 64, 64, 5, 4), (64, 256, 64, 3, 4), (16, 128, 128, 4, 4), (16, 64, 256, 3, 4))
# BLOCK_M, BLOCK_N, num_stages, num_warps for attention (tutorial 06's forward list on sm_90)
ATTENTION_SHAPES = ((128, 64, 3, 4), (128, 128, 3, 8), (64, 64, 3, 4), (128, 64, 2, 8))


def _scratch(size: int, alignment: int, stream) -> torch.Tensor:
    """Global memory for device-side tensor descriptors."""
    return torch.empty(size, dtype=torch.int8, device="cuda")


def _configs(shapes, ws: bool | None = None, persistent: bool = False) -> list[triton.Config]:
    configs = []
    for m, n, k, s, w in shapes:
        if ws and (w != 4 or m < 64):  # one consumer warpgroup of wgmma rows (kernels/.../hopper.py)
            continue
        meta = {"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k, "GROUP_M": 8}
        if ws is not None:
            meta["WARP_SPECIALIZE"] = ws
        configs.append(triton.Config(meta, num_stages=s, num_warps=w))
    return configs


@functools.cache
def _tuned(name: str):
    key = ["M", "N", "K"]
    if name == "tutorial":
        return triton.autotune(_configs(MATMUL_SHAPES), key=key)(ref.tutorial_matmul_kernel)
    if name == "tma":
        return triton.autotune(_configs(MATMUL_SHAPES, ws=False), key=key)(ref.tutorial_tma_matmul_kernel)
    if name == "tma_ws":
        return triton.autotune(_configs(MATMUL_SHAPES, ws=True), key=key)(ref.tutorial_tma_matmul_kernel)
    if name == "persistent_tma":
        return triton.autotune(_configs(MATMUL_SHAPES), key=key)(ref.tutorial_persistent_tma_matmul_kernel)
    raise KeyError(name)


def _sms() -> int:
    return torch.cuda.get_device_properties(0).multi_processor_count


def matmul_variant(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """a @ b through one tutorial kernel, autotuned on first use per shape."""
    kernel = _tuned(name)

    def run(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        M, K = a.shape
        N = b.shape[1]
        c = torch.empty((M, N), dtype=a.dtype, device=a.device)
        tiles = lambda meta: triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"])  # noqa: E731
        if name == "tutorial":
            kernel[lambda meta: (tiles(meta),)](a, b, c, M, N, K, a.stride(0), a.stride(1), b.stride(0),
                                                 b.stride(1), c.stride(0), c.stride(1))
            return c
        triton.set_allocator(_scratch)
        if name == "persistent_tma":
            programs = _sms()
            kernel[lambda meta: (min(programs, tiles(meta)),)](a, b, c, M, N, K, a.stride(0), b.stride(0),
                                                               c.stride(0), NUM_PROGRAMS=programs)
        else:
            kernel[lambda meta: (tiles(meta),)](a, b, c, M, N, K, a.stride(0), b.stride(0), c.stride(0))
        return c

    return run


MATMUL_VARIANTS = ("tutorial", "tma", "tma_ws", "persistent_tma")


@functools.cache
def _attention_tuned(ws: bool):
    configs = [triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_stages=s, num_warps=w)
               for m, n, s, w in ATTENTION_SHAPES if not ws or w == 4]
    return triton.autotune(configs, key=["BH", "S", "HEAD_DIM", "CAUSAL"])(ref.tutorial_attention_kernel)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False, ws: bool = False) -> torch.Tensor:
    """softmax(q k^T / sqrt(D)) v over [B, H, S, D] contiguous tensors, tutorial 06's forward."""
    B, H, S, D = q.shape
    o = torch.empty_like(q)
    triton.set_allocator(_scratch)
    kernel = _attention_tuned(ws)
    kernel[lambda meta: (triton.cdiv(S, meta["BLOCK_M"]), B * H)](
        q, k, v, o, B * H, S, D ** -0.5, HEAD_DIM=D, CAUSAL=causal, LOAD_TMA=True, WARP_SPECIALIZE=ws)
    return o


def variants(kind: str, op: str) -> dict[str, Callable[..., torch.Tensor]]:
    """The tutorial-structured references of a suite case kind (empty where there are none)."""
    if kind == "gemm":
        return {name: matmul_variant(name) for name in MATMUL_VARIANTS}
    if kind == "attention":
        causal = op == "causal_attention"
        return {"tutorial_tma": lambda q, k, v: attention(q, k, v, causal),
                "tutorial_tma_ws": lambda q, k, v: attention(q, k, v, causal, ws=True)}
    return {}
