"""The supported Triton range and what each version needs: the facts in
`kernels/triton_versions.py` are checked against the installed Triton (CI runs this file under
both ends of the range), the interpreter fixes apply exactly where the facts say, and the
Hopper rules follow the facts."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

from tiletune.kernels import triton_versions
from tiletune.kernels.triton_versions import TritonFacts

ROOT = Path(__file__).resolve().parents[2]

# Run in a fresh interpreting process: 1.5 rounds to 1 (truncation) or 2 (nearest, ties to even)
# in bfloat16's 8-bit mantissa once scaled, and a persistent-style loop indexes with program ids.
PROBE = textwrap.dedent('''
    import json, os, sys
    import numpy as np
    import torch
    import triton
    import triton.language as tl

    if sys.argv[1] == "patched":
        from tiletune.kernels import process_mode
        assert process_mode.select()

    @triton.jit
    def narrow(x_ptr, out_ptr):
        tl.store(out_ptr, tl.load(x_ptr).to(tl.bfloat16))

    @triton.jit
    def strided(out_ptr, n):
        for i in tl.range(tl.program_id(0), n, tl.num_programs(0)):
            tl.store(out_ptr + i, i)

    x = torch.tensor([1.0 + 2.0 ** -8 + 2.0 ** -9], dtype=torch.float32)  # between two bf16, nearer the upper
    out = torch.zeros(1, dtype=torch.bfloat16)
    narrow[(1,)](x, out)
    result = {"truncates": out.item() != x.to(torch.bfloat16).item()}
    ids = torch.full((6,), -1, dtype=torch.int32)
    try:
        strided[(2,)](ids, 6)
        result["index_fails"] = False
        result["indices"] = ids.tolist()
    except Exception as error:  # noqa: BLE001 - what fails is the finding
        result["index_fails"] = "0-dimensional" in repr(error)
    result["numpy"] = np.__version__
    print(json.dumps(result))
''')


def probe(tmp_path: Path, mode: str) -> dict:
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run([sys.executable, str(script), mode], capture_output=True, text=True, env=env,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_unpatched_interpreter_has_exactly_the_flaws_the_facts_name(tmp_path):
    facts = triton_versions.installed()
    found = probe(tmp_path, "unpatched")
    assert found["truncates"] == facts.interpreter_truncates_bfloat16, (triton_versions.installed_version(), found)
    numpy_refuses = triton_versions.parse(found["numpy"]) >= (2, 4)
    assert found["index_fails"] == (facts.interpreter_index_needs_scalar and numpy_refuses), found


def test_the_patched_interpreter_rounds_to_nearest_and_indexes_with_program_ids(tmp_path):
    found = probe(tmp_path, "patched")
    assert not found["truncates"] and not found["index_fails"], found
    assert found["indices"] == [0, 1, 2, 3, 4, 5]


def test_the_installed_triton_is_inside_the_declared_range():
    import torch

    assert triton_versions.unsupported(triton_versions.installed_version(), torch.__version__) is None
    assert triton_versions.installed().version == triton_versions.parse(triton_versions.installed_version())


def test_pyproject_declares_the_range_the_module_supports():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    triton = next(d for d in deps if d.startswith("triton"))
    torch = next(d for d in deps if d.startswith("torch"))
    oldest, newest = triton_versions.TRITON_OLDEST, triton_versions.TRITON_NEWEST
    assert triton == f"triton>={oldest[0]}.{oldest[1]},<{newest[0]}.{newest[1] + 1}"
    assert torch == "torch>={}.{}".format(*triton_versions.TORCH_OLDEST)


@pytest.mark.parametrize("version, expected", [("3.6.0", (3, 6)), ("3.9.0+git1a2b3c", (3, 9)), ("2.11.0+cu130", (2, 11))])
def test_versions_parse_to_major_minor(version, expected):
    assert triton_versions.parse(version) == expected


def test_a_version_outside_the_range_takes_the_nearest_end_and_is_named_unsupported():
    assert triton_versions.facts_for("3.4.1").version == (3, 6)
    assert triton_versions.facts_for("3.12.0").version == (3, 9)
    assert triton_versions.facts_for("3.7.0").interpreter_index_needs_scalar is False
    message = triton_versions.unsupported("3.4.1", "2.9.0")
    assert "Triton 3.4.1" in message and "torch 2.9.0" in message and "3.6 to 3.9" in message
    with pytest.raises(ValueError, match="not a version"):
        triton_versions.parse("nightly")


def test_hopper_rules_refuse_what_the_installed_triton_cannot_apply(monkeypatch):
    from tiletune.kernels.families import default_schedule
    from tiletune.kernels.families.contraction import hopper
    from tiletune.kernels.library import matmul

    dims = {"M": 256, "N": 256, "K": 256}
    knobs = dict(BLOCK_M=64, BLOCK_N=64, BLOCK_K=64, num_warps=4, num_stages=3, LOAD="tma")

    def legal(facts: TritonFacts, **more) -> bool:
        monkeypatch.setattr(hopper, "installed_triton", lambda: facts)
        s = default_schedule(matmul.graph("float16"), dims)
        return s.space().is_legal(s.space().default().replace(**knobs, **more))

    today = triton_versions.installed()
    assert legal(today) and legal(today, WARP_SPECIALIZE=True)
    no_descriptors = TritonFacts((3, 5), True, True, tensor_descriptors=False, warp_specialized_loops=False)
    assert not legal(no_descriptors)
    assert not legal(TritonFacts((3, 5), True, True, warp_specialized_loops=False), WARP_SPECIALIZE=True)


def test_a_process_on_untested_versions_is_warned_once_it_chooses_its_mode(tmp_path):
    script = tmp_path / "old_torch.py"
    script.write_text(textwrap.dedent('''
        import importlib.metadata, warnings
        real = importlib.metadata.version
        importlib.metadata.version = lambda name: "2.9.1" if name == "torch" else real(name)
        from tiletune.kernels import process_mode
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            process_mode.select()
        print("|".join(str(w.message) for w in caught))
    '''))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "TRITON_INTERPRET": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "untested versions: torch 2.9.1 (supported: 2.11 or newer)" in done.stdout
