"""Lists kept once in the code (strategies, executors, simulated devices) are what the CLI's
help and the README's command synopsis show."""
from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

from tiletune.cli import main
from tiletune.search.backends import EXECUTORS
from tiletune.search.measurement.simulator import SIMULATED_GPUS
from tiletune.search.strategies import STRATEGIES

README = Path(__file__).resolve().parents[2] / "README.md"


def test_autotune_help_lists_every_strategy_executor_and_simulated_device() -> None:
    result = CliRunner().invoke(main, ["autotune", "--help"], terminal_width=1000)
    assert result.exit_code == 0, result.output
    strategy_help = next(line for line in result.output.splitlines() if line.strip().startswith("--strategy"))
    for name, entry in STRATEGIES.items():
        assert f"{name} ({entry.summary})" in strategy_help
    executor_help = next(line for line in result.output.splitlines() if line.strip().startswith("--executor"))
    for name, where in EXECUTORS.items():
        assert f"{name} ({where})" in executor_help
    device_help = next(line for line in result.output.splitlines() if line.strip().startswith("--device"))
    assert all(kind in device_help for kind in SIMULATED_GPUS)


def test_readme_synopsis_names_the_registered_strategies_and_executors() -> None:
    synopsis = README.read_text()
    assert re.search(r"\[--strategy ([\w|]+)\]", synopsis).group(1) == "|".join(STRATEGIES)
    assert re.search(r"\[--executor ([\w|]+)\]", synopsis).group(1) == "|".join(EXECUTORS)
