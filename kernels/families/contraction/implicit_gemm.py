"""Index logic of implicit GEMMs (convolutions) in the contraction kernel.

The kernel tiles the synthetic roles of `Contraction` (m = n*oh*ow, k = ci*r*s, n = co or the
channel within a group) exactly as a matmul's; here the fused tile offsets are unflattened into
one index vector per real axis (`idx_oh = (offs_m // OW) % OH`), so that the factors' reads, with
their index arithmetic, and the output's store address memory per axis. Out-of-bounds input
reads (the padding) are masked by the emitter's bounds checks and read as zero.
"""
from __future__ import annotations

from tiletune.kernels.emit import CodeBuilder, TileEmitter, Value, ident
from tiletune.kernels.kernel import KernelContext
from tiletune.tensorexpr.analysis import Contraction
from tiletune.tensorexpr.expr import IterVar


def unflatten(body: CodeBuilder, kernel: KernelContext, axes: tuple[IterVar, ...], offs: str) -> dict[IterVar, str]:
    """Emit the per-axis indices of fused offsets `offs` (row-major over `axes`, outermost
    first) and return their variable names; a single axis is the offsets themselves."""
    if len(axes) == 1:
        return {axes[0]: offs}
    names: dict[IterVar, str] = {}
    inner = ""  # the product of the extents of the axes inside the current one
    for pos in reversed(range(len(axes))):
        axis = axes[pos]
        extent = kernel.extent(axis.extent)
        quotient = f"{offs} // ({inner})" if inner else offs
        code = f"({quotient}) % {extent}" if pos > 0 else quotient
        names[axis] = body.assign(f"idx_{ident(axis.name)}", code)
        inner = f"{inner} * {extent}" if inner else extent
    return {axis: names[axis] for axis in axes}


def fused_axes(
    contraction: Contraction, emitter: TileEmitter, kernel: KernelContext, m_index: dict[IterVar, str],
    k_index: dict[IterVar, str], batch_values: dict[IterVar, Value],
) -> dict[IterVar, Value]:
    """The index values of the real axes behind the roles this tile (`emitter`) runs along."""
    role_dim = {d.name: pos for pos, d in enumerate(emitter.dims)}
    out: dict[IterVar, Value] = {}
    for role, index in (("m", m_index), ("k", k_index)):
        if role in role_dim:
            d = role_dim[role]
            out.update({axis: Value(emitter.expand(name, d), frozenset({d}), "int32") for axis, name in index.items()})
    if "n" in role_dim:
        d = role_dim["n"]
        offs = emitter.expand("offs_n", d)
        group = contraction.fused.group
        if group is not None:
            # the program's group picks the block of output channels this tile's columns are in
            offs = f"({batch_values[group].code} * {kernel.extent(contraction.n.extent)} + {offs})"
        out[contraction.fused.n_axis] = Value(offs, frozenset({d}), "int32")
    return out
