"""CUDA elementwise / norm / embedding / im2col / log-mel / logits-rule kernels against their CPU
twins (_C.ops.*, _C.log_mel_spectrogram) and numpy float64, across float32/float16/bfloat16 and
awkward shapes. Inputs are rounded to the dtype first so the references see the same inputs;
the hooks (_C.cuda_ops.*) poison outputs with NaN (-1 for ids) before each launch, and
`offset=1` moves every buffer off 16-byte alignment (the kernels' scalar paths).

The logits-rule tests also check the CPU twin itself (runtime::apply_whisper_logits_rules via
_C.ops.whisper_logits_rules) against a pure-Python reimplementation; those run without a GPU."""

from __future__ import annotations

import math
import zlib
from pathlib import Path

import numpy as np
import pytest

from speechcore import _C

DTYPES = ["float32", "float16", "bfloat16"]
# relative error norm |out - ref| / |ref|; fp16/bf16 outputs carry one rounding to the dtype
TOL = {"float32": 1e-5, "float16": 1e-2, "bfloat16": 4e-2}

cuda = pytest.mark.cuda


def rng_for(*key) -> np.random.Generator:
    """A generator seeded by the test's parameters (stable across processes)."""
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def to_bf16(x: np.ndarray) -> np.ndarray:
    """float32 -> nearest-even bfloat16, back as float32 (finite inputs)."""
    b = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    b = ((b + 0x7FFF + ((b >> 16) & 1)) >> 16) << 16
    return b.astype(np.uint32).view(np.float32)


def rounded(x: np.ndarray, dtype: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if dtype == "float16":
        return x.astype(np.float16).astype(np.float32)
    if dtype == "bfloat16":
        return to_bf16(x)
    return x.copy()


def check(out: np.ndarray, ref: np.ndarray, dtype: str, tol: float | None = None) -> None:
    out = np.asarray(out, np.float64)
    ref = np.asarray(ref, np.float64)
    assert out.shape == ref.shape
    assert np.all(np.isfinite(out)), "unwritten (poisoned) or non-finite outputs"
    denom = np.linalg.norm(ref)
    err = np.linalg.norm(out - ref) / (denom if denom > 0 else 1.0)
    assert err <= (TOL[dtype] if tol is None else tol), f"relative error {err:.3g} ({dtype})"


def gelu64(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


# ---- layer norm -------------------------------------------------------------------------------

# cols: Whisper widths, awkward ones, and lengths that take the memory-loop fallback
# (1500 in fp16/bf16, 5000 in fp32, any unaligned cols > 1024).
LN_SHAPES = [(1, 1), (3, 7), (5, 83), (1500, 384), (4, 512), (3, 768), (2, 1024), (9, 1280), (2, 1500), (2, 5000)]


@cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,cols", LN_SHAPES)
@pytest.mark.parametrize("offset", [0, 1])
def test_layer_norm(dtype, rows, cols, offset):
    r = rng_for("ln", rows, cols)
    x = rounded(r.standard_normal((rows, cols)) * 3 + 1, dtype)
    g = rounded(r.standard_normal(cols), dtype)
    b = rounded(r.standard_normal(cols), dtype)
    got = _C.cuda_ops.layer_norm(x, g, b, 1e-5, dtype, False, offset)
    check(got, _C.ops.layer_norm(x, g, b, 1e-5), dtype)
    if dtype == "float32":
        x64 = x.astype(np.float64)
        ref = (x64 - x64.mean(-1, keepdims=True)) / np.sqrt(x64.var(-1, keepdims=True) + 1e-5) * g + b
        check(got, ref, dtype)


@cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,cols", [(3, 7), (7, 384), (2, 1280), (2, 1500)])
def test_layer_norm_in_place(dtype, rows, cols):
    r = rng_for("ln-inplace", rows, cols)
    x = rounded(r.standard_normal((rows, cols)) * 2 - 1, dtype)
    g, b = rounded(r.standard_normal(cols), dtype), rounded(r.standard_normal(cols), dtype)
    got = _C.cuda_ops.layer_norm(x, g, b, 1e-5, dtype, True)
    check(got, _C.ops.layer_norm(x, g, b, 1e-5), dtype)


@cuda
def test_layer_norm_constant_rows_and_eps():
    # zero variance: y = beta exactly; a large eps changes the scale
    x = np.full((4, 384), 2.5, np.float32)
    g, b = np.ones(384, np.float32), np.linspace(-1, 1, 384).astype(np.float32)
    np.testing.assert_array_equal(_C.cuda_ops.layer_norm(x, g, b, 1e-5), np.tile(b, (4, 1)))
    y = rng_for("ln-eps").standard_normal((3, 83)).astype(np.float32)
    check(_C.cuda_ops.layer_norm(y, g[:83], b[:83], 0.5), _C.ops.layer_norm(y, g[:83], b[:83], 0.5), "float32")


# ---- GELU, bias + GELU, add, positional add ---------------------------------------------------

FLAT_SIZES = [1, 7, 83, 1500, 1501, 4099, 1500 * 384 + 5]


@cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", FLAT_SIZES)
@pytest.mark.parametrize("offset", [0, 1])
def test_gelu(dtype, n, offset):
    x = rounded(rng_for("gelu", n).standard_normal(n) * 4, dtype)
    got = _C.cuda_ops.gelu(x, dtype, offset)
    check(got, _C.ops.gelu(x), dtype)
    if n <= 4099:
        check(got, gelu64(x), dtype)


@cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,cols", [(1, 1), (3, 7), (5, 83), (7, 1536), (2, 1501), (300, 5120)])
@pytest.mark.parametrize("offset", [0, 1])
def test_bias_gelu(dtype, rows, cols, offset):
    r = rng_for("bias-gelu", rows, cols)
    x = rounded(r.standard_normal((rows, cols)) * 3, dtype)
    b = rounded(r.standard_normal(cols), dtype)
    got = _C.cuda_ops.bias_gelu(x, b, dtype, offset)
    check(got, _C.ops.gelu(x + b), dtype)  # x + b in float32, as the kernel


@cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", FLAT_SIZES)
@pytest.mark.parametrize("offset", [0, 1])
def test_add(dtype, n, offset):
    r = rng_for("add", n)
    x, y = rounded(r.standard_normal(n), dtype), rounded(r.standard_normal(n), dtype)
    check(_C.cuda_ops.add(x, y, dtype, offset), x.astype(np.float64) + y, dtype)


@cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch,t,d", [(1, 1, 1), (2, 7, 83), (3, 1500, 384), (2, 83, 1280), (1, 1500, 1280)])
@pytest.mark.parametrize("offset", [0, 1])
def test_add_positional(dtype, batch, t, d, offset):
    r = rng_for("pos", batch, t, d)
    x = rounded(r.standard_normal((batch, t, d)), dtype)
    pos = rounded(r.standard_normal((t, d)), dtype)
    check(_C.cuda_ops.add_positional(x, pos, dtype, offset), x.astype(np.float64) + pos[None], dtype)


# ---- embedding ----------------------------------------------------------------------------------


@cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,d", [(1, 1), (5, 7), (33, 83), (7, 384), (64, 1280)])
@pytest.mark.parametrize("offset", [0, 1])
def test_embedding(dtype, n, d, offset):
    r = rng_for("emb", n, d)
    vocab, max_pos = 97, 448
    table = rounded(r.standard_normal((vocab, d)), dtype)
    pos_table = rounded(r.standard_normal((max_pos, d)), dtype)
    ids = r.integers(0, vocab, n).astype(np.int32)
    ids[0] = vocab - 1
    positions = r.integers(0, max_pos, n).astype(np.int32)  # each sequence at its own position
    positions[-1] = max_pos - 1
    got = _C.cuda_ops.embedding(table, ids, positions, pos_table, dtype, offset)
    check(got, _C.ops.embedding(table, ids, pos_table[positions]), dtype)


# ---- im2col of the conv stem --------------------------------------------------------------------


def im2col_ref(xs: list[np.ndarray], kw: int, stride: int, pad: int) -> np.ndarray:
    """xs: per batch item [c_in, t_in] -> [batch * t_out, c_in * kw]."""
    rows = []
    for x in xs:
        c_in, t_in = x.shape
        xp = np.concatenate([np.zeros((c_in, pad), x.dtype), x, np.zeros((c_in, pad), x.dtype)], axis=1)
        t_out = (t_in + 2 * pad - kw) // stride + 1
        for t in range(t_out):
            rows.append(xp[:, t * stride:t * stride + kw].reshape(-1))
    return np.stack(rows)


# (c_in, t_in, kw, stride, pad, batch): Whisper's conv1 (mel, channel-major) and conv2
# (time-major hidden states), awkward sizes, a pad larger than the input
CONV_CASES = [(80, 3000, 3, 1, 1, 1), (128, 83, 3, 1, 1, 3), (384, 3000, 3, 2, 1, 1), (7, 83, 3, 2, 1, 2),
              (1, 1, 1, 1, 0, 1), (3, 7, 5, 3, 2, 2), (2, 2, 3, 1, 4, 2)]


@cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c_in,t_in,kw,stride,pad,batch", CONV_CASES)
@pytest.mark.parametrize("layout", ["channel_major", "time_major"])
def test_im2col_conv1d(dtype, c_in, t_in, kw, stride, pad, batch, layout):
    r = rng_for("im2col", c_in, t_in, kw, stride, pad, batch, layout)
    xs = [rounded(r.standard_normal((c_in, t_in)), dtype) for _ in range(batch)]
    if layout == "channel_major":  # [batch, c_in, t_in]
        flat = np.stack(xs).reshape(-1)
        cs, ts, bs = t_in, 1, c_in * t_in
    else:  # [batch, t_in, c_in], batch items 5 rows apart (a strided batch)
        buf = np.zeros((batch, t_in + 5, c_in), np.float32)
        for i, x in enumerate(xs):
            buf[i, :t_in] = x.T
        flat = buf.reshape(-1)
        cs, ts, bs = 1, c_in, (t_in + 5) * c_in
    col = _C.cuda_ops.im2col_conv1d(flat, c_in, t_in, cs, ts, batch, bs, kw, stride, pad, dtype)
    # a pure copy: exact
    np.testing.assert_array_equal(col, im2col_ref(xs, kw, stride, pad))
    # and through a GEMM it is ops::conv1d
    c_out = 5
    w = rounded(r.standard_normal((c_out, c_in, kw)), dtype)
    bias = rounded(r.standard_normal(c_out), dtype)
    y = col.astype(np.float64) @ w.reshape(c_out, -1).T.astype(np.float64) + bias
    t_out = (t_in + 2 * pad - kw) // stride + 1
    for i, x in enumerate(xs):
        check(y[i * t_out:(i + 1) * t_out], _C.ops.conv1d(x, w, bias, stride, pad), "float32", tol=1e-5)


@cuda
def test_im2col_rejects_short_input():
    with pytest.raises(Exception):
        _C.cuda_ops.im2col_conv1d(np.zeros(2, np.float32), 1, 2, 2, 1, 1, 2, 5, 1, 0)


# ---- log-mel ------------------------------------------------------------------------------------

# fp64 DFT and mel sums on both sides: differences are summation order and log10f ulps (~1e-6).
MEL_ATOL = 1e-4


def mel_pair(audio, n_mels=80, padding=160):
    audio = np.ascontiguousarray(audio, np.float32)
    gpu = _C.cuda_ops.log_mel(audio, n_mels, padding)
    cpu = _C.log_mel_spectrogram(audio, n_mels=n_mels, padding=padding)
    assert gpu.shape == cpu.shape
    assert np.all(np.isfinite(gpu))
    return gpu, cpu


@pytest.fixture(scope="module")
def speech(request, speech_clips, testdata):
    """(name, 16 kHz float32 audio): conftest's speech_audio, or the same clips through
    _C.read_wav where soundfile is not installed (the GPU machine)."""
    try:
        import soundfile  # noqa: F401

        return request.getfixturevalue("speech_audio")
    except ImportError:
        out = []
        for p in speech_clips:
            a, sr = _C.read_wav(str(p))
            assert sr == 16000
            out.append((Path(p).name, np.ascontiguousarray(a.mean(axis=1), np.float32)))
        raw = np.fromfile(testdata / "goforward.raw", dtype="<i2").astype(np.float32) / 32768.0
        out.append(("goforward.raw", raw))
        return out


@cuda
@pytest.mark.parametrize("n_mels", [80, 128])
def test_log_mel_real_speech(speech, n_mels):
    worst = 0.0
    for name, audio in speech:
        gpu, cpu = mel_pair(audio, n_mels)
        diff = float(np.abs(gpu - cpu).max())
        worst = max(worst, diff)
        assert diff <= MEL_ATOL, f"{name}: max abs diff {diff:.3g}"
    print(f"log-mel n_mels={n_mels}: worst max abs diff over {len(speech)} clips {worst:.3g}")


@cuda
def test_log_mel_long_audio(speech):
    # > 60 s of speech and gaps: many spectrum blocks, the global max reduced over all of them
    gap = np.zeros(11200, np.float32)
    audio = np.concatenate([x for _, a in speech + speech for x in (a, gap)])
    assert audio.size > 60 * 16000
    gpu, cpu = mel_pair(audio, 80, 160)
    assert float(np.abs(gpu - cpu).max()) <= MEL_ATOL


def synthetic_signal(name: str) -> np.ndarray:
    sr = 16000
    t = np.arange(sr * 2) / sr
    r = np.random.default_rng(7)
    if name == "silence":
        return np.zeros(sr, np.float32)
    if name == "tone":
        return (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    if name == "tone+quiet noise":  # bins 60-80 dB under a loud peak: the DFT precision matters
        return (np.sin(2 * np.pi * 1234.5 * t) + 1e-4 * r.standard_normal(t.size)).astype(np.float32)
    if name == "white noise":
        return (0.1 * r.standard_normal(sr + 77)).astype(np.float32)
    if name == "impulse":
        imp = np.zeros(4001, np.float32)
        imp[2000] = 1.0
        return imp
    assert name == "chirp"
    return (0.3 * np.sin(2 * np.pi * (100 + 3000 * t) * t)).astype(np.float32)


@cuda
@pytest.mark.parametrize("name", ["silence", "tone", "tone+quiet noise", "white noise", "impulse", "chirp"])
@pytest.mark.parametrize("padding", [0, 160, 480000])
def test_log_mel_synthetic(name, padding):
    gpu, cpu = mel_pair(synthetic_signal(name), 80, padding)
    assert float(np.abs(gpu - cpu).max()) <= MEL_ATOL
    if name == "silence":  # log10(1e-10) = -10 everywhere -> (-10 + 4) / 4
        np.testing.assert_allclose(gpu, -1.5, atol=1e-6)


# lengths around the frame size and hop: 1 sample (reflection wraps many times), under a
# hop with padding, exact multiples, off by one
@cuda
@pytest.mark.parametrize("n,padding", [(1, 160), (1, 159), (2, 200), (159, 1), (160, 0), (161, 0), (199, 1),
                                       (200, 0), (399, 1), (401, 0), (1601, 160), (16000 * 30 + 7, 160)])
def test_log_mel_awkward_lengths(n, padding):
    audio = (0.3 * np.random.default_rng(n).standard_normal(n)).astype(np.float32)
    gpu, cpu = mel_pair(audio, 80, padding)
    assert gpu.shape[1] == (n + padding) // 160
    assert float(np.abs(gpu - cpu).max()) <= MEL_ATOL


@cuda
@pytest.mark.parametrize("n,padding", [(0, 0), (1, 0), (159, 0), (100, 59)])
def test_log_mel_too_short(n, padding):
    audio = np.ones(n, np.float32)
    with pytest.raises(Exception) as cpu_err:
        _C.log_mel_spectrogram(audio, padding=padding)
    with pytest.raises(Exception) as gpu_err:
        _C.cuda_ops.log_mel(audio, 80, padding)
    assert type(gpu_err.value) is type(cpu_err.value)


# ---- Whisper logits rules + greedy pick ---------------------------------------------------------

# multilingual Whisper ids (vocab 51865)
EOT, SOT, NO_SPEECH, NO_TS, TB, VOCAB = 50257, 50258, 50362, 50363, 50364, 51865
TE = VOCAB - 1
SUPPRESS = [1, 2, 7, 8, 9, 10, 14, 25, 26, 27, 28, 29, 31, 58, 59, 60, 61, 62, 63, 90, 91, 92, 93, 359, 503, 522,
            542, 873, 893, 902, 918, 922, 931, 1350, 1853, 1982, 2460, 2627, 50258, 50359, 50360, 50361, 50362,
            -1, VOCAB + 5]  # ids out of range are ignored
SUPPRESS_BEGIN = [220, EOT]


def lse64(x: np.ndarray) -> float:
    x = np.asarray(x, np.float64)
    m = x.max() if x.size else -np.inf
    if m == -np.inf:
        return -np.inf
    return float(m + np.log(np.exp(x - m).sum()))


def rules_ref(logits, generated, step, timestamps, eot, no_ts, tb, te, suppress, suppress_begin, max_initial):
    """Pure-Python Whisper logits rules (CTranslate2 / runtime::apply_whisper_logits_rules).
    Returns (masked float64 logits, margin of the timestamp-mass test or None)."""
    lg = np.asarray(logits, np.float64).copy()
    v = lg.size
    for i in suppress:
        if 0 <= i < v:
            lg[i] = -np.inf
    if step == 0:
        for i in suppress_begin:
            if 0 <= i < v:
                lg[i] = -np.inf
    if not timestamps:
        return lg, None
    lg[no_ts] = -np.inf
    check_mass = False
    if step == 0:
        lg[:tb] = -np.inf
        if max_initial >= 0:
            lg[tb + max_initial + 1:te + 1] = -np.inf
    else:
        last = generated[step - 1]
        if last >= tb:
            penultimate = generated[step - 2] if step >= 2 else last
            if penultimate >= tb:
                lg[tb:te + 1] = -np.inf
            else:
                lg[:eot] = -np.inf
                lg[tb:last] = -np.inf
                check_mass = True
        else:
            check_mass = True
            stamps = [t for t in generated[:step] if t >= tb]
            if stamps:
                lg[tb:stamps[-1] + 1] = -np.inf
    margin = None
    if check_mass:
        lse_ts, max_text = lse64(lg[tb:te + 1]), lg[:tb].max()
        margin = lse_ts - max_text
        if lse_ts > max_text:
            lg[:tb] = -np.inf
    return lg, margin


def greedy_ref(masked):
    best = int(np.argmax(masked))  # first index among equal maxima
    return best, float(masked[best] - lse64(masked))


def run_rules_case(logits, gens, steps, timestamps=True, suppress=SUPPRESS, suppress_begin=SUPPRESS_BEGIN,
                   max_initial=50, ids=(EOT, NO_TS, TB, TE), gpu=True):
    """Checks the CPU twin and (gpu=True) the CUDA kernel against the reference for a batch."""
    eot, no_ts, tb, te = ids
    batch, vocab = logits.shape
    max_steps = max([len(g) for g in gens] + [1]) + 3
    generated = np.full((batch, max_steps), -7, np.int32)  # garbage past each step
    for b, g in enumerate(gens):
        generated[b, :len(g)] = g
    refs = []
    for b in range(batch):
        masked, margin = rules_ref(logits[b], list(gens[b]), steps[b], timestamps, eot, no_ts, tb, te, suppress,
                                   suppress_begin, max_initial)
        assert margin is None or abs(margin) > 1e-3, "test case too close to the timestamp-mass threshold"
        refs.append(masked)
        cpu = _C.ops.whisper_logits_rules(logits[b], list(gens[b]), steps[b], timestamps, eot, no_ts, tb, te,
                                          [int(s) for s in suppress], [int(s) for s in suppress_begin], max_initial)
        np.testing.assert_array_equal(np.isneginf(cpu), np.isneginf(masked), err_msg=f"CPU mask, sequence {b}")
        np.testing.assert_array_equal(cpu[np.isfinite(masked)], logits[b][np.isfinite(masked)])
    if not gpu:
        return refs
    got_l, got_tok, got_lp = _C.cuda_ops.whisper_greedy_step(
        logits, generated, np.asarray(steps, np.int32), np.asarray(suppress, np.int32),
        np.asarray(suppress_begin, np.int32), eot, no_ts, tb, te, max_initial, timestamps)
    for b in range(batch):
        masked = refs[b]
        np.testing.assert_array_equal(np.isneginf(got_l[b]), np.isneginf(masked), err_msg=f"GPU mask, sequence {b}")
        np.testing.assert_array_equal(got_l[b][np.isfinite(masked)], logits[b][np.isfinite(masked)])
        best, lp = greedy_ref(masked)
        assert int(got_tok[b]) == best, f"sequence {b}: token {int(got_tok[b])} != {best}"
        # float32 log-sum-exp over ~52k logits vs float64: ~1e-6 absolute
        assert abs(float(got_lp[b]) - lp) <= 1e-5 + 1e-6 * abs(lp), f"sequence {b}: logprob {got_lp[b]} vs {lp}"
    return refs


def random_history(r, step, tb=TB, te=TE, eot=EOT):
    """A plausible generated sequence of `step` tokens: timestamps non-decreasing, text between."""
    out, ts = [], tb
    for i in range(step):
        if r.random() < 0.25:
            ts = int(min(te, ts + r.integers(0, 40)))
            out.append(ts)
        else:
            out.append(int(r.integers(0, eot)))
    return out


def random_batch(seed, batch, max_step):
    r = np.random.default_rng(seed)
    logits = (r.standard_normal((batch, VOCAB)) * 3).astype(np.float32)
    steps = [int(s) for s in r.integers(0, max_step + 1, batch)]
    steps[0] = 0
    gens = [random_history(r, s) for s in steps]
    return logits, gens, steps


def crafted_cases():
    """(name, logits [vocab], generated, step) covering each rule."""
    base = np.random.default_rng(3).standard_normal(VOCAB).astype(np.float32)
    cases = []
    cases.append(("step0", base.copy(), [], 0))
    lt = base.copy()
    lt[TB + 60] = 30.0  # beyond max_initial_timestamp_index: masked
    lt[TB + 50] = 20.0
    cases.append(("step0 max initial", lt, [], 0))
    cases.append(("first token a timestamp (pair rule at step 1)", base.copy(), [TB + 3], 1))
    cases.append(("pair -> text", base.copy(), [TB, 440, TB + 10, TB + 12], 4))
    l1 = base.copy()
    l1[TB + 5] = 25.0  # below the last timestamp: masked
    l1[EOT] = 4.0
    cases.append(("single timestamp -> timestamp >= last or eot", l1, [TB, 440, 441, TB + 9], 4))
    l2 = base.copy()
    l2[100] = 5.0
    l2[TB:] = 2.0  # 1501 timestamps at 2: log-sum 9.3 > 5
    cases.append(("timestamp mass wins", l2, [TB, 440, 441], 3))
    l3 = base.copy()
    l3[100] = 12.0
    l3[TB:] = 2.0  # 9.3 < 12: text stays
    cases.append(("timestamp mass loses", l3, [TB, 440, 441], 3))
    l4 = base.copy()
    l4[TB + 2] = 40.0  # below the last timestamp (monotonic rule)
    cases.append(("monotonic timestamps", l4, [TB + 1, 440, TB + 7, TB + 7, 500, 501], 6))
    l5 = np.zeros(VOCAB, np.float32)
    l5[TB:] = -5.0  # timestamp mass 2.3 < 3: text stays
    l5[[300, 77, 900]] = 3.0  # tie: lowest index
    cases.append(("tie", l5, [600, 601], 2))
    l6 = base.copy()
    l6[TB:] = -np.inf  # no timestamp possible: mass -inf
    cases.append(("no timestamps left", l6, [440], 1))
    return cases


def test_logits_rules_cpu_twin_matches_reference():
    """No GPU needed: the CPU rules (used by decode_window_greedy) against the Python reference."""
    logits, gens, steps = random_batch(11, 16, 40)
    run_rules_case(logits, gens, steps, gpu=False)
    for _, lg, g, s in crafted_cases():
        run_rules_case(lg[None], [g], [s], gpu=False)
        run_rules_case(lg[None], [g], [s], timestamps=False, gpu=False)


@cuda
@pytest.mark.parametrize("timestamps", [True, False])
def test_whisper_greedy_random_batch(timestamps):
    logits, gens, steps = random_batch(5 if timestamps else 6, 24, 60)
    run_rules_case(logits, gens, steps, timestamps=timestamps)


@cuda
def test_whisper_greedy_crafted():
    cases = crafted_cases()
    logits = np.stack([c[1] for c in cases])
    refs = run_rules_case(logits, [c[2] for c in cases], [c[3] for c in cases])
    picks = {c[0]: greedy_ref(r)[0] for c, r in zip(cases, refs)}
    assert TB <= picks["step0"] <= TB + 50
    assert picks["step0 max initial"] == TB + 50
    assert picks["pair -> text"] < TB
    assert picks["single timestamp -> timestamp >= last or eot"] >= TB + 9 or \
        picks["single timestamp -> timestamp >= last or eot"] == EOT
    assert picks["timestamp mass wins"] >= TB
    assert picks["timestamp mass loses"] == 100
    assert picks["monotonic timestamps"] != TB + 2
    assert picks["tie"] == 77
    # the same batch without timestamp rules, and with no initial-timestamp limit
    run_rules_case(logits, [c[2] for c in cases], [c[3] for c in cases], timestamps=False)
    run_rules_case(logits, [c[2] for c in cases], [c[3] for c in cases], max_initial=-1)


@cuda
def test_whisper_greedy_small_vocab():
    # vocab smaller than the block; timestamp_end below vocab - 1 (ids past it belong to neither range)
    ids = (20, 21, 22, 40)
    r = np.random.default_rng(9)
    for trial in range(5):
        logits = (r.standard_normal((6, 45)) * 2).astype(np.float32)
        steps = [0, 1, 2, 3, 5, 8]
        gens = [random_history(r, s, tb=22, te=40, eot=20) for s in steps]
        run_rules_case(logits, gens, steps, suppress=[1, 5, 44], suppress_begin=[3, 20], max_initial=4, ids=ids)


@cuda
def test_no_speech_prob():
    r = np.random.default_rng(4)
    logits = (r.standard_normal((5, VOCAB)) * 4).astype(np.float32)
    logits[2, NO_SPEECH] = 25.0
    got = _C.cuda_ops.no_speech_prob(logits, NO_SPEECH)
    ref = np.array([np.exp(np.float64(l[NO_SPEECH]) - lse64(l)) for l in logits])
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-12)
    assert got[2] > 0.5


@cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cols,ld_src,ld_dst", [(64, 192, 64), (7, 9, 11), (1280, 3840, 1280)])
def test_copy_rows(dtype, cols, ld_src, ld_dst):
    r = rng_for("copy_rows", cols, ld_src, ld_dst)
    src = rounded(r.standard_normal((9, ld_src)), dtype)
    dst = rounded(r.standard_normal((12, ld_dst)), dtype)
    src_rows = np.array([8, 0, 3, 3], np.int32)  # gather, repeats allowed
    dst_rows = np.array([11, 2, 5, 0], np.int32)  # scatter (KV-cache append)
    for sr, dr in [(src_rows, dst_rows), (None, dst_rows), (src_rows, None), (None, None)]:
        got = _C.cuda_ops.copy_rows(src, dst, sr, dr, 4, cols, dtype)
        want = dst.copy()
        s_idx = range(4) if sr is None else sr
        d_idx = range(4) if dr is None else dr
        for s_i, d_i in zip(s_idx, d_idx):
            want[d_i, :cols] = src[s_i, :cols]
        np.testing.assert_array_equal(got, want)


@cuda
def test_whisper_greedy_rows_and_append():
    """Histories kept on the device in a slot-indexed table (rows map), the pick appended to it."""
    logits, gens, steps = random_batch(21, 6, 30)
    perm = np.array([4, 0, 7, 2, 5, 1], np.int32)
    table = np.full((8, 40), -7, np.int32)
    for b, g in enumerate(gens):
        table[perm[b], :len(g)] = g
    refs = run_rules_case(logits, gens, steps, gpu=False)
    _, tok, lp, after = _C.cuda_ops.whisper_greedy_step(
        logits, table, np.asarray(steps, np.int32), np.asarray(SUPPRESS, np.int32),
        np.asarray(SUPPRESS_BEGIN, np.int32), EOT, NO_TS, TB, TE, 50, True, rows=perm, append=True)
    want = table.copy()
    for b in range(len(gens)):
        best, ref_lp = greedy_ref(refs[b])
        assert int(tok[b]) == best
        assert abs(float(lp[b]) - ref_lp) <= 1e-5 + 1e-6 * abs(ref_lp)
        want[perm[b], steps[b]] = best
    np.testing.assert_array_equal(after, want)


def host_draws(masked, temperature, uniforms):
    """runtime::sample_token with the given uniforms (the CPU sampler's arithmetic, in numpy)."""
    lse = np.float32(lse64(masked))
    lp = (masked - lse).astype(np.float32) * np.float32(1.0 / temperature)
    q = np.exp((lp - lp.max()).astype(np.float32)).astype(np.float32)
    cum = np.cumsum(q.astype(np.float64))
    out = []
    for u in uniforms:
        i = int(np.searchsorted(cum, u * cum[-1], side="right"))
        while i < len(q) and q[i] <= 0:
            i += 1
        out.append(min(i, int(np.nonzero(q > 0)[0][-1])))
    return out


@cuda
@pytest.mark.parametrize("temperature", [0.2, 0.6, 1.0, 1.7])
def test_whisper_sample_step_matches_host_draws(temperature):
    """The device draw (rules, log-softmax / T, cumulative search with the candidate's uniform)
    picks the host sampler's token for the same uniforms: against numpy and against
    _C.ops.sample_tokens (runtime::sample_token with SampleRng streams); the log-prob returned is
    the drawn token's at temperature 1."""
    logits, gens, steps = random_batch(31, 16, 30)
    refs = run_rules_case(logits, gens, steps, gpu=False)
    generated = np.full((16, 40), -7, np.int32)
    for b, g in enumerate(gens):
        generated[b, :len(g)] = g
    for seed in range(3):
        u = np.random.default_rng(seed).random(16)
        _, tok, lp = _C.cuda_ops.whisper_greedy_step(
            logits, generated, np.asarray(steps, np.int32), np.asarray(SUPPRESS, np.int32),
            np.asarray(SUPPRESS_BEGIN, np.int32), EOT, NO_TS, TB, TE, 50, True, uniform=u, temperature=temperature)
        for b in range(16):
            want = host_draws(refs[b], temperature, [u[b]])[0]
            assert int(tok[b]) == want, (seed, b)
            assert np.isfinite(refs[b][want])
            ref_lp = float(refs[b][want] - lse64(refs[b]))
            assert abs(float(lp[b]) - ref_lp) <= 1e-5 + 1e-6 * abs(ref_lp)
    # the same candidate streams as the CPU sampler: row b = one logits row, uniform of stream b
    row = (np.random.default_rng(8).standard_normal(VOCAB) * 2).astype(np.float32)
    n = 64
    want = _C.ops.sample_tokens(row, temperature, n, seed=9)
    _, tok, _ = _C.cuda_ops.whisper_greedy_step(
        np.repeat(row[None], n, 0), np.zeros((n, 1), np.int32), np.zeros(n, np.int32), np.zeros(0, np.int32),
        np.zeros(0, np.int32), EOT, NO_TS, TB, TE, 50, False, uniform=_C.ops.sample_uniforms(n, seed=9),
        temperature=temperature)
    np.testing.assert_array_equal(tok, want)


@cuda
def test_whisper_sample_step_distribution_and_edges():
    """Draw frequencies follow softmax(logits / T) (chi-square over 20,000 draws, small vocab,
    Wilson-Hilferty p-value); masked tokens are never drawn; u = 0 gives the first token with
    mass and u just below 1 the last."""
    vocab, t, n = 45, 0.7, 20000
    r = np.random.default_rng(12)
    row = (r.standard_normal(vocab) * 1.5).astype(np.float32)
    ids = (20, 21, 22, 40)
    u = r.random(n)
    _, tok, _ = _C.cuda_ops.whisper_greedy_step(
        np.repeat(row[None], n, 0), np.zeros((n, 1), np.int32), np.zeros(n, np.int32), np.asarray([3, 7], np.int32),
        np.zeros(0, np.int32), *ids, 50, False, uniform=u, temperature=t)
    assert not np.isin(tok, [3, 7]).any()
    p = np.exp(np.float64(row) / t)
    p[[3, 7]] = 0
    p /= p.sum()
    counts = np.bincount(tok, minlength=vocab)
    keep = p * n >= 5
    expected = p[keep] * n
    chi2 = float((((counts[keep] - expected) ** 2) / expected).sum())
    k = int(keep.sum()) - 1
    z = ((chi2 / k) ** (1 / 3) - (1 - 2 / (9 * k))) / np.sqrt(2 / (9 * k))
    assert z < 3.5, (chi2, k, z)  # p > ~2e-4
    edge = np.asarray([0.0, np.nextafter(1.0, 0.0)])
    _, tok, _ = _C.cuda_ops.whisper_greedy_step(
        np.repeat(row[None], 2, 0), np.zeros((2, 1), np.int32), np.zeros(2, np.int32), np.asarray([0, 44], np.int32),
        np.zeros(0, np.int32), *ids, 50, False, uniform=edge, temperature=t)
    assert list(tok) == [1, 43]
