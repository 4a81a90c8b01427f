"""Tuning refuses a workload whose tensors go past the generated kernels' 32-bit offsets, though
each dim on its own fits: the error names the tensor, its extent and the limit."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

import tiletune as tt
from tiletune.cli import main
from tiletune.errors import UsageError
from tiletune.kernels.library import BUILTINS
from tiletune.kernels.offsets import OFFSET_LIMIT, check_workload


def test_autotune_refuses_an_output_past_32_bit_offsets(tmp_path):
    # 65536 x 65536 = 2**32 elements: every dim is small, the output is not
    with pytest.raises(UsageError, match=rf"'c'.*4294967296 elements.*{OFFSET_LIMIT}"):
        tt.autotune("matmul", dict(M=65536, N=65536, K=16), device="sim-h100", trials=1,
                    db=str(tmp_path / "t.db"))
    assert not (tmp_path / "t.db").exists()  # refused before the session opened the DB


def test_an_input_past_32_bit_offsets_is_named():
    graph = BUILTINS["matmul"].graph("float16")
    with pytest.raises(UsageError, match=r"tensor 'a' \(shape \(16, 2147483648\)"):
        check_workload(graph, dict(M=16, N=16, K=2**31))
    check_workload(graph, dict(M=46340, N=16, K=46340))  # 2147395600 elements: fits


def test_the_cli_refuses_it_in_one_line(tmp_path):
    result = CliRunner().invoke(main, ["autotune", "softmax", "--shape", "N=131072,D=32768", "--device", "sim-h100",
                                       "--trials", "1", "--db", str(tmp_path / "t.db")])
    assert result.exit_code != 0
    assert "'x'" in result.output and "4294967296 elements" in result.output and "Traceback" not in result.output
