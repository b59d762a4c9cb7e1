"""CPU kernels against numpy references, on awkward shapes."""

import numpy as np
import pytest

from speechcore import _C

rng = np.random.default_rng(0)
SHAPES = [1, 7, 83, 384, 1500]


def rand(*shape):
    return rng.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("m,n,k", [(1, 1, 1), (1, 83, 7), (7, 83, 1500), (83, 7, 384), (1500, 384, 83)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear(m, n, k, bias):
    x, w = rand(m, k), rand(n, k)
    b = rand(n) if bias else None
    ref = x.astype(np.float64) @ w.astype(np.float64).T + (b if bias else 0)
    got = _C.ops.linear(x, w, b)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * np.sqrt(k))


@pytest.mark.parametrize("rows,cols", [(1, 1), (7, 83), (1500, 384), (3, 1500)])
def test_layer_norm(rows, cols):
    x = rand(rows, cols) * 3 + 1
    g, b = rand(cols), rand(cols)
    mean = x.mean(-1, keepdims=True, dtype=np.float64)
    var = x.var(-1, keepdims=True, dtype=np.float64)
    ref = (x - mean) / np.sqrt(var + 1e-5) * g + b
    np.testing.assert_allclose(_C.ops.layer_norm(x, g, b), ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("n", SHAPES)
def test_gelu_exact(n):
    from math import erf

    x = rand(n) * 4
    ref = np.array([0.5 * v * (1 + erf(v / np.sqrt(2))) for v in x.astype(np.float64)])
    np.testing.assert_allclose(_C.ops.gelu(x), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("rows,cols", [(1, 1), (7, 83), (83, 1500)])
def test_softmax(rows, cols):
    x = rand(rows, cols) * 10
    if cols > 1:
        x[0, 0] = -np.inf  # a masked entry
    e = np.exp(x - x.max(-1, keepdims=True))
    ref = e / e.sum(-1, keepdims=True)
    np.testing.assert_allclose(_C.ops.softmax(x), ref, rtol=1e-5, atol=1e-7)
    ls = _C.ops.log_softmax(x[1] if rows > 1 else x[0])
    row = x[1] if rows > 1 else x[0]
    m = row[np.isfinite(row)].max()
    ref_ls = row - (m + np.log(np.exp(row.astype(np.float64) - m).sum()))
    np.testing.assert_allclose(ls[np.isfinite(row)], ref_ls[np.isfinite(row)], rtol=1e-5, atol=1e-5)


def attention_ref(q, k, v, heads, causal_offset):
    tq, hd = q.shape
    d = hd // heads
    out = np.zeros((tq, hd))
    for h in range(heads):
        sl = slice(h * d, (h + 1) * d)
        s = q[:, sl].astype(np.float64) @ k[:, sl].astype(np.float64).T / np.sqrt(d)
        if causal_offset >= 0:
            i = np.arange(tq)[:, None]
            j = np.arange(k.shape[0])[None, :]
            s = np.where(j > i + causal_offset, -np.inf, s)
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        out[:, sl] = s @ v[:, sl]
    return out


@pytest.mark.parametrize("tq,tk,heads,d,causal", [
    (1, 1, 1, 64, -1), (1, 83, 6, 64, -1), (7, 1500, 8, 64, -1), (83, 83, 6, 64, 0),
    (7, 90, 6, 64, 83), (1, 12, 20, 64, 11), (150, 150, 2, 7, -1)])
def test_attention(tq, tk, heads, d, causal):
    q, k, v = rand(tq, heads * d), rand(tk, heads * d), rand(tk, heads * d)
    got = _C.ops.attention(q, k, v, heads, causal)
    np.testing.assert_allclose(got, attention_ref(q, k, v, heads, causal), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("c_in,t,c_out,stride", [(80, 3000, 7, 1), (7, 83, 13, 2), (1, 1, 1, 1), (128, 17, 384, 2)])
def test_conv1d(c_in, t, c_out, stride):
    x, w, b = rand(c_in, t), rand(c_out, c_in, 3), rand(c_out)
    xp = np.pad(x.astype(np.float64), ((0, 0), (1, 1)))
    t_out = (t + 2 - 3) // stride + 1
    ref = np.empty((t_out, c_out))
    for i in range(t_out):
        ref[i] = np.einsum("ck,ock->o", xp[:, i * stride:i * stride + 3], w) + b
    np.testing.assert_allclose(_C.ops.conv1d(x, w, b, stride, 1), ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("vocab,d,n", [(1, 1, 1), (51864, 384, 7), (83, 1500, 83)])
def test_embedding(vocab, d, n):
    table, pos = rand(vocab, d), rand(n, d)
    ids = rng.integers(0, vocab, n).astype(np.int32)
    np.testing.assert_array_equal(_C.ops.embedding(table, ids, pos), table[ids] + pos)


def test_ops_reject_bad_shapes():
    import speechcore

    with pytest.raises(speechcore.InvalidArgumentError):
        _C.ops.linear(rand(3, 4), rand(5, 6), None)
    with pytest.raises(speechcore.InvalidArgumentError):
        _C.ops.attention(rand(3, 10), rand(4, 10), rand(4, 10), 3, -1)
    with pytest.raises(speechcore.InvalidArgumentError):
        _C.ops.embedding(rand(5, 4), np.array([5], np.int32), rand(1, 4))
