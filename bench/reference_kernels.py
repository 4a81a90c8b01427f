"""Reference Triton kernels for the GPU suite: what a user would write by hand and tune with
`triton.autotune`, the baseline tiletune's generated kernels are measured against.

- `matmul(a, b, bias=None, gelu=False)`: a tiled matmul with grouped program order, fp32
  accumulation and an optional bias + exact GELU epilogue, over a list of Hopper configs;
- `softmax(x)`, `layernorm(x, w, b)`, `rmsnorm(x, w)`: one row per program, the row in one
  block, tuned over num_warps.

Each `*_kernel` is a plain `@triton.jit` kernel (the tests run them in the interpreter at
fixed configs); the functions below wrap them in `triton.autotune` keyed on the shapes.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl


def _matmul_configs() -> list[triton.Config]:
    """Tiles and pipeline depths that fit Hopper's 228 KB of shared memory per SM."""
    shapes = [  # BLOCK_M, BLOCK_N, BLOCK_K, num_stages, num_warps
        (128, 256, 64, 3, 8), (256, 128, 64, 3, 8), (128, 128, 64, 4, 4), (128, 128, 64, 4, 8),
        (128, 64, 64, 4, 4), (64, 128, 64, 4, 4), (64, 64, 64, 5, 4), (128, 128, 32, 4, 4),
        (64, 256, 32, 4, 4), (32, 64, 64, 5, 2), (16, 64, 128, 4, 4), (16, 128, 128, 3, 4),
    ]
    return [triton.Config({"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k, "GROUP_M": 8}, num_stages=s, num_warps=w)
            for m, n, k, s, w in shapes]


@triton.jit
def matmul_kernel(a_ptr, b_ptr, bias_ptr, c_ptr, M, N, K,
                  stride_am, stride_ak, stride_bk, stride_bn, stride_cm, stride_cn,
                  HAS_BIAS: tl.constexpr, GELU: tl.constexpr,
                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr):
    pid = tl.program_id(0)
    tiles_m, tiles_n = tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N)
    per_group = GROUP_M * tiles_n
    first_m = (pid // per_group) * GROUP_M
    group_m = tl.minimum(tiles_m - first_m, GROUP_M)
    pid_m = first_m + (pid % per_group) % group_m
    pid_n = (pid % per_group) // group_m
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, tl.cdiv(K, BLOCK_K)):
        ks = k0 * BLOCK_K + offs_k
        a = tl.load(a_ptr + offs_m[:, None] * stride_am + ks[None, :] * stride_ak,
                    mask=(offs_m[:, None] < M) & (ks[None, :] < K), other=0.0)
        b = tl.load(b_ptr + ks[:, None] * stride_bk + offs_n[None, :] * stride_bn,
                    mask=(ks[:, None] < K) & (offs_n[None, :] < N), other=0.0)
        acc = tl.dot(a, b, acc)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_n, mask=offs_n < N, other=0.0).to(tl.float32)[None, :]
    if GELU:
        acc = 0.5 * acc * (1.0 + tl.erf(acc * 0.7071067811865476))
    tl.store(c_ptr + offs_m[:, None] * stride_cm + offs_n[None, :] * stride_cn, acc.to(c_ptr.dtype.element_ty),
             mask=(offs_m[:, None] < M) & (offs_n[None, :] < N))


_matmul_tuned = triton.autotune(configs=_matmul_configs(), key=["M", "N", "K", "HAS_BIAS", "GELU"])(matmul_kernel)


def launch_matmul(kernel, a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None, gelu: bool,
                  **config: int) -> torch.Tensor:
    """Run `kernel` (tuned or plain, with `config` for a plain one) on a @ b (+ bias, GELU)."""
    M, K = a.shape
    N = b.shape[1]
    c = torch.empty((M, N), dtype=a.dtype, device=a.device)

    def grid(meta):
        return (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]),)

    kernel[grid](a, b, bias if bias is not None else c, c, M, N, K, a.stride(0), a.stride(1), b.stride(0),
                 b.stride(1), c.stride(0), c.stride(1), HAS_BIAS=bias is not None, GELU=gelu, **config)
    return c


def matmul(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None, gelu: bool = False) -> torch.Tensor:
    """a @ b (+ bias[N], then exact GELU) with the autotuned reference kernel."""
    return launch_matmul(_matmul_tuned, a, b, bias, gelu)


def _row_configs() -> list[triton.Config]:
    return [triton.Config({}, num_warps=w) for w in (1, 2, 4, 8, 16)]


@triton.jit
def softmax_kernel(x_ptr, y_ptr, D, stride_x, stride_y, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    x = tl.load(x_ptr + row * stride_x + cols, mask=cols < D, other=-float("inf")).to(tl.float32)
    e = tl.exp(x - tl.max(x, axis=0))
    tl.store(y_ptr + row * stride_y + cols, (e / tl.sum(e, axis=0)).to(y_ptr.dtype.element_ty), mask=cols < D)


@triton.jit
def layernorm_kernel(x_ptr, w_ptr, b_ptr, y_ptr, D, stride_x, stride_y, eps, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    mask = cols < D
    x = tl.load(x_ptr + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
    mean = tl.sum(x, axis=0) / D
    centred = tl.where(mask, x - mean, 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(centred * centred, axis=0) / D + eps)
    w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    tl.store(y_ptr + row * stride_y + cols, (centred * rstd * w + b).to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def rmsnorm_kernel(x_ptr, w_ptr, y_ptr, D, stride_x, stride_y, eps, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    mask = cols < D
    x = tl.load(x_ptr + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
    rms = 1.0 / tl.sqrt(tl.sum(x * x, axis=0) / D + eps)
    w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    tl.store(y_ptr + row * stride_y + cols, (x * rms * w).to(y_ptr.dtype.element_ty), mask=mask)


_softmax_tuned = triton.autotune(configs=_row_configs(), key=["D"])(softmax_kernel)
_layernorm_tuned = triton.autotune(configs=_row_configs(), key=["D"])(layernorm_kernel)
_rmsnorm_tuned = triton.autotune(configs=_row_configs(), key=["D"])(rmsnorm_kernel)


def softmax(x: torch.Tensor, kernel=_softmax_tuned, **config: int) -> torch.Tensor:
    """Softmax over the last axis of a 2-D tensor."""
    y = torch.empty_like(x)
    kernel[(x.shape[0],)](x, y, x.shape[1], x.stride(0), y.stride(0), BLOCK=triton.next_power_of_2(x.shape[1]),
                          **config)
    return y


def layernorm(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, eps: float = 1e-5, kernel=_layernorm_tuned,
              **config: int) -> torch.Tensor:
    """Layer normalisation over the last axis of a 2-D tensor."""
    y = torch.empty_like(x)
    kernel[(x.shape[0],)](x, w, b, y, x.shape[1], x.stride(0), y.stride(0), eps,
                          BLOCK=triton.next_power_of_2(x.shape[1]), **config)
    return y


def rmsnorm(x: torch.Tensor, w: torch.Tensor, eps: float = 1e-6, kernel=_rmsnorm_tuned, **config: int) -> torch.Tensor:
    """RMS normalisation over the last axis of a 2-D tensor."""
    y = torch.empty_like(x)
    kernel[(x.shape[0],)](x, w, y, x.shape[1], x.stride(0), y.stride(0), eps,
                          BLOCK=triton.next_power_of_2(x.shape[1]), **config)
    return y
