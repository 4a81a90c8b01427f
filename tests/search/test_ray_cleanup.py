"""A killed driver leaves no Ray process of the run behind (Ray's agents outlived it)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

pytest.importorskip("ray")
pytestmark = pytest.mark.slow

DRIVER = """
import json, os, time
from tiletune.search.execution.ray_tasks import connect
from tiletune.search.ray_reaper import descendants
connect()
time.sleep(3)  # the agents are up
print(json.dumps(sorted(descendants(os.getpid()))), flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def test_killing_the_driver_stops_every_ray_process_it_started(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    driver = subprocess.Popen([sys.executable, "-c", DRIVER], stdout=subprocess.PIPE, text=True, env=env,
                              cwd=tmp_path)
    try:
        started = json.loads(driver.stdout.readline())
        assert started, "the driver started no Ray process"
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(map(_alive, started)):
        time.sleep(1)
    left = [pid for pid in started if _alive(pid)]
    for pid in left:  # do not leave them to the next test either
        os.kill(pid, signal.SIGKILL)
    assert left == []
