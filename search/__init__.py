"""The search engine, in three jobs:

- `execution/`: where steps run (worker processes, a Ray cluster), with time limits, a cache
  and fault injection;
- `measurement/`: what running a candidate produces (compile facts, checks, latencies from a
  GPU, the simulator or a recorded sweep);
- the search itself, here: `features` and `cost_model` (what the model learns from),
  `strategies/` (what to try next), `tuner` (the loop that proposes, evaluates and records a
  batch), `scheduler` (one budget over many workloads), `backends` (local or Ray execution with
  its measurers) and `replay_search` (a strategy studied against a recorded sweep).
"""
