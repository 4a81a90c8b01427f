"""Every benchmark script runs from the checkout as `python bench/<script>.py --help`."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"
# Modules that the scripts import, not scripts themselves: gpu_suite.py loads both.
HELPERS = {"gpu_report.py", "reference_kernels.py", "triton_references.py"}
SCRIPTS = sorted(p.name for p in BENCH.glob("*.py") if 'if __name__ == "__main__":' in p.read_text())


def test_every_bench_file_is_a_script_or_a_known_helper() -> None:
    assert set(SCRIPTS) | HELPERS == {p.name for p in BENCH.glob("*.py")}
    suite = (BENCH / "gpu_suite.py").read_text()
    assert all(f"import {Path(helper).stem}" in suite for helper in HELPERS)


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.slow
def test_bench_script_help_runs_from_the_checkout(script: str) -> None:
    done = subprocess.run([sys.executable, f"bench/{script}", "--help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("usage:"), done.stdout[:200]
