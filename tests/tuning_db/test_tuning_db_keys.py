"""Keys: stable, canonical, and refusing what is not plain data."""
from __future__ import annotations

import math

import pytest

from tiletune.errors import TuningDBError
from tiletune.tuning_db import Device, Workload, config_key, device_key, workload_key


def test_config_key_is_canonical_json_whatever_the_insertion_order():
    a = config_key({"BLOCK_N": 64, "BLOCK_M": 128, "num_warps": 4, "swizzle": True, "order": "mn"})
    b = config_key({"swizzle": True, "num_warps": 4, "order": "mn", "BLOCK_M": 128, "BLOCK_N": 64})
    assert a == b == '{"BLOCK_M":128,"BLOCK_N":64,"num_warps":4,"order":"mn","swizzle":true}'


def test_config_key_keeps_ints_and_floats_apart():
    assert config_key({"x": 1}) != config_key({"x": 1.0})


@pytest.mark.parametrize(
    "config",
    [{"x": math.nan}, {"x": math.inf}, {"x": [1, 2]}, {"x": None}, {"x": {"y": 1}}, {1: 2}, [("x", 1)], {"x": 2**70}],
)
def test_config_key_refuses_what_is_not_a_flat_config(config):
    with pytest.raises(TuningDBError):
        config_key(config)


def test_workload_key_is_pinned_and_ignores_dim_order():
    # Pinned: a change here orphans every stored record, so it must be a schema-version bump.
    assert workload_key("op123", {"M": 128, "N": 64}, ["float16", "float32"]) == "1866a711499c00bacad0"
    assert workload_key("op123", {"N": 64, "M": 128}, ("float16", "float32")) == "1866a711499c00bacad0"


def test_workload_key_depends_on_every_part():
    base = workload_key("op", {"M": 1, "N": 2}, ["float16", "float32"])
    assert len(base) == 20 and all(c in "0123456789abcdef" for c in base)
    assert workload_key("op2", {"M": 1, "N": 2}, ["float16", "float32"]) != base
    assert workload_key("op", {"M": 1, "N": 3}, ["float16", "float32"]) != base
    assert workload_key("op", {"M": 2, "N": 1}, ["float16", "float32"]) != base
    assert workload_key("op", {"M": 1, "N": 2}, ["float32", "float16"]) != base


def test_workload_key_refuses_non_integer_dims():
    with pytest.raises(TuningDBError, match="dims"):
        workload_key("op", {"M": 1.5}, ["float16"])


def test_device_key_is_readable_and_unambiguous():
    assert device_key("sim-h100", "sm90", "3.9.0") == "sim-h100/sm90/triton-3.9.0"
    with pytest.raises(TuningDBError, match="'/'"):
        device_key("a/b", "sm90", "3.9.0")


def test_make_computes_the_keys():
    w = Workload.make("matmul", "op123", {"N": 64, "M": 128}, ["float16", "float32"])
    assert w.key == "1866a711499c00bacad0" and w.dtypes == ("float16", "float32")
    assert hash(w) == hash(Workload.make("matmul", "op123", {"M": 128, "N": 64}, ("float16", "float32")))
    assert Device.make("sim-h100", "sm90", "3.9.0").key == "sim-h100/sm90/triton-3.9.0"
