"""Absorbed cross-attention: the kernel (_C.cuda_ops.attention_absorbed) and the per-head
cuBLASLt products (_C.cuda_ops.linear_batched) against float64 numpy, and the model's absorbed
mode (SPEECHCORE_CROSS_ABSORB=<windows> at load: each window's encoder output instead of
per-layer cross K/V) against the CPU float32 logits and the standard GPU path.

As in test_cuda_attention.py, inputs are rounded to the device dtype first, outputs come back
poisoned (NaN) where unwritten, and encoder rows past a row's length are NaN, so reading them
shows."""

from __future__ import annotations

import numpy as np
import pytest

import speechcore
from speechcore import _C

pytestmark = pytest.mark.cuda

from test_cuda_attention import check, randn, rng_for, round_to  # noqa: E402

# (model dimension, heads) of Whisper tiny, base, small, medium, large
SHAPES = [(384, 6), (512, 8), (768, 12), (1024, 16), (1280, 20)]
TOL = {"float16": 1e-2, "bfloat16": 4e-2}


def ref_absorbed(qa, x, heads, index, lens, scale):
    """qa [rows, heads*dim], x [slots, t, dim] -> float64 [rows, heads*dim]."""
    rows, dim = qa.shape[0], x.shape[2]
    out = np.zeros((rows, heads * dim))
    for r in range(rows):
        if lens[r] == 0:
            continue
        xs = x[index[r], : lens[r]].astype(np.float64)
        q = qa[r].reshape(heads, dim).astype(np.float64)
        s = q @ xs.T * scale
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        out[r] = (s @ xs).reshape(-1)
    return out


def make_case(case, dim, heads, dtype):
    """(qa, x, kv_index or None, rows_per_slot, kv_lengths or None) and the per-row (slot, len)."""
    rng = rng_for("absorbed", case, dim, heads, dtype)
    if case == "one_row":  # batch 1: the keys split over many blocks
        rows, slots, t, index, lens = 1, 1, 1500, None, None
    elif case == "lengths":  # own slot per row, lengths off the 16-key tiles, an empty row
        rows, slots, t = 4, 4, 300
        index = np.array([3, 0, 2, 1], np.int32)
        lens = np.array([300, 17, 0, 161], np.int32)
    elif case == "prefill":  # prompt rows: row r reads slot r // 7
        rows, slots, t, index, lens = 70, 10, 120, None, None
    else:  # "many_rows": more rows than blocks of one wave, several rows a slot (beams)
        assert case == "many_rows"
        rows, slots, t = 140, 20, 64
        index = rng.integers(0, slots, rows).astype(np.int32)
        lens = None
    rows_per_slot = 7 if case == "prefill" else 1
    x = randn(rng, slots, t, dim)
    qa = randn(rng, rows, heads * dim) / np.sqrt(dim) * 4.0
    slot_of = index if index is not None else np.arange(rows) // rows_per_slot
    len_of = lens if lens is not None else np.full(rows, t, np.int32)
    if case == "lengths":  # rows past each own slot's length are never read
        for r in range(rows):
            x[slot_of[r], len_of[r]:] = np.nan
    return round_to(qa, dtype), round_to(x, dtype), index, rows_per_slot, lens, slot_of, len_of


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("dim,heads", SHAPES)
@pytest.mark.parametrize("case", ["one_row", "lengths", "prefill", "many_rows"])
def test_absorbed_matches_numpy(case, dim, heads, dtype):
    qa, x, index, rps, lens, slot_of, len_of = make_case(case, dim, heads, dtype)
    got = _C.cuda_ops.attention_absorbed(qa, x, heads, dtype, kv_lengths=lens, kv_index=index, rows_per_slot=rps)
    want = ref_absorbed(qa, np.nan_to_num(x), heads, slot_of, len_of, 0.125)
    empty = len_of == 0
    assert (got[empty] == 0).all(), "a row without keys must be zeros"
    check(got[~empty], want[~empty], TOL[dtype], f"absorbed {case} {dim}x{heads} {dtype}")


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_absorbed_static_and_repeat_are_identical(dtype):
    qa, x, index, rps, lens, _, _ = make_case("one_row", 1280, 20, dtype)
    a = _C.cuda_ops.attention_absorbed(qa, x, 20, dtype)
    b = _C.cuda_ops.attention_absorbed(qa, x, 20, dtype, x_static=True, repeat=3)
    assert np.array_equal(a, b)


def test_absorbed_split_policy():
    for rows in (1, 2, 5, 16, 33, 65, 66, 128, 300):
        for t in (1, 15, 16, 100, 1500):
            splits, chunk = _C.cuda_ops.attention_absorbed_split(rows, t)
            assert chunk % 16 == 0 and splits >= 1
            assert (splits - 1) * chunk < t <= splits * chunk or (t <= chunk and splits == 1)
            if rows >= 66:
                assert splits == 1
    assert _C.cuda_ops.attention_absorbed_split(1, 1500)[0] > 8


def test_absorbed_supported_shapes():
    for dim, heads in SHAPES:
        assert _C.cuda_ops.attention_absorbed_supported("bfloat16", heads, dim)
        assert _C.cuda_ops.attention_absorbed_supported("float16", heads, dim)
        assert not _C.cuda_ops.attention_absorbed_supported("float32", heads, dim)
    assert not _C.cuda_ops.attention_absorbed_supported("bfloat16", 20, 640)
    assert not _C.cuda_ops.attention_absorbed_supported("bfloat16", 25, 1280)
    with pytest.raises(speechcore.SpeechcoreError, match="not supported"):
        _C.cuda_ops.attention_absorbed(np.zeros((1, 640 * 10), np.float32), np.zeros((1, 4, 640), np.float32), 10)


@pytest.mark.parametrize("dtype,tol", [("float32", 1e-5), ("bfloat16", 1e-2)])
@pytest.mark.parametrize("w_kn", [False, True])
def test_linear_batched(dtype, tol, w_kn):
    """The per-head products of the absorbed path: x [m, heads, k] against heads weights."""
    rng = rng_for("batched", dtype, w_kn)
    for m, b, n, k in ((1, 6, 384, 64), (5, 20, 64, 1280), (130, 20, 1280, 64)):
        x = round_to(randn(rng, m, b, k), dtype)
        w = round_to(randn(rng, b, k, n) if w_kn else randn(rng, b, n, k), dtype)
        got = _C.cuda_ops.linear_batched(x, w, w_kn, dtype)
        want = np.einsum("mbk,bkn->mbn" if w_kn else "mbk,bnk->mbn", x.astype(np.float64), w.astype(np.float64))
        check(got, want, tol, f"linear_batched {m}x{b}x{n}x{k}")


# --- the model's absorbed mode ------------------------------------------------------------------

pytest.importorskip("torch")
pytest.importorskip("transformers")

from test_cuda_decode_fusion import _load  # noqa: E402
from test_cuda_whisper import OPTS, logits_errors, seeded_dir  # noqa: E402,F401  (fixture)


@pytest.mark.parametrize("compute_type,tol", [("bfloat16", 5e-2), ("float16", 2e-2)])
def test_absorbed_logits_match_cpu(seeded_dir, speech_audio, monkeypatch, compute_type, tol):  # noqa: F811
    """As test_gpu_logits_match_cpu, with the cross-attention absorbed (a batch of one window)."""
    cpu = speechcore.load(str(seeded_dir), device="cpu", threads=4)._native
    gpu = _load(seeded_dir, compute_type, monkeypatch, SPEECHCORE_CROSS_ABSORB="1")
    assert gpu.info["cross_absorb_min_windows"] == 1
    for n, err in logits_errors(cpu, gpu._native, speech_audio[0][1]).items():
        assert err < tol, (n, err)


def test_absorbed_mode_needs_half_precision(seeded_dir, monkeypatch):  # noqa: F811
    f32 = _load(seeded_dir, "float32", monkeypatch, SPEECHCORE_CROSS_ABSORB="1")
    assert f32.info["cross_absorb_min_windows"] == 0  # float32 keeps the CPU-identical K/V path
    off = _load(seeded_dir, "bfloat16", monkeypatch, SPEECHCORE_CROSS_ABSORB="0")
    assert off.info["cross_absorb_min_windows"] == 0
    assert speechcore.load(str(seeded_dir), device="cpu").info["cross_absorb_min_windows"] == 0


@pytest.mark.parametrize("compute_type", ["float16", "bfloat16"])
def test_absorbed_batches_agree_with_standard(seeded_dir, speech_audio, monkeypatch, compute_type):  # noqa: F811
    """transcribe_batch, transcribe with word timestamps (the alignment scores through the
    encoder output) and the engine, absorbed against the K/V path: the same first tokens on
    most windows (these random weights decode near-ties, see test_persistent_step_half_precision)
    and the same words."""
    absorbed = _load(seeded_dir, compute_type, monkeypatch, SPEECHCORE_CROSS_ABSORB="1")
    standard = speechcore.load(str(seeded_dir), device="cuda", compute_type=compute_type)
    audios = [a for _, a in speech_audio[:4]]

    def first_tokens(results):
        return [[t for s in r.segments for t in s.tokens][:5] for r in results]

    want = first_tokens(standard.transcribe_batch(audios, **OPTS))
    got = first_tokens(absorbed.transcribe_batch(audios, **OPTS))
    assert sum(g == w for g, w in zip(got, want)) >= 3, (got, want)
    futures = [absorbed.submit(a, **OPTS) for a in audios]
    engine = first_tokens([f.result() for f in futures])
    assert sum(g == w for g, w in zip(engine, want)) >= 3, (engine, want)
    opts = dict(OPTS, without_timestamps=False, word_timestamps=True)
    a = absorbed.transcribe(audios[0], **opts)
    s = standard.transcribe(audios[0], **opts)
    wa = [w.word for seg in a.segments for w in seg.words]
    ws = [w.word for seg in s.segments for w in seg.words]
    assert wa and wa[:5] == ws[:5]
    starts = np.array([w.start for seg in a.segments for w in seg.words][:5])
    assert np.all(np.diff(starts) >= 0)
