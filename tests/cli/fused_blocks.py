"""Fused blocks from real models, each declared as one operator the way a model author writes
it: what is computed, not where kernels begin. No one kernel holds any of them; tiletune
splits each into kernels (`kernels.parts`). Loaded by path (`fused_blocks.py:NAME`), as a
user's file is."""
import tiletune as tt
from tiletune import tensorexpr as te


def _matmul(a, b, M, N, K):
    k = te.reduce_axis(K, name="k")
    return te.compute((M, N), lambda i, j: te.sum(a[i, k] * b[k, j], axis=k), name="c")


def _conv3x3(x, w, N, C, H, W, K, name="y"):
    """conv2d, 3x3, padding 1, stride 1: y[N, K, H, W]."""
    ci, r, s = te.reduce_axis(C, name="ci"), te.reduce_axis(3, name="r"), te.reduce_axis(3, name="s")

    def body(n, co, oh, ow):
        ih, iw = oh + r - 1, ow + s - 1
        inside = (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        return te.sum(te.where(inside, x[n, ci, ih, iw], 0.0) * w[co, ci, r, s], axis=(ci, r, s))

    return te.compute((N, K, H, W), body, name=name)


def _group_stats(y, N, G, CG, H, W):
    """Mean and variance of y[N, G * CG, H, W] over each (n, group)."""
    q1, q2, q3 = te.reduce_axis(CG, name="q1"), te.reduce_axis(H, name="q2"), te.reduce_axis(W, name="q3")
    total = te.compute((N, G), lambda n, g: te.sum(y[n, g * CG + q1, q2, q3], axis=(q1, q2, q3)), name="total")
    mean = te.compute((N, G), lambda n, g: total[n, g] / (CG * H * W), name="mean")
    v1, v2, v3 = te.reduce_axis(CG, name="v1"), te.reduce_axis(H, name="v2"), te.reduce_axis(W, name="v3")

    def centred(n, g, c, h, w):
        return y[n, g * CG + c, h, w] - mean[n, g]

    sq = te.compute((N, G), lambda n, g: te.sum(centred(n, g, v1, v2, v3) * centred(n, g, v1, v2, v3),
                                                axis=(v1, v2, v3)), name="sq")
    var = te.compute((N, G), lambda n, g: sq[n, g] / (CG * H * W), name="var")
    return mean, var


@tt.operator
def matmul_gelu_softmax(M, N, K, dtype="float32"):
    """softmax(gelu(A @ B + bias), dim=-1) * 0.5: GEMM -> bias -> GELU -> row softmax -> scale."""
    a = te.placeholder((M, K), dtype, name="a")
    b = te.placeholder((K, N), dtype, name="b")
    bias = te.placeholder((N,), dtype, name="bias")
    c = _matmul(a, b, M, N, K)
    g = te.compute((M, N), lambda i, j: te.nn.gelu(c[i, j] + bias[j]), name="g")
    r1 = te.reduce_axis(N, name="r1")
    mx = te.compute((M,), lambda i: te.max(g[i, r1], axis=r1), name="mx")
    e = te.compute((M, N), lambda i, j: te.exp(g[i, j] - mx[i]), name="e")
    r2 = te.reduce_axis(N, name="r2")
    s = te.compute((M,), lambda i: te.sum(e[i, r2], axis=r2), name="s")
    return [a, b, bias], te.compute((M, N), lambda i, j: e[i, j] / s[i] * 0.5, name="y")


@tt.operator
def gemm_div_sum_scale(M, N, K, dtype="float32"):
    """(A @ B / 2).sum(dim=1) * 1.5."""
    a = te.placeholder((M, K), dtype, name="a")
    b = te.placeholder((K, N), dtype, name="b")
    c = _matmul(a, b, M, N, K)
    d = te.compute((M, N), lambda i, j: c[i, j] / 2.0, name="d")
    r = te.reduce_axis(N, name="r")
    s = te.compute((M,), lambda i: te.sum(d[i, r], axis=r), name="s")
    return [a, b], te.compute((M,), lambda i: s[i] * 1.5, name="y")


@tt.operator
def gemm_sigmoid_lse(M, N, K, dtype="float32"):
    """logsumexp(sigmoid(A @ B), dim=1)."""
    a = te.placeholder((M, K), dtype, name="a")
    b = te.placeholder((K, N), dtype, name="b")
    c = _matmul(a, b, M, N, K)
    g = te.compute((M, N), lambda i, j: te.sigmoid(c[i, j]), name="g")
    r1 = te.reduce_axis(N, name="r1")
    mx = te.compute((M,), lambda i: te.max(g[i, r1], axis=r1), name="mx")
    r2 = te.reduce_axis(N, name="r2")
    s = te.compute((M,), lambda i: te.sum(te.exp(g[i, r2] - mx[i]), axis=r2), name="s")
    return [a, b], te.compute((M,), lambda i: te.log(s[i]) + mx[i], name="y")


@tt.operator
def conv_instancenorm(N, C, H, W, K, dtype="float32"):
    """instance_norm(conv2d(x, w, padding=1))."""
    x = te.placeholder((N, C, H, W), dtype, name="x")
    w = te.placeholder((K, C, 3, 3), dtype, name="w")
    y = _conv3x3(x, w, N, C, H, W, K)
    kh, kw = te.reduce_axis(H, name="kh"), te.reduce_axis(W, name="kw")
    total = te.compute((N, K), lambda n, c: te.sum(y[n, c, kh, kw], axis=(kh, kw)), name="total")
    mean = te.compute((N, K), lambda n, c: total[n, c] / (H * W), name="mean")
    qh, qw = te.reduce_axis(H, name="qh"), te.reduce_axis(W, name="qw")
    sq = te.compute((N, K), lambda n, c: te.sum((y[n, c, qh, qw] - mean[n, c]) * (y[n, c, qh, qw] - mean[n, c]),
                                                axis=(qh, qw)), name="sq")
    return [x, w], te.compute((N, K, H, W), lambda n, c, h, w_: (y[n, c, h, w_] - mean[n, c])
                              * te.rsqrt(sq[n, c] / (H * W) + 1e-5), name="z")


def _groupnorm_act_residual(N, C, H, W, G, CG, dtype):
    """The inputs and z = hardswish(tanh(group_norm(conv2d(x, w, padding=1)))) + res."""
    x = te.placeholder((N, C, H, W), dtype, name="x")
    w = te.placeholder((G * CG, C, 3, 3), dtype, name="w")
    res = te.placeholder((N, G * CG, H, W), dtype, name="res")
    gamma = te.placeholder((G, CG), dtype, name="gamma")
    beta = te.placeholder((G, CG), dtype, name="beta")
    y = _conv3x3(x, w, N, C, H, W, G * CG)
    mean, var = _group_stats(y, N, G, CG, H, W)

    def body(n, k, h, w_):
        g, c = k // CG, k % CG
        normed = (y[n, k, h, w_] - mean[n, g]) * te.rsqrt(var[n, g] + 1e-5) * gamma[g, c] + beta[g, c]
        return te.nn.hardswish(te.tanh(normed)) + res[n, k, h, w_]

    return [x, w, res, gamma, beta], te.compute((N, G * CG, H, W), body, name="z")


@tt.operator
def conv_groupnorm_act_residual(N, C, H, W, G, CG, dtype="float32"):
    """hardswish(tanh(group_norm(conv2d(x, w, padding=1), G, gamma, beta))) + res, the
    conv's G * CG channels normalised in G groups (gamma and beta as [G, CG] views of [C])."""
    return _groupnorm_act_residual(N, C, H, W, G, CG, dtype)


@tt.operator
def conv_groupnorm_act_residual_lse(N, C, H, W, G, CG, dtype="float32"):
    """logsumexp over channels of hardswish(tanh(group_norm(conv2d(x, w, padding=1)))) + res."""
    inputs, z = _groupnorm_act_residual(N, C, H, W, G, CG, dtype)
    k1 = te.reduce_axis(G * CG, name="k1")
    mx = te.compute((N, H, W), lambda n, h, w_: te.max(z[n, k1, h, w_], axis=k1), name="mx")
    k2 = te.reduce_axis(G * CG, name="k2")
    s = te.compute((N, H, W), lambda n, h, w_: te.sum(te.exp(z[n, k2, h, w_] - mx[n, h, w_]), axis=k2), name="s")
    return inputs, te.compute((N, H, W), lambda n, h, w_: te.log(s[n, h, w_]) + mx[n, h, w_], name="lse")


@tt.operator
def reverse_cumsum(N, D, dtype="float32"):
    """x.flip(1).cumsum(1).flip(1), written as the row total minus the cumsum plus x."""
    x = te.placeholder((N, D), dtype, name="x")
    r = te.reduce_axis(D, name="r")
    total = te.compute((N,), lambda i: te.sum(x[i, r], axis=r), name="total")
    cs = te.compute((N, D), lambda i, j: te.cumsum(x[i, j], axis=j), name="cs")
    return [x], te.compute((N, D), lambda i, j: total[i] - cs[i, j] + x[i, j], name="y")


@tt.operator
def depthwise_separable(N, C, H, W, K, dtype="float32"):
    """conv2d(conv2d(x, dw, padding=1, groups=C), pw): a 3x3 depthwise conv, then a 1x1 one."""
    x = te.placeholder((N, C, H, W), dtype, name="x")
    dw = te.placeholder((C, 1, 3, 3), dtype, name="dw")
    pw = te.placeholder((K, C, 1, 1), dtype, name="pw")
    r, s = te.reduce_axis(3, name="r"), te.reduce_axis(3, name="s")

    def depthwise(n, c, h, w):
        ih, iw = h + r - 1, w + s - 1
        inside = (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        return te.sum(te.where(inside, x[n, c, ih, iw], 0.0) * dw[c, 0, r, s], axis=(r, s))

    d = te.compute((N, C, H, W), depthwise, name="d")
    ci = te.reduce_axis(C, name="ci")
    return [x, dw, pw], te.compute((N, K, H, W), lambda n, k, h, w: te.sum(d[n, ci, h, w] * pw[k, ci, 0, 0], axis=ci),
                                   name="y")
