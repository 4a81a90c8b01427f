"""Running generated kernels: source files in a cache directory, imported for the GPU or for
Triton's interpreter (CPU tensors).

Triton's `@jit` reads a kernel's source with `inspect`, so generated code must live in a real
file. Files are named by the hash of their text and written atomically, so concurrent workers
never see half a file. A file found on disk is checked against the hash in its name the first
time a process uses it, and rewritten if it changed: the cache is a copy of code tiletune
generates, never a source of code in its own right. Whether kernels are interpreted is fixed per process (see
`kernels.process_mode`): CPU tensors need an interpreting process, CUDA tensors a compiling one.
"""
from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Callable, Mapping, Sequence

import torch

from tiletune.errors import UsageError
from tiletune.kernels import process_mode
from tiletune.kernels.kernel import KernelSource

# Imported modules by file; an explicit cache owned by this module.
_MODULES: dict[str, ModuleType] = {}
# Cache files whose content this process has checked against their name's hash.
_VERIFIED: set[Path] = set()


def interpreting() -> bool:
    """True when this process runs kernels through Triton's interpreter (chosen on first use)."""
    return process_mode.select()


def cache_dir() -> Path:
    """Where generated sources live: $TILETUNE_CACHE_DIR, else ~/.cache/tiletune/kernels."""
    root = os.environ.get("TILETUNE_CACHE_DIR")
    path = Path(root) if root else Path.home() / ".cache" / "tiletune" / "kernels"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def source_file(src: KernelSource) -> Path:
    """The file holding `src`'s text: written if it is not there yet, and rewritten if its
    content no longer matches the hash in its name (checked once per process)."""
    digest = _digest(src.text)
    path = cache_dir() / f"{src.kernel_name}_{digest}.py"
    if path in _VERIFIED:
        return path
    try:
        intact = _digest(path.read_text()) == digest
    except (OSError, UnicodeDecodeError):  # missing, unreadable or not text: write it afresh
        intact = False
    if not intact:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".py")
        with os.fdopen(fd, "w") as f:
            f.write(src.text)
        os.replace(tmp, path)
    _VERIFIED.add(path)
    return path


def load_module(src: KernelSource) -> ModuleType:
    """The imported module of `src` (interpreted or compiled, as this process runs kernels)."""
    process_mode.select()  # before the module's `import triton` fixes the mode
    path = source_file(src)
    if str(path) in _MODULES:
        return _MODULES[str(path)]
    name = f"tiletune_generated.{path.stem}"
    module = ModuleType(name)
    module.__file__ = str(path)
    sys.modules[name] = module
    # Compiled from the text in memory, not imported from the file: an import could run a
    # stale or planted bytecode file, or a file changed after it was checked. The file is
    # there for Triton, which reads a kernel's source through `inspect`.
    exec(compile(src.text, str(path), "exec"), module.__dict__)
    _MODULES[str(path)] = module
    return module


def launcher(src: KernelSource, cuda: bool) -> Callable[..., None]:
    """The generated `launch(*inputs, out, *dims)` of `src`, resolved once for a caller that
    runs it many times (a library call's hot path: no hashing or file checks per call)."""
    if not cuda and not interpreting():
        raise UsageError(
            "CPU tensors run through Triton's interpreter, which this process did not select: "
            "set TRITON_INTERPRET=1 before importing tiletune, or pass CUDA tensors"
        )
    return load_module(src).launch


def launch(src: KernelSource, inputs: Sequence[torch.Tensor], out: torch.Tensor, dims: Mapping[str, int]) -> None:
    """Run `src` on `inputs`, writing `out` (dims in declaration order, as `Graph.check_dims`
    returns them)."""
    launcher(src, out.is_cuda)(*inputs, out, *dims.values())
