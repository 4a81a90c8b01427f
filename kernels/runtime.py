"""Running generated kernels: source files in a cache directory, imported for the GPU or for
Triton's interpreter (CPU tensors).

Triton's `@jit` reads a kernel's source with `inspect`, so generated code must live in a real
file. Files are named by the hash of their text and written atomically, so concurrent workers
never see half a file. A file found on disk is checked against the hash in its name the first
time a process uses it, and rewritten if it changed: the cache is a copy of code tiletune
generates, never a source of code in its own right. Whether kernels are interpreted is fixed per process (see
`kernels.process_mode`): CPU tensors need an interpreting process, CUDA tensors a compiling one.

A cache directory that cannot be written (read-only, on a full disk, a path through a file)
costs speed, not correctness: this process warns once, naming the directory and how to choose
another, and keeps its files in a private temporary directory instead.
"""
from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import warnings
from pathlib import Path
from types import ModuleType
from typing import Callable, Mapping, Sequence

import torch

from tiletune.errors import TiletuneError, UsageError
from tiletune.kernels import process_mode
from tiletune.kernels.kernel import KernelSource

# Imported modules by file; an explicit cache owned by this module.
_MODULES: dict[str, ModuleType] = {}
# Cache files whose content this process has checked against their name's hash.
_VERIFIED: set[Path] = set()
# Configured cache directories this process has found writable, and the directory it uses in
# place of each one it could not write.
_WRITABLE: set[Path] = set()
_FALLBACK: dict[Path, Path] = {}


class KernelCacheError(TiletuneError):
    """Neither the configured kernel cache nor a private temporary one can be written."""


class KernelCacheWarning(UserWarning):
    """The configured kernel cache cannot be written; a private temporary one is used."""


def interpreting() -> bool:
    """True when this process runs kernels through Triton's interpreter (chosen on first use)."""
    return process_mode.select()


def configured_cache_dir() -> Path:
    """The cache directory asked for: $TILETUNE_CACHE_DIR, else ~/.cache/tiletune/kernels."""
    root = os.environ.get("TILETUNE_CACHE_DIR")
    return Path(root) if root else Path.home() / ".cache" / "tiletune" / "kernels"


def cache_dir() -> Path:
    """Where generated sources live: the configured directory, or this process's private
    fallback once the configured one turned out unwritable."""
    path = configured_cache_dir()
    if path in _FALLBACK:
        return _FALLBACK[path]
    if path in _WRITABLE:
        return path
    try:
        path.mkdir(parents=True, exist_ok=True)
        # a writable directory, not just an existing one (mkdir succeeds on a read-only one)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".tmp-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        return _fall_back(path, error)
    _WRITABLE.add(path)
    return path


def _fall_back(path: Path, error: OSError) -> Path:
    """Switch this process from the unwritable `path` to a private temporary directory."""
    if path not in _FALLBACK:
        try:
            private = Path(tempfile.mkdtemp(prefix="tiletune-kernels-"))
        except OSError as second:
            raise KernelCacheError(
                f"the kernel cache {path} cannot be written ({error.strerror or error}), nor a private one in "
                f"{tempfile.gettempdir()} ({second.strerror or second}): set TILETUNE_CACHE_DIR to a writable "
                "directory") from None
        warnings.warn(
            f"the kernel cache {path} cannot be written ({error.strerror or error}); this process keeps its "
            f"generated kernels in {private} instead: set TILETUNE_CACHE_DIR to a writable directory to keep "
            "them between runs", KernelCacheWarning, stacklevel=3)
        _FALLBACK[path] = private
    return _FALLBACK[path]


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
        try:
            _write_atomically(path, src.text)
        except OSError as error:  # the directory became unwritable (or the disk full) since it was checked
            fallback = _fall_back(configured_cache_dir(), error)
            if path.parent == fallback:
                raise KernelCacheError(f"cannot write the generated kernel {path}: {error.strerror or error}; "
                                       "set TILETUNE_CACHE_DIR to a writable directory") from None
            return source_file(src)
    _VERIFIED.add(path)
    return path


def _write_atomically(path: Path, text: str) -> None:
    """Write `text` to a temporary file beside `path`, then rename it over `path`; the
    temporary file never outlives a failure."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".py")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
