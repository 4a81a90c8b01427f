"""Structural hashes are pinned: the tuning DB keys workloads by them, so a change in how the
IR renders an operator (an enum's name instead of its value, a new field) would orphan every
recorded result. The operator below uses every operator of the IR once."""
from __future__ import annotations

from tiletune import tensorexpr as te
from tiletune.tensorexpr.expr import OP_ENUMS, walk
from tiletune.tensorexpr.operator import canonical_text


@te.operator
def every_operator(N, D):
    x = te.placeholder((N, D), "float32", name="x")
    n = te.placeholder((N, D), "int32", name="n")
    k = te.reduce_axis(D, name="k")
    arith = te.compute(
        (N, D),
        lambda i, j: te.maximum(x[i, j] + 1.0, x[i, j] - 2.0) * te.minimum(x[i, j], 3.0) / (x[i, j] * x[i, j] + 1.0)
        + ((n[i, j] // 3) % 5).astype("float32"),
        name="arith",
    )
    unary = te.compute(
        (N, D),
        lambda i, j: -te.exp(arith[i, j]) + te.log(te.abs(arith[i, j]) + 1.0) + te.sqrt(te.abs(arith[i, j]))
        + te.rsqrt(te.abs(arith[i, j]) + 1.0) + te.tanh(arith[i, j]) + te.sigmoid(arith[i, j]) + te.erf(arith[i, j]),
        name="unary",
    )
    cond = te.compute(
        (N, D),
        lambda i, j: te.where(
            ((unary[i, j] < 0.0) & (unary[i, j] <= 1.0)) | ~((unary[i, j] > 2.0) | (unary[i, j] >= 3.0))
            | te.equal(n[i, j], 1) | te.not_equal(n[i, j], 2),
            unary[i, j], 0.0,
        ),
        name="cond",
    )
    total = te.compute((N,), lambda i: te.sum(cond[i, k], axis=k), name="total")
    high = te.compute((N,), lambda i: te.max(cond[i, k], axis=k), name="high")
    low = te.compute((N,), lambda i: te.min(cond[i, k], axis=k), name="low")
    first = te.compute((N,), lambda i: te.argmax(cond[i, k], axis=k), name="first")
    last = te.compute((N,), lambda i: te.argmin(cond[i, k], axis=k), name="last")
    csum = te.compute((N, D), lambda i, j: te.cumsum(cond[i, j], axis=j), name="csum")
    cprod = te.compute((N, D), lambda i, j: te.cumprod(csum[i, j], axis=j), name="cprod")
    cmax = te.compute((N, D), lambda i, j: te.cummax(cprod[i, j], axis=j), name="cmax")
    cmin = te.compute((N, D), lambda i, j: te.cummin(cmax[i, j], axis=j), name="cmin")
    out = te.compute(
        (N, D),
        lambda i, j: cmin[i, j] + total[i] + high[i] + low[i] + first[i].astype("float32") + last[i].astype("float32"),
        name="out",
    )
    return [x, n], out


EXPECTED_TEXT = """\
dims N,D
in0 = input('$N', '$D'):float32
in1 = input('$N', '$D'):int32
s0(a0<$N>,a1<$D>) = add(truediv(mul(maximum(add(in0[a0<$N>,a1<$D>],1.0:float):float32,sub(in0[a0<$N>,a1<$D>],2.0:float):float32):float32,minimum(in0[a0<$N>,a1<$D>],3.0:float):float32):float32,add(mul(in0[a0<$N>,a1<$D>],in0[a0<$N>,a1<$D>]):float32,1.0:float):float32):float32,cast(mod(floordiv(in1[a0<$N>,a1<$D>],3:int):int32,5:int):int32):float32):float32:float32
s1(a0<$N>,a1<$D>) = add(add(add(add(add(add(neg(exp(s0[a0<$N>,a1<$D>]):float32):float32,log(add(abs(s0[a0<$N>,a1<$D>]):float32,1.0:float):float32):float32):float32,sqrt(abs(s0[a0<$N>,a1<$D>]):float32):float32):float32,rsqrt(add(abs(s0[a0<$N>,a1<$D>]):float32,1.0:float):float32):float32):float32,tanh(s0[a0<$N>,a1<$D>]):float32):float32,sigmoid(s0[a0<$N>,a1<$D>]):float32):float32,erf(s0[a0<$N>,a1<$D>]):float32):float32:float32
s2(a0<$N>,a1<$D>) = where(or(or(or(and(lt(s1[a0<$N>,a1<$D>],0.0:float):bool,le(s1[a0<$N>,a1<$D>],1.0:float):bool):bool,not(or(gt(s1[a0<$N>,a1<$D>],2.0:float):bool,ge(s1[a0<$N>,a1<$D>],3.0:float):bool):bool):bool):bool,eq(in1[a0<$N>,a1<$D>],1:int):bool):bool,ne(in1[a0<$N>,a1<$D>],2:int):bool):bool,s1[a0<$N>,a1<$D>],0.0:float):float32:float32
s3(a0<$N>,a1<$D>) = scan_sum[a1<$D>](s2[a0<$N>,a1<$D>]):float32:float32
s4(a0<$N>,a1<$D>) = scan_prod[a1<$D>](s3[a0<$N>,a1<$D>]):float32:float32
s5(a0<$N>,a1<$D>) = scan_max[a1<$D>](s4[a0<$N>,a1<$D>]):float32:float32
s6(a0<$N>,a1<$D>) = scan_min[a1<$D>](s5[a0<$N>,a1<$D>]):float32:float32
s7(a0<$N>) = sum[r1<$D>](s2[a0<$N>,r1<$D>]):float32:float32
s8(a0<$N>) = max[r1<$D>](s2[a0<$N>,r1<$D>]):float32:float32
s9(a0<$N>) = min[r1<$D>](s2[a0<$N>,r1<$D>]):float32:float32
s10(a0<$N>) = argmax[r1<$D>](s2[a0<$N>,r1<$D>]):int64:int64
s11(a0<$N>) = argmin[r1<$D>](s2[a0<$N>,r1<$D>]):int64:int64
s12(a0<$N>,a1<$D>) = add(add(add(add(add(s6[a0<$N>,a1<$D>],s7[a0<$N>]):float32,s8[a0<$N>]):float32,s9[a0<$N>]):float32,cast(s10[a0<$N>]):float32):float32,cast(s11[a0<$N>]):float32):float32:float32
out s12"""

EXPECTED_HASH = "f7b88a98b18f7b63"


def test_canonical_text_of_every_operator_is_pinned():
    assert canonical_text(every_operator.graph()) == EXPECTED_TEXT


def test_structural_hash_of_every_operator_is_pinned():
    assert every_operator.graph().structural_hash() == EXPECTED_HASH


def test_the_pinned_operator_uses_every_member_of_every_operator_enum():
    graph = every_operator.graph()
    # (kind, name) pairs: ReduceOp.SUM and ScanOp.SUM are equal as names, not as members
    used = {(type(n.op), n.op.value) for t in graph.stages for n in walk(t.op.body) if hasattr(n, "op")}
    for kind in OP_ENUMS:
        missing = [m.value for m in kind if (kind, m.value) not in used]
        assert not missing, f"{kind.__name__}: {missing}"
