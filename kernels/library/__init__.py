"""The built-in operator library: operators declared in the DSL like any user's.

Each family is one module; each operator takes its dims and a `dtype`, and narrow float inputs
are computed in fp32 and stored back in their own type by the generated kernels. `BUILTINS`
maps every built-in's name to its operator; `resolve_operator` also accepts
`path/to/file.py:function` for a user's own, and `operator_ref` is its inverse: the reference
that finds an operator again (in a worker process, or in `tiletune autotune`'s command line).
"""
from __future__ import annotations

import hashlib
import importlib.util
import sys
import traceback
from pathlib import Path
from types import ModuleType

from tiletune.errors import OperatorFileError, UsageError
from tiletune.kernels.library import (
    activations,
    attention,
    contractions,
    convolution,
    elementwise,
    losses,
    normalizations,
    reductions,
    scans,
    windows,
)
from tiletune.tensorexpr.operator import Operator, attrs_suffix, parse_attrs

#: The families of built-ins, by name, in the order the README and `tiletune list` show them.
FAMILIES: dict[str, ModuleType] = {
    "contractions": contractions,
    "convolution": convolution,
    "attention": attention,
    "elementwise": elementwise,
    "activations": activations,
    "reductions": reductions,
    "normalizations": normalizations,
    "windows": windows,
    "scans": scans,
    "losses": losses,
}

BUILTINS: dict[str, Operator] = {
    name: getattr(module, name) for module in FAMILIES.values() for name in module.__all__
}


def __getattr__(name: str) -> Operator:
    # `from tiletune.kernels.library import matmul` keeps working for every family's operators
    if name in BUILTINS:
        return BUILTINS[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def parametrised_builtin(name: str) -> Operator | None:
    """The built-in a parametrised name stands for (`conv2d_s2_p1`: a family's operator with
    parameters baked in), or None; families that have such operators define `parametrised`."""
    for module in FAMILIES.values():
        make = getattr(module, "parametrised", None)
        op = make(name) if make is not None else None
        if op is not None:
            return op
    return None


def builtin(name: str) -> Operator:
    """The built-in operator called `name`."""
    if name not in BUILTINS and (op := parametrised_builtin(name)) is not None:
        return op
    if name not in BUILTINS:
        raise UsageError(f"no built-in operator '{name}'; built-ins are {', '.join(sorted(BUILTINS))}")
    return BUILTINS[name]


def resolve_operator(ref: str | Operator) -> Operator:
    """The operator named by `ref`: a built-in name, or `path/to/file.py:function` for one
    declared with `@tiletune.operator` in a user's file (the file is imported, as Python code
    the user wrote; nothing from a tuning DB is ever executed). Either may end in attributes,
    `softmax_nd[dim=1]`, which are literals (`parse_attrs`), never code."""
    if isinstance(ref, Operator):
        return ref
    if not isinstance(ref, str):
        raise UsageError(f"expected an operator or its name (a built-in or path/file.py:function), got {ref!r}")
    from tiletune.kernels.backward import split_step_name, step_operator
    from tiletune.kernels.parts import part_operator, split_part_name

    step = split_step_name(ref)
    if step is not None:  # a backward step, `matmul.grad_a`: derived from its forward operator
        forward = resolve_operator(step[0])
        return step_operator(forward, f"{forward.name}.{step[1]}")
    part = split_part_name(ref)
    if part is not None:  # one kernel of a split operator, `block.part_g`
        whole = resolve_operator(part[0])
        return part_operator(whole, f"{whole.name}.{part[1]}")
    base, attrs = parse_attrs(ref)
    if attrs:
        return resolve_operator(base).with_attrs(**attrs)
    if ":" not in ref:
        return builtin(ref)
    path_text, _, attr = ref.rpartition(":")
    path = Path(path_text).expanduser()
    where = f"operator file '{path_text}'"
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise OperatorFileError(f"{where} {what}; expected path/to/file.py:function")
    if path.suffix != ".py":
        raise OperatorFileError(f"{where} is not a Python file; expected path/to/file.py:function")
    if not attr.isidentifier():
        raise OperatorFileError(f"'{ref}' names no operator after the colon; expected path/to/file.py:function")
    module = _import_file(path.resolve())
    if not hasattr(module, attr):
        raise OperatorFileError(f"{where} defines no '{attr}'")
    obj = getattr(module, attr)
    if not isinstance(obj, Operator):
        raise OperatorFileError(f"'{path_text}:{attr}' is not an operator (it is a {type(obj).__name__}); "
                                "decorate it with @tiletune.operator")
    return obj


def operator_ref(op: str | Operator) -> str:
    """How workers find an operator again: a built-in name or `path.py:function` (what
    `resolve_operator` reads back)."""
    if not isinstance(op, (str, Operator)):
        raise UsageError(f"expected an operator or its name (a built-in or path/file.py:function), got {op!r}")
    if isinstance(op, str):
        path, sep, name = op.rpartition(":")
        # workers may run elsewhere than the caller's directory: name the file absolutely
        return f"{Path(path).expanduser().resolve()}:{name}" if sep and Path(path).expanduser().is_file() else op
    forward = getattr(op, "derived_from", None)
    if forward is not None:  # a backward step or a part: its operator's reference and its suffix
        return operator_ref(forward) + op.name[len(forward.name):]
    if op.base is not None:
        # a `with_attrs` variant: workers rebuild it from its base with the same attributes
        return operator_ref(op.base) + attrs_suffix(op.bound_attrs)
    if BUILTINS.get(op.name) is op or parametrised_builtin(op.name) is op:
        return op.name
    module = getattr(op.fn, "__module__", None)
    path = getattr(sys.modules.get(module), "__file__", None)
    if not path:
        raise UsageError(f"operator {op.name} is not defined in a file; worker processes cannot import it")
    return f"{path}:{op.fn.__name__}"


# Imported operator files by resolved path; an explicit cache so a file is imported once.
_USER_MODULES: dict[Path, ModuleType] = {}


def _import_file(path: Path) -> ModuleType:
    if path in _USER_MODULES:
        return _USER_MODULES[path]
    name = "tiletune_user_" + hashlib.sha256(str(path).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as error:  # the user's code: a sys.exit() in it is a failure too
        del sys.modules[name]
        raise OperatorFileError(f"importing operator file '{path}' failed{_where(error, path)}: "
                                f"{type(error).__name__}: {error}") from error
    _USER_MODULES[path] = module
    return module


def _where(error: BaseException, path: Path) -> str:
    """` at line N` of the operator file where `error` was raised, when it was raised there."""
    if isinstance(error, SyntaxError) and error.lineno:
        return f" at line {error.lineno}"
    lines = [f.lineno for f in traceback.extract_tb(error.__traceback__) if Path(f.filename) == path]
    return f" at line {lines[-1]}" if lines else ""
