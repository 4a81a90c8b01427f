"""Execution: where candidates' steps run, isolated so that one bad config costs one worker.

- `workers`: `WorkerPool` (local worker processes with time limits, replaced when one hangs or
  dies) and the `Executor` interface the tuner depends on; `worker_process`: the loop each
  worker runs.
- `ray_tasks`: the same on a Ray cluster (warm step workers, and the actor pool that the Ray
  measurer also runs on).
- `step_cache`: compile and verification answers kept on disk, reused by any later process.
- `faults`: failures injected by rule (`TILETUNE_FAULTS`), so tests can prove the run goes on.
"""
