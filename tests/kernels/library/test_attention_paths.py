"""The code paths of the attention kernel, each run in Triton's interpreter against the
reference: key loops split into unmasked and masked blocks (causal: below and on the diagonal),
the launch flags that drop masks where the shapes divide the blocks (EVEN_M, EVEN_N, EVEN_D)
and where they do not, tensor-descriptor loads and stores (LOAD='tma'), warp-specialized key
loops, and the rules that refuse each where it does not apply."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tiletune.errors import IllegalConfig, UsageError
from tiletune.kernels import runtime
from tiletune.kernels.families import default_schedule, tile_facts
from tiletune.kernels.library.attention import attention, causal_attention, cross_attention
from tiletune.kernels.specialize import flag_values
from tiletune.kernels.verify import make_inputs
from tiletune.schedules import Config

# (op, dims): sequence lengths that are and are not multiples of the blocks, head dims that
# fill their block (64) and that do not (48: a 64 block, masked; rows of 96 bytes stay 16-byte
# aligned for descriptors)
SHAPES = [
    (attention, dict(B=1, H=2, S=67, D=48)),
    (attention, dict(B=1, H=1, S=64, D=64)),
    (causal_attention, dict(B=1, H=2, S=67, D=64)),
    (causal_attention, dict(B=1, H=1, S=64, D=48)),
    (cross_attention, dict(B=1, H=1, SQ=19, SK=40, D=64)),
]
# (BLOCK_M, BLOCK_N): query blocks wider than key blocks (several diagonal blocks per query
# block) and narrower (the diagonal block reaches past the query block)
BLOCKS = [(32, 16), (16, 32)]
PATHS = [dict(LOAD="pointer"), dict(LOAD="tma"), dict(LOAD="tma", WARP_SPECIALIZE=True)]


def _id(op, dims) -> str:
    return f"{op.name}-{'-'.join(f'{k}{v}' for k, v in dims.items())}"


# causal attention refuses warp specialization (test_knobs_are_refused_where_they_do_not_apply)
SHAPE_PATHS = [(op, dims, path) for op, dims in SHAPES for path in PATHS
               if not (op is causal_attention and path.get("WARP_SPECIALIZE"))]


@pytest.mark.parametrize("bm, bn", BLOCKS, ids=["wide", "narrow"])
@pytest.mark.parametrize("op, dims, path", SHAPE_PATHS,
                         ids=[f"{_id(op, dims)}-{'_'.join(map(str, path.values()))}" for op, dims, path in SHAPE_PATHS])
def test_every_path_matches_the_reference(lowered, op, dims, bm, bn, path):
    kernel = lowered(op.graph("float16"), dims, BLOCK_M=bm, BLOCK_N=bn, num_stages=2, num_warps=4, **path)
    verdict = kernel.check()
    assert verdict.ok, f"{op.name} at {dims} with {kernel.config!r}: {verdict.reason}\n{kernel.src.text}"


@pytest.mark.parametrize("load", ["pointer", "tma"])
def test_causal_matches_torch_at_a_sequence_that_no_block_divides(lowered, load):
    dims = dict(B=1, H=1, S=1000, D=64)
    kernel = lowered(causal_attention.graph("float32"), dims, BLOCK_M=64, BLOCK_N=32, num_warps=8, LOAD=load)
    q, k, v = make_inputs(kernel.graph, kernel.dims, seed=5)
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(kernel.run([q, k, v]), expected, rtol=1e-4, atol=1e-5)


def _flags(op, dims, **knobs) -> tuple[str, dict[str, bool]]:
    graph = op.graph("float16")
    schedule = default_schedule(graph, dims)
    config = schedule.space().default().replace(**knobs)
    from tiletune.kernels.lower import lower
    src = lower(graph, schedule.resolve(config))
    return src.text, flag_values(src.launch_flags, graph, graph.check_dims(dims))


def test_causal_keys_split_at_the_diagonal():
    text, _ = _flags(causal_attention, dict(B=1, H=1, S=256, D=64), BLOCK_M=64, BLOCK_N=32)
    unmasked, diagonal = text.split("for n0 in tl.range(lo, hi, BLOCK_N):")
    unmasked = unmasked[unmasked.index("for n0 in tl.range(0, lo, BLOCK_N):"):]
    # below the diagonal: no where(), no key mask, one multiply-add of scale and row max
    assert "tl.where" not in unmasked and "mask_n" not in unmasked
    assert "qk = qk * qk_scale - m_new[:, None]" in unmasked
    assert "mask_le = offs_n[None, :] <= offs_m[:, None]" in diagonal
    assert "lo = tl.minimum(pid_m * BLOCK_M, S) // BLOCK_N * BLOCK_N" in text


@pytest.mark.parametrize("dims, even, dense", [
    (dict(B=1, H=1, S=256, D=64), dict(EVEN_M=True, EVEN_N=True, EVEN_D=True), True),
    (dict(B=1, H=1, S=1000, D=64), dict(EVEN_M=False, EVEN_N=False, EVEN_D=True), True),
    (dict(B=1, H=1, S=256, D=48), dict(EVEN_M=True, EVEN_N=True, EVEN_D=False), False),
])
def test_launch_flags_say_which_dims_fill_their_blocks(dims, even, dense):
    text, flags = _flags(attention, dims, BLOCK_M=64, BLOCK_N=64)
    # DENSE_*: a contiguous tensor's rows are one head-dim block apart when the head dim fills it
    assert flags == {**even, "DENSE_Q": dense, "DENSE_K": dense, "DENSE_V": dense}
    assert "if DENSE_K:  # rows of 'k' are BLOCK_D apart\n        stride_k_2 = BLOCK_D" in text
    assert "if not EVEN_N:  # the partial last block of keys" in text


def test_tma_loads_and_stores_through_descriptors_on_the_sequence_plane():
    text, _ = _flags(attention, dict(B=2, H=2, S=200, D=64), LOAD="tma")
    assert ("k_desc = tl.make_tensor_descriptor(k_ptr + idx_b * stride_k_0 + idx_h * stride_k_1, shape=[S, D], "
            "strides=[stride_k_2, 1], block_shape=[BLOCK_N, BLOCK_D])") in text
    assert "k_tile = tl.trans(k_desc.load([n0, 0]))" in text
    assert "o_desc.store([pid_m * BLOCK_M, 0], acc.to(tl.float16))" in text
    assert "tl.load(" not in text and "tl.store(" not in text


def test_warp_specialization_marks_the_key_loops():
    text, _ = _flags(attention, dict(B=1, H=1, S=256, D=64), LOAD="tma", WARP_SPECIALIZE=True)
    assert text.count("BLOCK_N, warp_specialize=True):") == 2  # whole key blocks, then the partial one


@pytest.mark.parametrize("op, dims, knobs, reason", [
    (attention, dict(B=1, H=1, S=64, D=20), dict(LOAD="tma"), r"rows of 'q' are 40 bytes, not a multiple of 16"),
    (attention, dict(B=1, H=1, S=64, D=64), dict(WARP_SPECIALIZE=True), r"WARP_SPECIALIZE needs LOAD='tma'"),
    (causal_attention, dict(B=1, H=1, S=64, D=64), dict(LOAD="tma", WARP_SPECIALIZE=True, num_warps=4),
     r"causal attention's split key loops fails Triton's warp-specialization pass"),
    (attention, dict(B=1, H=1, S=64, D=64), dict(LOAD="tma", WARP_SPECIALIZE=True, num_warps=8),
     r"WARP_SPECIALIZE needs num_warps=4"),
])
def test_knobs_are_refused_where_they_do_not_apply(op, dims, knobs, reason):
    schedule = default_schedule(op.graph("float16"), dims)
    config = Config.from_dict({**dict(schedule.space().default().values), **knobs})
    with pytest.raises(IllegalConfig, match=reason):
        schedule.space().check(config)


def test_warp_specialization_needs_16_bit_operands():
    schedule = default_schedule(attention.graph("float32"), dict(B=1, H=1, S=64, D=64))
    config = Config.from_dict({**dict(schedule.space().default().values), "LOAD": "tma", "WARP_SPECIALIZE": True})
    with pytest.raises(IllegalConfig, match="16-bit q, k and v"):
        schedule.space().check(config)


def test_tma_launch_refuses_a_strided_last_dim(lowered):
    dims = dict(B=1, H=1, S=32, D=64)
    kernel = lowered(attention.graph("float16"), dims, LOAD="tma")
    q, k, v = make_inputs(kernel.graph, kernel.dims, seed=0)
    strided = torch.empty(1, 1, 64, 32, dtype=k.dtype).transpose(2, 3)  # same shape, last stride 32
    strided.copy_(k)
    out = torch.empty_like(q)
    with pytest.raises(UsageError, match=r"'k' needs a contiguous last dim.*use LOAD='pointer'"):
        runtime.launch(kernel.src, [q, strided, v], out, kernel.dims)


def test_facts_count_only_the_blocks_that_pass_a_mask():
    def masked(op, dims):
        graph = op.graph("float16")
        schedule = default_schedule(graph, dims)
        config = schedule.space().default().replace(BLOCK_M=64, BLOCK_N=64)
        return tile_facts(graph, schedule.resolve(config), graph.check_dims(dims)).masked_fraction

    assert masked(attention, dict(B=1, H=1, S=1024, D=64)) == 0.0
    # 16 query blocks over 16 key blocks: 1 of the 16 blocks of the last query block is partial
    assert masked(attention, dict(B=1, H=1, S=1000, D=64)) == pytest.approx(1 / 16)
    # causal: one diagonal block of 1 + 2 + ... + 16 blocks
    assert masked(causal_attention, dict(B=1, H=1, S=1024, D=64)) == pytest.approx(16 / 136)


def test_rows_that_are_not_dense_keep_their_stride(lowered):
    """DENSE_K is decided per call: k sliced out of wider rows (stride 128 for a head dim of
    64) runs the kernel compiled with its runtime stride, and matches the contiguous result."""
    dims = dict(B=1, H=1, S=40, D=64)
    kernel = lowered(attention.graph("float32"), dims, BLOCK_M=16, BLOCK_N=16)
    q, k, v = make_inputs(kernel.graph, kernel.dims, seed=2)
    wide = torch.zeros(1, 1, 40, 128, dtype=k.dtype)
    wide[..., :64] = k
    sliced = wide[..., :64]
    assert sliced.stride(2) == 128
    torch.testing.assert_close(kernel.run([q, sliced, v]), kernel.run([q, k, v]))
    torch.testing.assert_close(kernel.run([q, k, v]), F.scaled_dot_product_attention(q, k, v), rtol=1e-4, atol=1e-5)
