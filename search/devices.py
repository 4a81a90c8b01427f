"""What a device request names: `--device`, or `tiletune.autotune(device=...)`.

A request is a comma-separated list of kinds: ``auto`` (the GPU here, else the simulated
default), ``cuda``, a simulated GPU (``sim-h100``, ``sim-h200``: `SIMULATED_GPUS`) and, on Ray,
a GPU kind of the cluster (``H100``, as Ray's ``accelerator_type`` names it). Each kind is tuned
for itself: records are keyed by device. Both backends (`backends.LocalBackend`,
`ray_backend.RayBackend`) read requests through `device_kinds`.
"""
from __future__ import annotations

from tiletune.errors import UsageError
from tiletune.search.measurement.simulator import SIMULATED_GPUS

#: Refusal of --sim-realtime on a real GPU, where the API and both backends check it.
REALTIME_ON_A_GPU = "--sim-realtime is for simulated devices (sim-h100); a GPU takes real time anyway"


def device_kinds(device: str, *, executor: str = "local") -> list[str]:
    """The kinds a device request names, checked: UsageError saying what is known otherwise."""
    if not isinstance(device, str) or not device.strip():
        raise UsageError("the device is empty; expected auto, cuda or a simulated GPU such as sim-h100")
    kinds = [part.strip() for part in device.split(",")]
    known = ("auto", "cuda", *SIMULATED_GPUS)
    for kind in kinds:
        if not kind:
            raise UsageError(f"device '{device}' has an empty entry; separate kinds with single commas")
        if kind not in known and (executor != "ray" or not kind.replace("_", "").replace("-", "").isalnum()):
            extra = ", or a GPU kind of the Ray cluster (--executor ray)" if executor == "local" else ""
            raise UsageError(f"unknown device '{kind}'; expected one of {', '.join(known)}{extra}")
    if len(set(kinds)) != len(kinds):
        raise UsageError(f"device '{device}' names a kind twice")
    if executor == "local" and len(kinds) > 1 and {"auto", "cuda"} & set(kinds):
        raise UsageError("this machine has one GPU kind: with --executor local, name auto or cuda alone, "
                         "or simulated kinds (sim-h100,sim-h200)")
    return kinds
