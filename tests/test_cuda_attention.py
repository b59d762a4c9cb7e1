"""CUDA attention kernels (_C.cuda_ops.attention_prefill / attention_decode) against the CPU twin
_C.ops.attention and a float64 numpy reference, in float32, float16 and bfloat16.

Inputs are rounded to the device dtype first, so references see exactly what the kernel sees.
Outputs come back whole after being poisoned (NaN): padding columns must stay NaN, every head's
column must be written. Rows of K/V past the visible keys and padding columns of the inputs are
NaN too, so a kernel that reads what it must not read produces NaN.
"""

import zlib

import numpy as np
import pytest

from speechcore import _C

pytestmark = pytest.mark.cuda

DTYPES = ["float32", "float16", "bfloat16"]
# relative error norm ||out - ref|| / ||ref||
TOL = {"float32": 1e-5, "float16": 1e-2, "bfloat16": 4e-2}


def rng_for(*key):
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def round_to(x, dtype):
    """float32 array -> float32 array holding the nearest dtype values (NaN stays NaN)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if dtype == "float32":
        return x
    if dtype == "float16":
        return x.astype(np.float16).astype(np.float32)
    u = x.view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000  # round to nearest even
    r = u.astype(np.uint32).view(np.float32)
    return np.where(np.isnan(x), np.float32(np.nan), r).astype(np.float32)


def ref64(q, k, v, heads, d, causal):
    """q [tq, heads*d], k/v [tk, heads*d] -> float64 [tq, heads*d] (ops.h semantics)."""
    tq, tk = q.shape[0], k.shape[0]
    out = np.empty((tq, heads * d))
    for h in range(heads):
        sl = slice(h * d, (h + 1) * d)
        s = q[:, sl].astype(np.float64) @ k[:, sl].astype(np.float64).T / np.sqrt(d)
        if causal >= 0:
            s = np.where(np.arange(tk)[None, :] > np.arange(tq)[:, None] + causal, -np.inf, s)
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        out[:, sl] = s @ v[:, sl].astype(np.float64)
    return out


def relerr(got, ref):
    return np.linalg.norm(got.astype(np.float64) - ref) / np.linalg.norm(ref)


def check(got, ref, tol, what):
    assert np.isfinite(got).all(), f"{what}: non-finite output (unwritten or read past the data)"
    err = relerr(got, ref)
    assert err <= tol, f"{what}: relative error {err:.3g} > {tol}"


def randn(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


# --- prefill -------------------------------------------------------------------------------------

def make_prefill(rng, batch, tq, tk, heads, d, layout, dtype, qk_scale=1.0):
    """Device-layout buffers + column offsets, and per-sequence contiguous (rounded) q, k, v."""
    hd = heads * d
    extra_rows = 0
    out_ld = hd
    if layout == "fused":  # self-attention on a fused QKV projection [t, 3d]
        assert tq == tk
        qkv = randn(rng, batch, tq, 3 * hd)
        qkv[..., :2 * hd] *= qk_scale
        qb = kb = vb = round_to(qkv, dtype)
        cols = (0, hd, 2 * hd)
    elif layout == "crosskv":  # cross-attention on a fused KV projection [tk, 2d]
        qb = round_to(randn(rng, batch, tq, hd) * qk_scale, dtype)
        kv = randn(rng, batch, tk, 2 * hd)
        kv[..., :hd] *= qk_scale
        kb = vb = round_to(kv, dtype)
        cols = (0, 0, hd)
    elif layout == "shared_kv":  # one K/V for all sequences (batch stride 0), e.g. beams
        qb = round_to(randn(rng, batch, tq, hd) * qk_scale, dtype)
        kb = round_to(randn(rng, 1, tk, hd) * qk_scale, dtype)
        vb = round_to(randn(rng, 1, tk, hd), dtype)
        cols = (0, 0, 0)
    elif layout == "padded":  # column offset 8, row padding, NaN in padding and in rows past tk
        ld = hd + 16
        extra_rows = 5
        qb = np.full((batch, tq, ld), np.nan, np.float32)
        kb = np.full((batch, tk + extra_rows, ld), np.nan, np.float32)
        vb = np.full((batch, tk + extra_rows, ld), np.nan, np.float32)
        qb[..., 8:8 + hd] = randn(rng, batch, tq, hd) * qk_scale
        kb[:, :tk, 8:8 + hd] = randn(rng, batch, tk, hd) * qk_scale
        vb[:, :tk, 8:8 + hd] = randn(rng, batch, tk, hd)
        qb, kb, vb = round_to(qb, dtype), round_to(kb, dtype), round_to(vb, dtype)
        cols = (8, 8, 8)
        out_ld = hd + 8
    else:
        assert layout == "plain"
        qb = round_to(randn(rng, batch, tq, hd) * qk_scale, dtype)
        kb = round_to(randn(rng, batch, tk, hd) * qk_scale, dtype)
        vb = round_to(randn(rng, batch, tk, hd), dtype)
        cols = (0, 0, 0)
    seqs = []
    for b in range(batch):
        kb_b, vb_b = kb[min(b, kb.shape[0] - 1)], vb[min(b, vb.shape[0] - 1)]
        seqs.append((np.ascontiguousarray(qb[b, :, cols[0]:cols[0] + hd]),
                     np.ascontiguousarray(kb_b[:tk, cols[1]:cols[1] + hd]),
                     np.ascontiguousarray(vb_b[:tk, cols[2]:cols[2] + hd])))
    return (qb, kb, vb, cols, out_ld, tk if extra_rows else None), seqs


def run_prefill(bufs, heads, d, causal, dtype):
    qb, kb, vb, cols, out_ld, tk = bufs
    return _C.cuda_ops.attention_prefill(qb, kb, vb, heads, d, causal, dtype, cols[0], cols[1], cols[2],
                                         out_ld, tk)


def check_prefill(out, seqs, heads, d, causal, dtype, tol=None, twin=True):
    hd = heads * d
    tol = TOL[dtype] if tol is None else tol
    assert np.isnan(out[..., hd:]).all(), "wrote outside the heads' columns"
    for b, (q, k, v) in enumerate(seqs):
        got = out[b, :, :hd]
        check(got, ref64(q, k, v, heads, d, causal), tol, f"seq {b} vs float64")
        if twin:
            check(got, _C.ops.attention(q, k, v, heads, causal).astype(np.float64), tol, f"seq {b} vs CPU twin")


PREFILL_CASES = [
    # batch, tq, tk, heads, head_dim, causal_offset, layout
    (1, 1, 1, 1, 64, -1, "plain"),
    (3, 7, 7, 6, 64, 0, "fused"),            # decoder prompts, batched
    (1, 83, 83, 6, 64, 5, "fused"),
    (3, 83, 88, 6, 64, 5, "padded"),         # prompt after 5 cached positions
    (1, 7, 12, 6, 64, 11, "plain"),          # offset that masks nothing
    (1, 1500, 1500, 6, 64, -1, "fused"),     # encoder self-attention (tiny/base)
    (1, 1500, 1500, 20, 64, -1, "fused"),    # large-v3, one window: two m-tiles a warp (few blocks)
    (2, 1500, 1500, 20, 64, -1, "plain"),    # two windows: one m-tile a warp (many blocks)
    (1, 1501, 1501, 1, 64, 0, "plain"),      # long causal, tails on both axes
    (3, 7, 1500, 20, 64, -1, "crosskv"),     # cross-attention of prompts
    (3, 83, 1501, 6, 64, -1, "shared_kv"),
    (1, 1, 1500, 20, 64, 0, "plain"),        # only the first key visible
    (3, 224, 224, 20, 64, 0, "fused"),
    (1, 83, 1501, 2, 128, 0, "padded"),      # head_dim 128
    (3, 83, 83, 1, 128, -1, "fused"),
    (3, 1, 7, 1, 128, -1, "crosskv"),
    # Unmasked, head_dim 64, >= 128 queries: the warpgroup (wgmma) kernel on Hopper in half
    # precision (prefill_wgmma_kernel; tails of both axes, keys under one tile, strided layouts).
    (2, 200, 1501, 3, 64, -1, "crosskv"),
    (1, 129, 7, 2, 64, -1, "plain"),
    (3, 256, 300, 6, 64, -1, "padded"),
    (2, 128, 128, 4, 64, -1, "shared_kv"),
    (1, 384, 1500, 20, 64, -1, "plain"),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch,tq,tk,heads,d,causal,layout", PREFILL_CASES)
def test_prefill(batch, tq, tk, heads, d, causal, layout, dtype):
    rng = rng_for("prefill", batch, tq, tk, heads, d, causal, layout, dtype)
    bufs, seqs = make_prefill(rng, batch, tq, tk, heads, d, layout, dtype)
    out = run_prefill(bufs, heads, d, causal, dtype)
    assert out.shape == (batch, tq, bufs[4])
    check_prefill(out, seqs, heads, d, causal, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_prefill_first_key_only(dtype):
    # causal offset 0: query 0 sees key 0 only, so its output is exactly v[0] (any dtype).
    rng = rng_for("first", dtype)
    bufs, seqs = make_prefill(rng, 3, 83, 1501, 6, 64, "plain", dtype)
    out = run_prefill(bufs, 6, 64, 0, dtype)
    for b, (q, k, v) in enumerate(seqs):
        np.testing.assert_array_equal(out[b, 0], v[0])
    check_prefill(out, seqs, 6, 64, 0, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch,tq,tk,heads,causal,layout", [
    (3, 83, 1501, 6, -1, "crosskv"), (1, 130, 130, 2, 0, "fused"), (1, 1500, 1500, 1, -1, "plain")])
def test_prefill_large_logits(batch, tq, tk, heads, causal, layout, dtype):
    # q, k x 30: logits of magnitude ~1e3, the running max changes across key tiles and most
    # exponentials underflow; the online-softmax rescaling must stay exact.
    # float32 tolerance 1e-4: with logits ~1e3 the float32 rounding of the dot products alone
    # (~1e-4 absolute) moves softmax weights by ~1e-4 relative, in the CPU twin as much as here.
    rng = rng_for("large", batch, tq, tk, heads, causal, layout, dtype)
    bufs, seqs = make_prefill(rng, batch, tq, tk, heads, 64, layout, dtype, qk_scale=30.0)
    out = run_prefill(bufs, heads, 64, causal, dtype)
    check_prefill(out, seqs, heads, 64, causal, dtype, tol=max(TOL[dtype], 1e-4))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tq", [7, 130])
def test_prefill_rising_logits(dtype, tq):
    # Logits grow with the key index, so every key tile raises the running maximum (rescaling on
    # every tile); the growth is small per key so many keys keep weight. 130 queries: the wgmma
    # kernel in half precision.
    tk, heads, d = 1501, 2, 64
    hd = heads * d
    rng = rng_for("rising", dtype)
    q = round_to(np.ones((1, tq, hd), np.float32) + 0.1 * randn(rng, 1, tq, hd), dtype)
    ramp = (np.arange(tk, dtype=np.float32) / tk * 40.0)[:, None]
    k = round_to((ramp * np.ones((1, hd), np.float32) / 8.0)[None] + 0.1 * randn(rng, 1, tk, hd), dtype)
    v = round_to(randn(rng, 1, tk, hd), dtype)
    out = _C.cuda_ops.attention_prefill(q, k, v, heads, d, -1, dtype)
    check_prefill(out, [(q[0], k[0], v[0])], heads, d, -1, dtype, tol=max(TOL[dtype], 1e-4))


def test_prefill_rejects_bad_arguments():
    import speechcore

    q = np.zeros((1, 4, 128), np.float32)
    with pytest.raises(speechcore.UnsupportedError):
        _C.cuda_ops.attention_prefill(q, q, q, 4, 32)  # head_dim 32 is not instantiated
    with pytest.raises(speechcore.InvalidArgumentError):  # misaligned column offset for bf16
        _C.cuda_ops.attention_prefill(np.zeros((1, 4, 72), np.float32), q, q, 1, 64, -1, "bfloat16", 4)
    with pytest.raises(speechcore.InvalidArgumentError):  # row stride not a multiple of 8 halves
        _C.cuda_ops.attention_prefill(np.zeros((1, 4, 66), np.float32), q, q, 1, 64, -1, "float16")
    with pytest.raises(speechcore.InvalidArgumentError):  # no keys
        _C.cuda_ops.attention_prefill(q, q, q, 2, 64, -1, "float32", tk=0)
    with pytest.raises(speechcore.InvalidArgumentError):
        _C.cuda_ops.attention_prefill(q, q, q, 2, 64, -2)


# --- decode --------------------------------------------------------------------------------------

def make_decode(rng, batch, lengths, max_len, heads, d, layout, dtype, qk_scale=1.0):
    hd = heads * d
    # q: one row of a fused QKV projection per sequence [batch, 3d]
    qb = randn(rng, batch, 3 * hd)
    qb[:, :hd] *= qk_scale
    qb = round_to(qb, dtype)
    if layout == "self":  # fused KV cache [batch, max_len, 2d]; rows past the length are NaN
        kv = randn(rng, batch, max_len, 2 * hd)
        kv[..., :hd] *= qk_scale
        for b, n in enumerate(lengths):
            kv[b, n:] = np.nan
        kb = vb = round_to(kv, dtype)
        cols = (0, 0, hd)
    elif layout == "cross":
        kb = round_to(randn(rng, batch, max_len, hd) * qk_scale, dtype)
        vb = round_to(randn(rng, batch, max_len, hd), dtype)
        cols = (0, 0, 0)
    else:
        assert layout == "cross_shared"  # one fused cross KV [1, max_len, 2d] for all beams
        kv = randn(rng, 1, max_len, 2 * hd)
        kv[..., :hd] *= qk_scale
        kb = vb = round_to(kv, dtype)
        cols = (0, 0, hd)
    seqs = []
    for b, n in enumerate(lengths):
        kb_b, vb_b = kb[min(b, kb.shape[0] - 1)], vb[min(b, vb.shape[0] - 1)]
        seqs.append((np.ascontiguousarray(qb[b:b + 1, :hd]), np.ascontiguousarray(kb_b[:n, cols[1]:cols[1] + hd]),
                     np.ascontiguousarray(vb_b[:n, cols[2]:cols[2] + hd])))
    return (qb, kb, vb, cols), seqs


def run_decode(bufs, lengths, heads, d, dtype, out_ld):
    qb, kb, vb, cols = bufs
    return _C.cuda_ops.attention_decode(qb, kb, vb, np.asarray(lengths, np.int32), heads, d, dtype, cols[0],
                                        cols[1], cols[2], out_ld)


def check_decode(out, seqs, heads, d, dtype, tol=None):
    hd = heads * d
    tol = TOL[dtype] if tol is None else tol
    assert np.isnan(out[:, hd:]).all(), "wrote outside the heads' columns"
    for b, (q, k, v) in enumerate(seqs):
        got = out[b:b + 1, :hd]
        check(got, ref64(q, k, v, heads, d, -1), tol, f"seq {b} (keys {k.shape[0]}) vs float64")
        check(got, _C.ops.attention(q, k, v, heads, -1).astype(np.float64), tol, f"seq {b} vs CPU twin")


DECODE_CASES = [
    # batch, lengths, max_len, heads, head_dim, layout
    (1, [1], 1, 1, 64, "self"),
    (3, [1, 17, 448], 448, 6, 64, "self"),         # ragged self-attention KV cache
    (3, [448, 1, 17], 448, 20, 64, "self"),
    (8, [1, 5, 17, 33, 64, 65, 99, 100], 100, 6, 64, "self"),  # no split (batch * heads large enough)
    (1, [1500], 1500, 6, 64, "cross"),             # split-K across many blocks
    (3, [1500, 1500, 1500], 1500, 20, 64, "cross_shared"),
    (16, [1500] * 16, 1500, 20, 64, "cross"),      # large-v3 beams: few splits
    (3, [1, 17, 448], 448, 2, 128, "self"),        # head_dim 128
    (1, [1500], 1500, 1, 128, "cross"),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch,lengths,max_len,heads,d,layout", DECODE_CASES)
def test_decode(batch, lengths, max_len, heads, d, layout, dtype):
    rng = rng_for("decode", batch, tuple(lengths), max_len, heads, d, layout, dtype)
    bufs, seqs = make_decode(rng, batch, lengths, max_len, heads, d, layout, dtype)
    out = run_decode(bufs, lengths, heads, d, dtype, heads * d + 8)
    assert out.shape == (batch, heads * d + 8)
    check_decode(out, seqs, heads, d, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_decode_split_merge_repeats(dtype):
    # Split-K merged by the last block of each (sequence, head): the merge counters must be back
    # at 0 after every call, so repeated calls on one scratch (as CUDA-graph replays) stay right.
    rng = rng_for("decode-repeat", dtype)
    lengths = [1500, 700, 1]
    bufs, seqs = make_decode(rng, 3, lengths, 1500, 20, 64, "cross", dtype)
    assert _C.cuda_ops.attention_decode_split(3, 20, 1500)[0] > 1
    once = run_decode(bufs, lengths, 20, 64, dtype, None)
    qb, kb, vb, cols = bufs
    again = _C.cuda_ops.attention_decode(qb, kb, vb, np.asarray(lengths, np.int32), 20, 64, dtype, cols[0],
                                         cols[1], cols[2], repeat=4)
    np.testing.assert_array_equal(again, once)
    check_decode(again, seqs, 20, 64, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch,lengths,max_len,heads,d,layout", [
    (1, [1500], 1500, 20, 64, "cross"),              # batch 1, split-K: large-v3's cross-attention
    (3, [1500, 700, 1], 1500, 20, 64, "cross"),      # ragged: prefetched keys past a length dropped
    (3, [1500, 1500, 1500], 1500, 20, 64, "cross_shared"),  # beams sharing one slot (kv_index 0)
    (8, [1, 5, 17, 33, 64, 65, 99, 100], 100, 6, 64, "self"),  # no split, lengths in one unroll
    (1, [1500], 1500, 1, 128, "cross"),
])
def test_decode_static_kv_prefetch(batch, lengths, max_len, heads, d, layout, dtype):
    """kv_static (cross-attention K/V: the first key groups loaded before the programmatic-launch
    wait, bounded by max_kv_len, zeroed past the length after it): bit-identical to the plain
    path, and right against float64."""
    rng = rng_for("decode-static", batch, tuple(lengths), max_len, heads, d, layout, dtype)
    bufs, seqs = make_decode(rng, batch, lengths, max_len, heads, d, layout, dtype)
    qb, kb, vb, cols = bufs
    lens = np.asarray(lengths, np.int32)
    index = np.zeros(batch, np.int32) if layout == "cross_shared" else None
    plain = _C.cuda_ops.attention_decode(qb, kb, vb, lens, heads, d, dtype, cols[0], cols[1], cols[2],
                                         kv_index=index)
    static = _C.cuda_ops.attention_decode(qb, kb, vb, lens, heads, d, dtype, cols[0], cols[1], cols[2],
                                          kv_index=index, kv_static=True, repeat=3)
    np.testing.assert_array_equal(static, plain)
    check_decode(static, seqs, heads, d, dtype)


def test_decode_split_policy():
    # The cases above cover both paths: one block per (sequence, head), and split-K.
    assert _C.cuda_ops.attention_decode_split(8, 6, 100)[0] == 1
    assert _C.cuda_ops.attention_decode_scratch_bytes(8, 6, 64, 100) == 0
    for batch, heads, n in [(1, 6, 1500), (3, 20, 1500), (16, 20, 1500), (3, 6, 448), (1, 1, 1500)]:
        splits, chunk = _C.cuda_ops.attention_decode_split(batch, heads, n)
        assert splits > 1, (batch, heads, n)
        assert (splits - 1) * chunk < n <= splits * chunk  # no empty split, all keys covered
        # fixed merge-counter region (4 bytes x 528 = 4 x 132 target blocks), then the partials
        assert _C.cuda_ops.attention_decode_scratch_bytes(batch, heads, 64, n) == 4 * 528 + 4 * batch * heads * splits * 66


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch,lengths,max_len,heads,layout", [
    (1, [1500], 1500, 6, "cross"), (3, [1, 17, 448], 448, 6, "self")])
def test_decode_large_logits(batch, lengths, max_len, heads, layout, dtype):
    # See test_prefill_large_logits (float32 tolerance 1e-4 for the same reason).
    rng = rng_for("decode-large", batch, tuple(lengths), heads, layout, dtype)
    bufs, seqs = make_decode(rng, batch, lengths, max_len, heads, 64, layout, dtype, qk_scale=30.0)
    out = run_decode(bufs, lengths, heads, 64, dtype, None)
    check_decode(out, seqs, heads, 64, dtype, tol=max(TOL[dtype], 1e-4))


@pytest.mark.parametrize("dtype", DTYPES)
def test_decode_first_key_only_and_empty(dtype):
    # length 1: the output is v[0] exactly; length 0 (clamped): zeros; lengths past max clamp.
    rng = rng_for("decode-edge", dtype)
    heads, d, max_len = 6, 64, 1500
    bufs, seqs = make_decode(rng, 3, [1, 0, 1500], max_len, heads, d, "cross", dtype)
    out = run_decode(bufs, [1, 0, 99999], heads, d, dtype, None)
    np.testing.assert_array_equal(out[0], seqs[0][2][0])
    np.testing.assert_array_equal(out[1], np.zeros(heads * d, np.float32))
    check_decode(out[2:], seqs[2:], heads, d, dtype)


def test_decode_rejects_bad_arguments():
    import speechcore

    q = np.zeros((2, 128), np.float32)
    kv = np.zeros((2, 5, 128), np.float32)
    lens = np.array([5, 5], np.int32)
    with pytest.raises(speechcore.UnsupportedError):
        _C.cuda_ops.attention_decode(q, kv, kv, lens, 1, 96)
    with pytest.raises(speechcore.InvalidArgumentError):
        _C.cuda_ops.attention_decode(q, kv, kv, lens, 1, 64, "float16", 4)


# --- paged decode ----------------------------------------------------------------------------------

def make_paged(rng, lengths, max_len, block_size, heads, d, dtype, qk_scale=1.0, spare_blocks=3):
    """A fused K|V pool [1, blocks * block_size, 2hd] and a shuffled block table: sequence b's
    blocks are scattered over the pool in random order; unused pool rows, the rows of a partial
    last block past the length and the blocks that table entries past the length point at are NaN
    (a kernel that reads them produces NaN)."""
    hd = heads * d
    batch = len(lengths)
    per_seq = -(-max_len // block_size)
    n_blocks = batch * per_seq + spare_blocks
    pool = np.full((n_blocks * block_size, 2 * hd), np.nan, np.float32)
    perm = rng.permutation(n_blocks)
    table = np.empty((batch, per_seq + 2), np.int32)  # stride larger than needed
    poison = perm[-1]  # never holds data: entries past each length point here
    table[:] = poison
    used = 0
    rows = []
    for b, n in enumerate(lengths):
        nb = -(-n // block_size)
        ids = perm[used:used + nb]
        used += nb
        table[b, :nb] = ids
        r = np.array([ids[j // block_size] * block_size + j % block_size for j in range(n)], np.int64)
        kv = randn(rng, n, 2 * hd)
        kv[:, :hd] *= qk_scale
        pool[r] = kv
        rows.append(r)
    assert used <= n_blocks - 1
    pool = round_to(pool, dtype)
    q = randn(rng, batch, 3 * hd)
    q[:, :hd] *= qk_scale
    q = round_to(q, dtype)
    seqs = [(np.ascontiguousarray(q[b:b + 1, :hd]), pool[r, :hd], pool[r, hd:]) for b, r in enumerate(rows)]
    return q, pool[None], table, seqs


PAGED_CASES = [
    # lengths, max_len, block_size, heads
    ([0, 1, 17, 448], 448, 16, 20),        # split-K; empty and one-key sequences
    ([5, 1, 33, 40], 40, 1, 6),            # block size 1, no split (max_len <= 128)
    ([100, 1500, 1, 999], 1500, 7, 6),     # odd block size, long, split
    ([16, 32, 15, 17, 64, 1], 64, 16, 20), # exact block multiples and one past
    ([1500], 1500, 16, 20),                # large-v3 cross-attention shape, batch 1
    ([3, 130], 448, 128, 2),               # blocks larger than most lengths
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("lengths,max_len,block_size,heads", PAGED_CASES)
def test_decode_paged(lengths, max_len, block_size, heads, dtype):
    d = 64
    hd = heads * d
    rng = rng_for("paged", tuple(lengths), max_len, block_size, heads, dtype)
    q, pool, table, seqs = make_paged(rng, lengths, max_len, block_size, heads, d, dtype)
    out = _C.cuda_ops.attention_decode(q, pool, pool, np.asarray(lengths, np.int32), heads, d, dtype, 0, 0, hd,
                                       hd + 8, block_table=table, block_size=block_size, max_kv_len=max_len)
    assert np.isnan(out[:, hd:]).all(), "wrote outside the heads' columns"
    for b, (n, (qs, ks, vs)) in enumerate(zip(lengths, seqs)):
        got = out[b:b + 1, :hd]
        if n == 0:
            np.testing.assert_array_equal(got, 0.0)
        elif n == 1:
            np.testing.assert_array_equal(got[0], vs[0])  # one key: exactly its value row
        else:
            check(got, ref64(qs, ks, vs, heads, d, -1), TOL[dtype], f"seq {b} ({n} keys, paged)")


@pytest.mark.parametrize("dtype", DTYPES)
def test_decode_paged_equals_contiguous(dtype):
    # The same K/V reached through a block table and contiguously: bit-identical outputs (same
    # keys in the same order, same split policy).
    heads, d, max_len, bs = 20, 64, 448, 16
    hd = heads * d
    lengths = [448, 37, 200]
    rng = rng_for("paged-eq", dtype)
    q, pool, table, seqs = make_paged(rng, lengths, max_len, bs, heads, d, dtype)
    paged = _C.cuda_ops.attention_decode(q, pool, pool, np.asarray(lengths, np.int32), heads, d, dtype, 0, 0, hd,
                                         block_table=table, block_size=bs, max_kv_len=max_len)
    kv = np.full((len(lengths), max_len, 2 * hd), np.nan, np.float32)
    for b, (qs, ks, vs) in enumerate(seqs):
        kv[b, :ks.shape[0], :hd] = ks
        kv[b, :ks.shape[0], hd:] = vs
    flat = _C.cuda_ops.attention_decode(q, kv, kv, np.asarray(lengths, np.int32), heads, d, dtype, 0, 0, hd)
    np.testing.assert_array_equal(paged, flat)


def test_decode_paged_rejects_bad_arguments():
    import speechcore

    q = np.zeros((2, 128), np.float32)
    pool = np.zeros((1, 64, 128), np.float32)
    lens = np.array([5, 5], np.int32)
    table = np.zeros((2, 4), np.int32)
    with pytest.raises(speechcore.InvalidArgumentError):  # block size 0
        _C.cuda_ops.attention_decode(q, pool, pool, lens, 1, 64, block_table=table, block_size=0, max_kv_len=64)
    with pytest.raises(speechcore.InvalidArgumentError):  # 4 entries of 8 rows < 64 keys
        _C.cuda_ops.attention_decode(q, pool, pool, lens, 1, 64, block_table=table, block_size=8, max_kv_len=64)
    out = _C.cuda_ops.attention_decode(q, pool, pool, lens, 1, 64, block_table=table, block_size=16, max_kv_len=64)
    assert np.isfinite(out).all()


# --- speed ---------------------------------------------------------------------------------------

def test_prefill_speed_large_v3_encoder():
    # large-v3 encoder self-attention: batch 16, 20 heads, 1500 x 1500, head_dim 64, bf16.
    ms = _C.cuda_ops.attention_prefill_benchmark(16, 1500, 20, 64, -1, "bfloat16", 10)
    print(f"attention_prefill large-v3 encoder bf16: {ms:.3f} ms")
    assert ms < 10.0


@pytest.mark.parametrize("dtype", DTYPES)
def test_decode_kv_index(dtype):
    """Rows reach their K/V through a slot map (finished sequences dropped, beams sharing K/V)."""
    rng = rng_for("decode_kv_index", dtype)
    heads, d, max_len, n_kv = 4, 64, 300, 5
    hd = heads * d
    kb = round_to(randn(rng, n_kv, max_len, hd), dtype)
    vb = round_to(randn(rng, n_kv, max_len, hd), dtype)
    index = np.array([3, 0, 3, 4, 1, 1], np.int32)  # repeats, skips sequence 2, any order
    lengths = [5, 300, 17, 1, 128, 64]
    qb = round_to(randn(rng, len(index), hd), dtype)
    out = _C.cuda_ops.attention_decode(qb, kb, vb, np.asarray(lengths, np.int32), heads, d, dtype,
                                       kv_index=index)
    for b, (i, n) in enumerate(zip(index, lengths)):
        check(out[b:b + 1, :hd], ref64(qb[b:b + 1], kb[i, :n], vb[i, :n], heads, d, -1), TOL[dtype],
              f"row {b} -> kv {i} ({n} keys)")


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("d,heads,max_len,lengths,slots", [
    (1280, 20, 1500, [1500], [0]),                   # large-v3's one-row step
    (1280, 20, 1500, [1500, 700, 1], [2, 0, 2]),     # ragged lengths, slots shared and out of order
    (512, 8, 1500, [1500], [0]),                     # base
    (384, 6, 1500, [1500, 1499], [0, 1]),            # tiny: 6 heads, 48 packs a row
    (1280, 20, 100, [100, 37], [1, 0]),              # few keys: most splits empty
])
def test_cross_query_attention_matches_the_two_kernels(d, heads, max_len, lengths, slots, dtype):
    """The one-kernel cross-attention of a one-row step (the query product with its layer norm,
    then the attention; a cluster of 8 blocks per row and head, splits merged through distributed
    shared memory) against the two kernels it replaces on the same inputs: gemv_fused (the same
    query, computed in the same order) then attention_decode with static K/V. The merge order of
    the key splits differs, so the outputs agree within a rounding of the output type; and both
    against float64 attention over the kernels' query. Keys past a row's length are NaN."""
    assert _C.cuda_ops.cross_query_attention_supported(dtype, d, heads, max_len)
    rng = rng_for("cross-query", d, heads, max_len, tuple(lengths), tuple(slots), dtype)
    rows = len(lengths)
    x = round_to(rng.standard_normal((rows, d)) * 3 + 5, dtype)
    g = round_to(1 + 0.3 * rng.standard_normal(d), dtype)
    b = round_to(0.3 * rng.standard_normal(d), dtype)
    wq = round_to(rng.standard_normal((d, d)) / np.sqrt(d) * 3, dtype)
    bq = round_to(0.1 * rng.standard_normal(d), dtype)
    kv = round_to(rng.standard_normal((max(slots) + 1, max_len, 2 * d)), dtype)
    lens, index = np.asarray(lengths, np.int32), np.asarray(slots, np.int32)
    for s in range(kv.shape[0]):  # rows past every length of the slot: NaN (must not be read)
        used = max([n for n, sl in zip(lengths, slots) if sl == s], default=0)
        kv[s, used:] = np.nan
    got = _C.cuda_ops.cross_query_attention(x, g, b, wq, bq, kv, lens, index, heads, dtype, repeat=2)
    q, _ = _C.cuda_ops.gemv_fused(x, wq, bq, dtype, ln_gamma=g, ln_beta=b)
    two = _C.cuda_ops.attention_decode(q, kv, kv, lens, heads, 64, dtype, 0, 0, d, kv_index=index,
                                       kv_static=True)
    assert np.isfinite(got).all()
    ulp = {"float16": 2.0 ** -10, "bfloat16": 2.0 ** -7}[dtype]
    np.testing.assert_allclose(got, two, rtol=2 * ulp, atol=2 * ulp * np.abs(two).max())
    for r in range(rows):
        k = kv[slots[r], :lengths[r], :d]
        v = kv[slots[r], :lengths[r], d:]
        check(got[r:r + 1], ref64(q[r:r + 1], k, v, heads, 64, -1), TOL[dtype], f"row {r} vs float64")


def test_cross_query_attention_rejects_what_it_does_not_cover():
    assert not _C.cuda_ops.cross_query_attention_supported("float32", 1280, 20, 1500)
    assert not _C.cuda_ops.cross_query_attention_supported("bfloat16", 1280, 20, 1537)  # > 8 x 192 keys
    assert not _C.cuda_ops.cross_query_attention_supported("bfloat16", 1344, 21, 1500)  # d_model > 1280
    assert not _C.cuda_ops.cross_query_attention_supported("bfloat16", 1280, 16, 1500)  # heads * 64 != d
    z = np.zeros((1, 1280), np.float32)
    with pytest.raises(Exception, match="cross_query_attention"):
        _C.cuda_ops.cross_query_attention(z, z[0], z[0], np.zeros((1280, 1280), np.float32), None,
                                          np.zeros((1, 1600, 2560), np.float32), np.ones(1, np.int32),
                                          np.zeros(1, np.int32), 20, "bfloat16")


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("d,heads,ctx,lengths,paged", [
    (1280, 20, 448, [104], False),                 # large-v3's one-row step, contiguous cache
    (1280, 20, 448, [448, 1, 9], False),           # a full context, the first key alone, a short one
    (1280, 20, 448, [37, 200], True),              # paged cache (the engine's)
    (384, 6, 448, [5, 64, 65], True),              # tiny: 6 heads, 48 packs a row
])
def test_self_qkv_attention_matches_the_two_kernels(d, heads, ctx, lengths, paged, dtype):
    """The one-kernel self-attention of a one-row step (layer norm + QKV product, the new key and
    value into the cache row, attention over the cache with the new key; a cluster of 8 blocks per
    row and head) against the two kernels it replaces: gemv_fused with the split output (the
    cache after must be identical, bit for bit) then attention_decode (within a rounding of the
    output type: the key splits merge in another order); both against float64 over the kernels'
    query. Cache rows no row may read are NaN."""
    assert _C.cuda_ops.self_qkv_attention_supported(dtype, d, heads, ctx)
    rng = rng_for("self-qkv", d, heads, ctx, tuple(lengths), paged, dtype)
    rows, bs = len(lengths), 16
    x = round_to(rng.standard_normal((rows, d)) * 3 + 5, dtype)
    g = round_to(1 + 0.3 * rng.standard_normal(d), dtype)
    b = round_to(0.3 * rng.standard_normal(d), dtype)
    w = round_to(rng.standard_normal((3 * d, d)) / np.sqrt(d) * 3, dtype)
    bias = round_to(0.1 * rng.standard_normal(3 * d), dtype)
    lens = np.asarray(lengths, np.int32)
    per = ctx // bs  # blocks a sequence
    if paged:  # each row's blocks scattered over a pool with spare blocks
        pool_blocks = rows * per + 3
        order = rng.permutation(pool_blocks).astype(np.int32)
        table = order[:rows * per].reshape(rows, per)
        cache = np.full((pool_blocks * bs, 2 * d), np.nan, np.float32)
        row_of = lambda r, j: table[r, j // bs] * bs + j % bs  # noqa: E731
        index = None
    else:
        table = None
        index = np.asarray(rng.permutation(rows), np.int32)  # slots out of order
        cache = np.full((rows * ctx, 2 * d), np.nan, np.float32)
        row_of = lambda r, j: index[r] * ctx + j  # noqa: E731
    for r, n in enumerate(lengths):  # earlier keys of each row; the new one (n - 1) is written
        for j in range(n - 1):
            cache[row_of(r, j)] = round_to(rng.standard_normal(2 * d), dtype)
    kv_rows = np.asarray([row_of(r, n - 1) for r, n in enumerate(lengths)], np.int32)
    got, got_cache = _C.cuda_ops.self_qkv_attention(x, g, b, w, bias, cache, kv_rows, lens, index, heads, dtype,
                                                    max_kv_len=ctx, block_table=table, block_size=bs, repeat=2)
    y, want_cache = _C.cuda_ops.gemv_fused(x, w, bias, dtype, ln_gamma=g, ln_beta=b, split_col=d, y2_init=cache,
                                           rows2=kv_rows)
    np.testing.assert_array_equal(got_cache, want_cache)  # NaN rows stay NaN in both
    q = y[:, :d]
    if paged:
        two = _C.cuda_ops.attention_decode(q, want_cache[None], want_cache[None], lens, heads, 64, dtype, 0, 0, d,
                                           block_table=table, block_size=bs, max_kv_len=ctx)
    else:
        kv3 = want_cache.reshape(rows, ctx, 2 * d)
        two = _C.cuda_ops.attention_decode(q, kv3, kv3, lens, heads, 64, dtype, 0, 0, d, kv_index=index)
    assert np.isfinite(got).all()
    ulp = {"float16": 2.0 ** -10, "bfloat16": 2.0 ** -7}[dtype]
    np.testing.assert_allclose(got, two, rtol=2 * ulp, atol=2 * ulp * np.abs(two).max())
    for r, n in enumerate(lengths):
        kv = np.stack([want_cache[row_of(r, j)] for j in range(n)])
        check(got[r:r + 1], ref64(q[r:r + 1], kv[:, :d], kv[:, d:], heads, 64, -1), TOL[dtype], f"row {r} vs float64")


FIXED = 2.0 ** -32  # cuda::kResidualFracBits: the folded output products' fixed point


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("d,heads,length", [(1280, 20, 104), (384, 6, 9)])
def test_self_qkv_attention_output_fold(d, heads, length, dtype):
    """OutputFold: the self-attention's output product inside its kernel. Its int64 accumulators
    hold att w_out^T as fixed point, att being the kernel's own heads' outputs without the fold
    (rounded to the type), within float32 rounding of each head's 64-term sums; the KV cache is
    the same; repeated calls give the same integers (integer atomic adds do not depend on their
    order)."""
    rng = rng_for("self-fold", d, heads, length, dtype)
    ctx = 448
    x = round_to(rng.standard_normal((1, d)) * 3 + 5, dtype)
    g = round_to(1 + 0.3 * rng.standard_normal(d), dtype)
    b = round_to(0.3 * rng.standard_normal(d), dtype)
    w = round_to(rng.standard_normal((3 * d, d)) / np.sqrt(d) * 3, dtype)
    bias = round_to(0.1 * rng.standard_normal(3 * d), dtype)
    wo = round_to(rng.standard_normal((d, d)) / np.sqrt(d), dtype)
    cache = np.full((ctx, 2 * d), np.nan, np.float32)
    cache[:length - 1] = round_to(rng.standard_normal((length - 1, 2 * d)), dtype)
    args = (x, g, b, w, bias, cache, np.array([length - 1], np.int32), np.array([length], np.int32),
            np.zeros(1, np.int32), heads, dtype)
    att, want_cache = _C.cuda_ops.self_qkv_attention(*args, max_kv_len=ctx)
    acc, got_cache = _C.cuda_ops.self_qkv_attention(*args, max_kv_len=ctx, w_out=wo, repeat=2)
    again, _ = _C.cuda_ops.self_qkv_attention(*args, max_kv_len=ctx, w_out=wo)
    assert acc.dtype == np.int64
    np.testing.assert_array_equal(acc, again)
    np.testing.assert_array_equal(got_cache, want_cache)
    want = att.astype(np.float64) @ wo.astype(np.float64).T
    np.testing.assert_allclose(acc * FIXED, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_cross_query_attention_output_fold_and_residual_term(dtype):
    """The cross-attention kernel of a 4-kernel layer: it reads x through a fixed-point residual
    term (the self-attention's folded output product, not yet added: x1 = round(acc * 2^-32 +
    bias + x), as gemv()'s epilogue would have written it) and folds its own output product. The
    same heads' outputs as the plain kernel on x1 computed here, bit for bit (so the residual read
    is exact), and accumulators within float32 rounding of att w_out^T."""
    d, heads, max_len = 1280, 20, 1500
    rng = rng_for("cross-fold", dtype)
    x = round_to(rng.standard_normal((1, d)) * 3 + 5, dtype)
    g = round_to(1 + 0.3 * rng.standard_normal(d), dtype)
    b = round_to(0.3 * rng.standard_normal(d), dtype)
    wq = round_to(rng.standard_normal((d, d)) / np.sqrt(d) * 3, dtype)
    bq = round_to(0.1 * rng.standard_normal(d), dtype)
    wo = round_to(rng.standard_normal((d, d)) / np.sqrt(d), dtype)
    kv = round_to(rng.standard_normal((1, max_len, 2 * d)), dtype)
    x_acc = np.round(rng.standard_normal((1, d)) * 2.0 * 2 ** 32).astype(np.int64)
    x_bias = round_to(0.1 * rng.standard_normal(d), dtype)
    x1 = round_to((x_acc.astype(np.float32) * np.float32(FIXED) + x_bias) + x, dtype)
    lens, index = np.array([max_len], np.int32), np.zeros(1, np.int32)
    att = _C.cuda_ops.cross_query_attention(x1, g, b, wq, bq, kv, lens, index, heads, dtype)
    kw = dict(w_out=wo, x_acc=x_acc, x_bias=x_bias)
    acc = _C.cuda_ops.cross_query_attention(x, g, b, wq, bq, kv, lens, index, heads, dtype, repeat=2, **kw)
    np.testing.assert_array_equal(acc, _C.cuda_ops.cross_query_attention(x, g, b, wq, bq, kv, lens, index, heads,
                                                                          dtype, **kw))
    want = att.astype(np.float64) @ wo.astype(np.float64).T
    np.testing.assert_allclose(acc * FIXED, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    # the term read wrong (without it) gives other heads' outputs, hence other sums
    plain = _C.cuda_ops.cross_query_attention(x, g, b, wq, bq, kv, lens, index, heads, dtype, w_out=wo)
    assert np.abs(plain * FIXED - want).max() > 1e-3 * np.abs(want).max()


def test_self_qkv_attention_rejects_what_it_does_not_cover():
    assert not _C.cuda_ops.self_qkv_attention_supported("float32", 1280, 20, 448)
    assert not _C.cuda_ops.self_qkv_attention_supported("bfloat16", 1280, 20, 513)  # > 8 x 64 keys
    assert not _C.cuda_ops.self_qkv_attention_supported("bfloat16", 1280, 16, 448)
