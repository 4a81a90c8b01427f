"""Scalar indices in Triton 3.6's interpreter under NumPy >= 2.4.

The interpreter keeps a scalar (`tl.program_id(0)`, `tl.num_programs(0)`, a loaded scalar) as a
one-element array, and Triton 3.6 converts it to a Python int with `int(array)`, which NumPy
2.4 refuses ("only 0-dimensional arrays can be converted to Python scalars"). Every use of a
scalar where Python wants an int fails then: the persistent loop
`tl.range(tl.program_id(0), num_tiles, tl.num_programs(0))` among them. Triton 3.7 squeezes the
array first; `install()` does the same for the versions that `triton_versions` says need it.
"""
from __future__ import annotations

_MARK = "_tiletune_scalar_index"


def _index(self) -> int:
    return int(self.handle.data.squeeze())


def install() -> None:
    """Wrap the interpreter's patching of `tl.tensor` once per process (a no-op when done)."""
    from triton.runtime import interpreter

    original = interpreter._patch_lang_tensor
    if getattr(original, _MARK, False):
        return

    def patch_lang_tensor(tensor, scope):
        # the interpreter sets the tensor's dunders at every launch and restores them after:
        # the fix rides on the same scope
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", _index)

    setattr(patch_lang_tensor, _MARK, True)
    interpreter._patch_lang_tensor = patch_lang_tensor
