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
