"""Stops the Ray processes a run started when its driver dies without shutting Ray down.

A local Ray started by `ray.init()` shares the driver's fate only in part: killed with SIGKILL,
the driver takes its GCS, raylet and workers along, but Ray's dashboard and runtime-env agents
keep running. Right after starting Ray the driver records its descendants (pid and start time,
from /proc) in a small watcher process that blocks on a pipe from the driver; when the pipe
closes (a clean shutdown, or the driver's death, which the kernel closes it on), the watcher
kills whichever of them still run. The start time guards against a pid reused since.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time in clock ticks) of a live process, or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) ": the command may hold spaces
    return int(fields[1]), int(fields[19])


def descendants(root: int) -> dict[int, int]:
    """Every live descendant of `root`: pid -> start time (empty where /proc is not there)."""
    parents: dict[int, list[int]] = {}
    starts: dict[int, int] = {}
    for entry in Path("/proc").glob("[0-9]*") if Path("/proc").is_dir() else ():
        stat = _stat(int(entry.name))
        if stat is not None:
            parents.setdefault(stat[0], []).append(int(entry.name))
            starts[int(entry.name)] = stat[1]
    found: dict[int, int] = {}
    todo = list(parents.get(root, []))
    while todo:
        pid = todo.pop()
        if pid not in found and pid in starts:
            found[pid] = starts[pid]
            todo += parents.get(pid, [])
    return found


def watch(root: int) -> subprocess.Popen | None:
    """Start the watcher over `root`'s descendants now; close its stdin to let it clean up."""
    processes = descendants(root)
    if not processes:
        return None
    watcher = subprocess.Popen([sys.executable, "-m", "tiletune.search.ray_reaper"], stdin=subprocess.PIPE,
                               start_new_session=True, text=True)
    watcher.stdin.write(json.dumps(processes) + "\n")
    watcher.stdin.flush()
    return watcher


def main() -> None:
    processes = {int(pid): start for pid, start in json.loads(sys.stdin.readline()).items()}
    sys.stdin.read()  # returns at EOF: the driver closed the pipe or died
    for pid, start in processes.items():
        stat = _stat(pid)
        if stat is not None and stat[1] == start:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


if __name__ == "__main__":
    main()
