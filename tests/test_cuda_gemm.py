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
