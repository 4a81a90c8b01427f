"""bench/db_scale.py at a small size: it builds its DB and every reader finds the tuned best."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "db_scale.py"


@pytest.mark.slow
def test_db_scale_builds_and_times_every_reader(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("db_scale", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    figures = tmp_path / "figures.json"
    bench.main(["--records", "2000", "--workloads", "2", "--db", str(tmp_path / "scale.db"), "--json", str(figures)])
    out = capsys.readouterr().out
    assert "2000 records of 2 workloads" in out


    seconds = json.loads(figures.read_text())["seconds"]
    assert set(seconds) == {"stats", "show", "list", "load"}
