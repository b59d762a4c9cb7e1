"""cuBLASLt products against float64 numpy on the same (dtype-rounded) inputs."""

import numpy as np
import pytest

from speechcore import _C

pytestmark = pytest.mark.cuda
TOL = {"float32": 1e-5, "float16": 1e-2, "bfloat16": 4e-2}
rng = np.random.default_rng(7)


def rel_err(got, ref):
    assert np.isfinite(got).all(), "non-finite output (unwritten element?)"
    return np.linalg.norm(got - ref) / max(np.linalg.norm(ref), 1e-30)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("m,n,k", [(1, 1, 1), (1, 51864, 384), (7, 83, 1500), (1500, 1152, 384), (83, 7, 64),
                                   (16, 1280, 5120)])
@pytest.mark.parametrize("bias,accumulate", [(False, False), (True, False), (True, True)])
def test_linear(dtype, m, n, k, bias, accumulate):
    r = lambda a: _C.ops.round_to_dtype(a.astype(np.float32), dtype)  # noqa: E731
    x, w = r(rng.standard_normal((m, k))), r(rng.standard_normal((n, k)) / np.sqrt(k))
    b = r(rng.standard_normal(n)) if bias else None
    y0 = r(rng.standard_normal((m, n))) if accumulate else None
    ref = x.astype(np.float64) @ w.astype(np.float64).T
    if bias:
        ref += b
    if accumulate:
        ref += y0
    got = _C.cuda_ops.linear(x, w, b, dtype, y0)
    assert rel_err(got, ref) < TOL[dtype]


def test_linear_matches_cpu_twin_fp32():
    x, w = rng.standard_normal((83, 384)).astype(np.float32), rng.standard_normal((1536, 384)).astype(np.float32)
    b = rng.standard_normal(1536).astype(np.float32)
    assert rel_err(_C.cuda_ops.linear(x, w, b, "float32"), _C.ops.linear(x, w, b).astype(np.float64)) < 1e-6


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("m,n,k", [(1, 1, 1), (1, 3840, 1280), (3, 1280, 5120), (8, 5120, 1280), (5, 83, 1501),
                                   (2, 7, 9), (1, 51865, 1280)])
@pytest.mark.parametrize("bias,accumulate", [(False, False), (True, True)])
def test_gemv_matches_reference_and_cublaslt(dtype, m, n, k, bias, accumulate):
    """The skinny decode-step kernel (m <= 8): against float64 and against cuBLASLt on the same
    inputs, vectorized (k a multiple of 16 bytes) and scalar (odd k) paths."""
    r = lambda a: _C.ops.round_to_dtype(a.astype(np.float32), dtype)  # noqa: E731
    x, w = r(rng.standard_normal((m, k))), r(rng.standard_normal((n, k)) / np.sqrt(k))
    b = r(rng.standard_normal(n)) if bias else None
    y0 = r(rng.standard_normal((m, n))) if accumulate else None
    ref = x.astype(np.float64) @ w.astype(np.float64).T + (b if bias else 0) + (y0 if accumulate else 0)
    got = _C.cuda_ops.linear(x, w, b, dtype, y0, gemv_max_rows=8)
    lt = _C.cuda_ops.linear(x, w, b, dtype, y0, gemv_max_rows=0)
    assert rel_err(got, ref) < TOL[dtype]
    assert rel_err(got, lt.astype(np.float64)) < TOL[dtype]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("m", [1, 8, 9])
def test_float32_output_products(dtype, m):
    """Logits: float32 output of half-precision inputs, by gemv (m <= 8) and cuBLASLt (m = 9)."""
    r = lambda a: _C.ops.round_to_dtype(a.astype(np.float32), dtype)  # noqa: E731
    x, w = r(rng.standard_normal((m, 384))), r(rng.standard_normal((51865, 384)) / 20)
    ref = x.astype(np.float64) @ w.astype(np.float64).T
    got = _C.cuda_ops.linear(x, w, None, dtype, None, f32_out=True)
    assert rel_err(got, ref) < 1e-5  # float32 accumulation and output: no half-precision rounding


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("m,gemv_rows", [(1, 8), (4, 8), (4, 0), (40, 8)])
def test_linear_gelu(dtype, m, gemv_rows):
    """gelu(x w^T + b): fused in gemv (small m) or cuBLASLt + the GELU kernel; exact erf GELU."""
    from math import erf

    r = lambda a: _C.ops.round_to_dtype(a.astype(np.float32), dtype)  # noqa: E731
    x, w, b = r(rng.standard_normal((m, 384))), r(rng.standard_normal((1536, 384)) / 20), r(rng.standard_normal(1536))
    pre = x.astype(np.float64) @ w.astype(np.float64).T + b
    ref = 0.5 * pre * (1 + np.vectorize(erf)(pre / np.sqrt(2)))
    got = _C.cuda_ops.linear(x, w, b, dtype, None, gemv_max_rows=gemv_rows, gelu=True)
    assert rel_err(got, ref) < TOL[dtype]


# --- decode-step fusions of gemv ------------------------------------------------------------------

def _ln64(x, g, b, eps=1e-5):
    x = x.astype(np.float64)
    mu = x.mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps) * g + b


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("m,n,k,mode", [(1, 3840, 1280, "bias"), (2, 1280, 1280, "bias"), (2, 5120, 1280, "gelu"),
                                        (1, 51866, 1280, "f32"), (2, 51866, 1280, "f32"), (3, 83, 1000, "bias"),
                                        (2, 77, 999, "gelu"), (8, 100, 1280, "bias"), (1, 9, 8, "none")])
def test_gemv_fused_layer_norm(dtype, m, n, k, mode):
    """Layer norm fused into the product: bit-identical to layer_norm() then the gemv kernel (same
    statistics order, same rounding), and close to float64 numpy. x has a large mean (two-pass
    statistics matter); odd k takes the scalar path."""
    r = lambda a: _C.ops.round_to_dtype(np.asarray(a, np.float32), dtype)  # noqa: E731
    x = r(rng.standard_normal((m, k)) * 3 + 20)
    g, b = r(1 + 0.5 * rng.standard_normal(k)), r(rng.standard_normal(k))
    w = r(rng.standard_normal((n, k)) / np.sqrt(k))
    bias = r(rng.standard_normal(n)) if mode in ("bias", "gelu") else None
    gelu, f32 = mode == "gelu", mode == "f32"
    got, y2 = _C.cuda_ops.gemv_fused(x, w, bias, dtype, f32_out=f32, gelu=gelu, ln_gamma=g, ln_beta=b)
    assert y2 is None
    h = _C.cuda_ops.layer_norm(x, g, b, 1e-5, dtype)
    unfused = _C.cuda_ops.linear(h, w, bias, dtype, None, gemv_max_rows=8, f32_out=f32, gelu=gelu)
    np.testing.assert_array_equal(got, unfused)
    ref = r(_ln64(x, g, b)).astype(np.float64) @ w.astype(np.float64).T + (bias if bias is not None else 0)
    if gelu:
        from math import erf
        ref = 0.5 * ref * (1 + np.vectorize(erf)(ref / np.sqrt(2)))
    assert rel_err(got, ref) < TOL[dtype]


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("m", [1, 2, 5])
def test_gemv_split_output_into_kv_cache(dtype, m):
    """Fused QKV product (with its layer norm): q columns to y, K | V columns straight into rows
    rows2[i] of a KV cache; untouched cache rows and y's K/V columns stay as they were."""
    r = lambda a: _C.ops.round_to_dtype(np.asarray(a, np.float32), dtype)  # noqa: E731
    d = 320
    x = r(rng.standard_normal((m, d)))
    g, b = r(1 + 0.1 * rng.standard_normal(d)), r(0.1 * rng.standard_normal(d))
    w, bias = r(rng.standard_normal((3 * d, d)) / np.sqrt(d)), r(rng.standard_normal(3 * d))
    cache = r(rng.standard_normal((11, 2 * d + 8)))  # ld2 > 2d
    rows = np.array([7, 2, 10, 0, 5][:m], np.int32)
    y, y2 = _C.cuda_ops.gemv_fused(x, w, bias, dtype, ln_gamma=g, ln_beta=b, split_col=d, y2_init=cache,
                                   rows2=rows, repeat=2)
    full = _C.cuda_ops.gemv_fused(x, w, bias, dtype, ln_gamma=g, ln_beta=b)[0]
    np.testing.assert_array_equal(y[:, :d], full[:, :d])
    assert np.isnan(y[:, d:]).all(), "K/V columns must not be written to y"
    want = cache.copy()
    want[rows, :2 * d] = full[:, d:]
    np.testing.assert_array_equal(y2, want)


def test_gemv_fusion_rejects_bad_arguments():
    import speechcore

    x, w = np.ones((8, 2000), np.float32), np.ones((4, 2000), np.float32)
    g = np.ones(2000, np.float32)
    with pytest.raises(speechcore.UnsupportedError):  # 8 x 2000 floats exceed the staged-x limit
        _C.cuda_ops.gemv_fused(x, w, None, "float32", ln_gamma=g, ln_beta=g)
    with pytest.raises(speechcore.InvalidArgumentError):  # split of a float32 output of a half model
        _C.cuda_ops.gemv_fused(x[:1], w, None, "bfloat16", f32_out=True, split_col=2,
                               y2_init=np.zeros((3, 2), np.float32), rows2=np.zeros(1, np.int32))
    with pytest.raises(speechcore.InvalidArgumentError):  # ld2 < n - split_col
        _C.cuda_ops.gemv_fused(x[:1], w, None, "float32", split_col=1, y2_init=np.zeros((3, 2), np.float32),
                               rows2=np.zeros(1, np.int32))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("n,k,mode", [(1280, 1280, "accumulate"), (5120, 1280, "ln_gelu"), (1280, 5120, "accumulate"),
                                      (3840, 1280, "ln"), (51866, 1280, "ln_f32"), (83, 1000, "bias"), (9, 8, "none")])
def test_gemv_row_prefetch_bit_identical(dtype, n, k, mode):
    """One-row products with each warp's weight rows copied whole into shared memory before the
    dependency wait (GemvFusion::row_prefetch): the same result as the register-prefetching
    kernel, bit for bit, with and without the fused layer norm, GELU, residual, float32 output
    (the logits' shape does not fit one wave: the plain kernel runs)."""
    r = lambda a: _C.ops.round_to_dtype(np.asarray(a, np.float32), dtype)  # noqa: E731
    x = r(rng.standard_normal((1, k)) * 3 + 2)
    w = r(rng.standard_normal((n, k)) / np.sqrt(k))
    bias = r(rng.standard_normal(n)) if mode not in ("none", "ln_f32") else None  # float32 outputs take no bias
    ln = mode.startswith("ln")
    g, b = (r(1 + 0.5 * rng.standard_normal(k)), r(rng.standard_normal(k))) if ln else (None, None)
    f32 = mode.endswith("f32")
    y0 = r(rng.standard_normal((1, n))) if mode == "accumulate" else None
    kw = dict(y_init=y0, f32_out=f32, gelu=mode.endswith("gelu"), ln_gamma=g, ln_beta=b)
    got, _ = _C.cuda_ops.gemv_fused(x, w, bias, dtype, row_prefetch=1, repeat=1, **kw)
    want, _ = _C.cuda_ops.gemv_fused(x, w, bias, dtype, row_prefetch=0, **kw)
    np.testing.assert_array_equal(got, want)
    assert np.isfinite(got).all()


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("n,k,mode", [(5120, 1280, "ln_gelu"), (1280, 5120, "accumulate"), (1536, 384, "ln_gelu"),
                                      (384, 1536, "accumulate")])
def test_gemv_residual_terms(dtype, n, k, mode):
    """GemvFusion::residual (one-row steps whose attention output products are folded into the
    attention kernels as int64 fixed point): fc1 reads its layer norm's x, fc2 the residual it
    adds to, as x + two terms (acc * 2^-32 + bias, rounded after each, as gemv()'s epilogue
    writes a residual): bit for bit the product over that residual computed here. fc2 zeroes the
    accumulators; fc1 leaves them. A non-finite partial's marker (2^58) reads as NaN."""
    r = lambda a: _C.ops.round_to_dtype(np.asarray(a, np.float32), dtype)  # noqa: E731
    ln = mode.startswith("ln")
    width = k if ln else n  # the residual's length
    base = r(rng.standard_normal((1, width)) * 3 + 1)
    accs = [np.round(rng.standard_normal(width) * s * 2 ** 32).astype(np.int64) for s in (2.0, 0.5)]
    biases = [r(0.1 * rng.standard_normal(width)) for _ in accs]
    mat = base
    for a, b in zip(accs, biases):
        mat = r((a.astype(np.float32) * np.float32(2.0 ** -32) + b) + mat)
    assert not np.array_equal(mat, base)
    w = r(rng.standard_normal((n, k)) / np.sqrt(k))
    bias = r(rng.standard_normal(n))
    if ln:
        g, be = r(1 + 0.5 * rng.standard_normal(k)), r(rng.standard_normal(k))
        kw = dict(gelu=True, ln_gamma=g, ln_beta=be)
        got, after = _C.cuda_ops.gemv_fused(base, w, bias, dtype, res_acc=accs, res_bias=biases, **kw)
        want, _ = _C.cuda_ops.gemv_fused(mat, w, bias, dtype, row_prefetch=1, **kw)
        for a, b in zip(after, accs):
            np.testing.assert_array_equal(a, b)
    else:
        x = r(rng.standard_normal((1, k)))
        got, after = _C.cuda_ops.gemv_fused(x, w, bias, dtype, y_init=base, res_acc=accs, res_bias=biases,
                                            res_zero=True)
        want, _ = _C.cuda_ops.gemv_fused(x, w, bias, dtype, y_init=mat, row_prefetch=1)
        assert all((a == 0).all() for a in after)
        accs[1][3] = 1 << 58  # a non-finite partial in column 3
        nan, _ = _C.cuda_ops.gemv_fused(x, w, bias, dtype, y_init=base, res_acc=accs, res_bias=biases)
        assert np.isnan(nan[0, 3]) and np.isfinite(np.delete(nan[0], 3)).all()
    np.testing.assert_array_equal(got, want)
    assert np.isfinite(got).all()


def test_gemv_residual_terms_rejects_what_it_does_not_cover():
    import speechcore

    x, w, acc = np.ones((1, 64), np.float32), np.ones((32, 64), np.float32), [np.zeros(64, np.int64)]
    with pytest.raises(speechcore.SpeechcoreError, match="residual terms"):  # neither layer norm nor accumulate
        _C.cuda_ops.gemv_fused(x, w, None, "bfloat16", res_acc=acc)
    with pytest.raises(speechcore.SpeechcoreError, match="residual terms"):  # two rows
        _C.cuda_ops.gemv_fused(np.ones((2, 64), np.float32), w, None, "bfloat16", y_init=np.ones((2, 32)),
                               res_acc=[np.zeros(32, np.int64)])
    with pytest.raises(speechcore.SpeechcoreError, match="residual terms"):  # float32: no prefetching kernel
        _C.cuda_ops.gemv_fused(x, w, None, "float32", y_init=np.ones((1, 32)), res_acc=[np.zeros(32, np.int64)])
