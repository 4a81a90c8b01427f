"""Who is measuring what: the claims concurrent tuners coordinate through, and the retries a
resumed run owes.

A tuner claims a config in the DB's `claims` table before it measures it, so that a second
tuner of the same workload, device and measurer draws another config instead of measuring it
twice. A claim names its `Claimant` (host, process id, a random run id) and an expiry time. It
counts for nothing once its tuner is gone: on the same host, when that process is no longer
alive; anywhere, once the expiry has passed (a tuner on another host that died). So a killed
tuner's claims never block the space.

A `Retry` is a config whose measurement failed for a reason outside the config (its worker was
killed from outside, or never reached the kernel); it is kept in `retries`, not as a record,
so that a resumed run measures it again (a bounded number of times).
"""
from __future__ import annotations

import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from tiletune.tuning_db.keys import ConfigValue, config_key, loads_data
from tiletune.tuning_db.records import this_host

__all__ = ["Claimant", "Retry", "claim_is_live"]


@dataclass(frozen=True, slots=True)
class Claimant:
    """One tuning run, as its claims name it: the machine, the process and a random run id (two
    runs in one process are two claimants)."""

    host: str
    pid: int
    run: str

    @classmethod
    def this_run(cls) -> Claimant:
        """A new claimant for a run in this process."""
        return cls(this_host(), os.getpid(), secrets.token_hex(8))

    @property
    def owner(self) -> str:
        """The text stored in `claims.owner`."""
        return json.dumps({"host": self.host, "pid": self.pid, "run": self.run}, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_owner(cls, text: str) -> Claimant | None:
        """The claimant a stored `owner` names, or None when the text is not one (a damaged row)."""
        try:
            data = loads_data(text)
        except ValueError:
            return None
        if not isinstance(data, dict):
            return None
        host, pid, run = data.get("host"), data.get("pid"), data.get("run")
        if not (isinstance(host, str) and isinstance(run, str) and isinstance(pid, int) and not isinstance(pid, bool)):
            return None
        return cls(host, pid, run)


def _process_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    except OverflowError:
        return False
    return True


def claim_is_live(owner: str, expires: float, now: float, *, host: str | None = None) -> bool:
    """Whether a stored claim still holds: not expired, and, when it was made on this host,
    its process still alive. A claim whose owner cannot be read holds until it expires."""
    if not expires > now:  # also refuses a NaN a damaged row could hold
        return False
    claimant = Claimant.from_owner(owner)
    if claimant is None or claimant.host != (host if host is not None else this_host()):
        return True  # another machine's tuner: only the expiry tells it died
    return _process_alive(claimant.pid)


@dataclass(frozen=True, slots=True)
class Retry:
    """A config owed another measurement on a workload, device and measurer: `attempts` times it
    failed for reasons outside it, the last one `reason`."""

    workload_key: str
    device_key: str
    measurer: str
    config: Mapping[str, ConfigValue]
    reason: str
    attempts: int = 1

    @property
    def config_key(self) -> str:
        return config_key(self.config)
