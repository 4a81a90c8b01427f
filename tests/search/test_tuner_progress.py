"""A tuning run says what its batch is doing before the batch ends, so a progress display moves
within seconds even when checking a batch in the interpreter takes minutes."""
from __future__ import annotations

import time

import tiletune as tt


def test_each_batch_reports_compiling_checking_and_measuring_before_it_ends(tmp_path):
    events: list[tuple[float, str]] = []
    start = time.monotonic()
    report = tt.autotune("add", {"N": 64, "D": 48}, device="sim-h100", trials=2, batch_size=2, workers=1,
                         db=tmp_path / "t.db",
                         on_stage=lambda report, stage: events.append((time.monotonic() - start, stage)),
                         on_batch=lambda report, n: events.append((time.monotonic() - start, f"batch of {n}")))
    assert report.trials == 2
    stages = [stage for _, stage in events]
    assert stages == ["compiling 2 configs for sm_90", "checking 2 against the reference in the interpreter",
                      "measuring 2 on sim-h100", "batch of 2"], stages
    # the first word comes at once, not when the batch's checks are done
    assert events[0][0] < 5.0 and events[0][0] < events[-1][0]
