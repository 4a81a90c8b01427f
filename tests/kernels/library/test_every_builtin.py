"""Every built-in (and a few attribute variants) goes through what one tuning trial does, in
process: its automatic space at an odd shape, the default and a random config lowered, checked
against the reference at the verification dims the tuner uses, and its tile facts fed to the
simulated H100. A family's own tests go deeper; this one catches a built-in that the tuner
cannot use (every candidate a wrong result, facts the simulator refuses)."""
from __future__ import annotations

import math
from random import Random

import pytest

from tiletune.kernels.library import BUILTINS, resolve_operator
from tiletune.kernels.task import TaskSpec
from tiletune.kernels.verify import check_candidate
from tiletune.search.measurement.simulator import H100, KernelFacts, simulate

# One odd shape per dim signature: primes, sizes just over a tile, a few size-1-ish dims.
SHAPES = {
    ("M", "N", "K"): dict(M=67, N=45, K=93),
    ("B", "M", "N", "K"): dict(B=3, M=37, N=20, K=33),
    ("B", "H", "M", "N", "K"): dict(B=2, H=3, M=17, N=20, K=19),
    ("M", "K"): dict(M=29, K=300),
    ("N", "C", "L", "K", "R"): dict(N=2, C=5, L=23, K=9, R=3),
    ("N", "C", "H", "W", "K", "R", "S"): dict(N=2, C=3, H=9, W=11, K=10, R=3, S=3),
    ("N", "C", "H", "W", "K"): dict(N=2, C=7, H=5, W=7, K=12),
    ("N", "D"): dict(N=19, D=300),
    ("N", "C"): dict(N=23, C=131),
    ("N", "C", "H", "W"): dict(N=2, C=6, H=9, W=13),
    ("B", "S", "D"): dict(B=3, S=7, D=130),
    ("N",): dict(N=7001),
    ("A", "B", "C", "D"): dict(A=3, B=5, C=7, D=67),
    ("N", "G", "CG", "HW"): dict(N=2, G=3, CG=4, HW=37),
    ("B", "L", "C"): dict(B=3, L=71, C=5),
    ("B", "H", "S", "D"): dict(B=1, H=2, S=37, D=64),
    ("B", "H", "SQ", "SK", "D"): dict(B=1, H=2, SQ=17, SK=40, D=64),
    ("N", "C", "L"): dict(N=2, C=5, L=67),
}
VARIANTS = ["softmax_nd[dim=1]", "log_softmax_nd[dim=0]", "sum4d[axes=(0, 2)]", "argmax4d[axis=1]",
            "l2_normalize[dim=2]", "leaky_relu[negative_slope=0.2]", "huber_loss[delta=0.3]",
            "kl_div[log_target=True]"]


@pytest.mark.parametrize("ref", sorted(BUILTINS) + VARIANTS)
@pytest.mark.slow
def test_a_tuning_trial_of_every_builtin(ref):
    op = resolve_operator(ref)
    dims = SHAPES[op.dim_names]
    task = TaskSpec.make(ref, dims, op.default_dtype).build()
    configs = [task.space.default(), *task.space.sample(Random(ref), 1, exclude={task.space.default()})]
    for config in configs:
        src = task.source(config, for_interpreter=True)
        verdict = check_candidate(task.graph, src, dims, task.resolve(config), seed=1)
        assert verdict.ok, f"{ref} {config!r}: {verdict.reason}"
        tile = task.facts(config)
        assert tile.programs >= 1 and tile.bytes_per_program > 0 and math.isfinite(tile.flops_per_program)
        kernel = KernelFacts(
            programs=tile.programs, flops_per_program=tile.flops_per_program,
            bytes_per_program=tile.bytes_per_program, unique_bytes=tile.unique_bytes,
            uses_tensor_cores=tile.uses_tensor_cores,
            dot_dtype=tile.dot_dtype if tile.uses_tensor_cores else "none",
            tile_m=tile.tile_m, tile_n=tile.tile_n, tile_k=tile.tile_k, k_iterations=tile.k_iterations,
            num_warps=src.num_warps, num_stages=src.num_stages, registers=64, spill_bytes=0, shared_bytes=0,
        )
        assert 0 < simulate(kernel, H100).latency_us < 1e6
