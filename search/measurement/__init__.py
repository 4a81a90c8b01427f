"""Measurement: what a candidate's compile, check and timing produce, and the measurers.

- `results`: `StepResult` and `Outcome`, the typed data that crosses processes, and
  `step_result`, the one mapping from what a worker reported to a step's result.
- `steps`: the compile, verify and time steps run in workers; `pipeline.evaluate`: a batch
  through them, the one pipeline of the tuner and the sweep recorder.
- `measurers`: the `Measurer` interface, the simulated devices and the CUDA measurer;
  `ray_measurer`: measurement actors on Ray; `timing`: how a GPU latency is measured;
  `simulator` (and `sim_realtime`): the analytic model of the GPUs in `kernels.target`.
- `sweep`, `sweep_recording`, `replay`: recorded sweeps, how they are recorded, and the
  measurer that answers from one.
"""
