"""The fused decoder step (layer norms inside the products, QKV product writing K/V into the
cache, single-kernel split attention, fused final layer norm; used for <= gemv-rows rows) against
the unfused kernel sequence (SPEECHCORE_DECODE_FUSION=1 / 0, read when a model loads): the same
tokens and the same log-probabilities, bit for bit, in every compute type, for one window and
for small batches whose rows drop out as windows finish."""

from __future__ import annotations

import pytest

import speechcore

pytestmark = pytest.mark.cuda
pytest.importorskip("torch")
pytest.importorskip("transformers")

from test_cuda_whisper import OPTS, _tokens, seeded_dir  # noqa: E402,F401  (fixture)


def _load(path, compute_type, monkeypatch, **env):
    """A GPU model loaded with these SPEECHCORE_* switches set (they are read at load)."""
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    m = speechcore.load(str(path), device="cuda", compute_type=compute_type)
    for k in env:
        monkeypatch.delenv(k)
    return m


# The fused step as 8 kernels a layer: the one-row attention sub-layers' one-kernel forms (on by
# default on compute capability 9) merge their key splits in another order, so they are not bit
# for bit the unfused sequence's.
EIGHT_KERNELS = dict(SPEECHCORE_SELF_QKV_FUSED="0", SPEECHCORE_CROSS_QUERY_FUSED="0")


def _summary(result):
    return [(s.tokens, s.avg_logprob) for s in result.segments]


def _starts_alike(got, want, label, lead=5):
    """got's tokens start as want's: the same first `lead` tokens, or all of a shorter window
    (the first difference is printed)."""
    same = next((i for i, (g, w) in enumerate(zip(got, want)) if g != w), min(len(got), len(want)))
    print(f"{label}: {len(want)} tokens, first difference at {same}")
    return same >= min(lead, len(want))


def _agrees(model, reference, audio, opts, label):
    """model's window of audio starts as reference's (_starts_alike)."""
    return _starts_alike(_tokens(model.transcribe(audio, **opts)), _tokens(reference.transcribe(audio, **opts)), label)


@pytest.mark.parametrize("compute_type", ["float32", "float16", "bfloat16"])
def test_fused_step_bit_identical_to_unfused(seeded_dir, speech_audio, monkeypatch, compute_type):  # noqa: F811
    fused = _load(seeded_dir, compute_type, monkeypatch, SPEECHCORE_DECODE_FUSION="1", **EIGHT_KERNELS)
    plain = _load(seeded_dir, compute_type, monkeypatch, SPEECHCORE_DECODE_FUSION="0")
    audios = [a for _, a in speech_audio[:3]]
    for a in audios:
        for opts in (OPTS, dict(OPTS, without_timestamps=False)):
            want = _summary(plain.transcribe(a, **opts))
            assert _summary(fused.transcribe(a, **opts)) == want
    assert sum(len(t) for t, _ in _summary(plain.transcribe(audios[0], **OPTS))) > 5  # a real decode ran
    opts = OPTS
    # batches of 2 (both rows fused, then one as the shorter window finishes)
    pair = [audios[0], audios[1][: len(audios[1]) // 2]]
    # Through the engine, which windows share a step depends on when each request's preparation
    # ends (a second thread), so the two runs may batch rows differently: in float32 the same
    # tokens and log-probs equal up to rounding; in half precision a different batch composition
    # may change a pick, so only float32 is compared there.
    if compute_type != "float32":
        return
    want = [_summary(r) for r in plain.transcribe_batch(pair, batch_size=2, **opts)]
    got = [_summary(r) for r in fused.transcribe_batch(pair, batch_size=2, **opts)]
    assert [[t for t, _ in r] for r in got] == [[t for t, _ in r] for r in want]
    for g, w in zip(got, want):
        assert [lp for _, lp in g] == pytest.approx([lp for _, lp in w], rel=1e-5, abs=1e-6)


def test_persistent_step_float32_matches_cpu(seeded_dir, speech_audio, monkeypatch):  # noqa: F811
    """The persistent one-row step (opt-in: SPEECHCORE_PERSISTENT_STEP=1) gives the CPU's float32
    tokens, one window at a time with and without timestamps, and through the engine's paged
    cache for a batch whose rows drop to one."""
    persistent = _load(seeded_dir, "float32", monkeypatch, SPEECHCORE_PERSISTENT_STEP="1")
    if persistent.info["decoder_step"] != "persistent":
        pytest.skip("this GPU cannot run the persistent step (needs compute capability 9.0 and cooperative launch)")
    cpu = speechcore.load(str(seeded_dir), device="cpu", threads=4)
    audios = [a for _, a in speech_audio[:4]]
    decoded = 0
    for a in audios:
        for opts in (OPTS, dict(OPTS, without_timestamps=False)):
            want = _summary(cpu.transcribe(a, **opts))
            got = _summary(persistent.transcribe(a, **opts))
            assert [t for t, _ in got] == [t for t, _ in want]
            assert [lp for _, lp in got] == pytest.approx([lp for _, lp in want], rel=1e-4, abs=1e-5)
            decoded += sum(len(t) for t, _ in want)
    assert decoded > 40  # real decodes ran
    pair = [audios[0], audios[1][: len(audios[1]) // 2]]
    want = [[t for t, _ in _summary(cpu.transcribe(a, **OPTS))] for a in pair]
    got = [[t for t, _ in _summary(r)] for r in persistent.transcribe_batch(pair, batch_size=2, **OPTS)]
    assert got == want


@pytest.mark.parametrize("compute_type", ["float16", "bfloat16"])
def test_persistent_step_half_precision(seeded_dir, speech_audio, monkeypatch, compute_type):  # noqa: F811
    """In float16/bfloat16 the persistent step's attention rounds differently from the fused
    step's, and these random weights decode long runs of near-tied tokens, so (as
    test_half_precision_gpu_close_to_cpu) the windows agree with the fused step's on their
    first tokens."""
    persistent = _load(seeded_dir, compute_type, monkeypatch, SPEECHCORE_PERSISTENT_STEP="1")
    fused = _load(seeded_dir, compute_type, monkeypatch, **EIGHT_KERNELS)
    assert fused.info["decoder_step"] == "fused"
    if persistent.info["decoder_step"] != "persistent":
        pytest.skip("this GPU cannot run the persistent step (needs compute capability 9.0 and cooperative launch)")
    agree = sum(_agrees(persistent, fused, a, OPTS, compute_type) for _, a in speech_audio[:4])
    assert agree >= 3, agree


@pytest.mark.parametrize("compute_type", ["float16", "bfloat16"])
@pytest.mark.parametrize("switches,step", [
    (("SPEECHCORE_CROSS_QUERY_FUSED",), "fused+cross_query"),
    (("SPEECHCORE_SELF_QKV_FUSED",), "fused+self_qkv"),
    (("SPEECHCORE_SELF_QKV_FUSED", "SPEECHCORE_CROSS_QUERY_FUSED"), "fused+self_qkv+cross_query"),
])
def test_one_kernel_attention_sublayers_agree_with_the_fused_step(seeded_dir, speech_audio, monkeypatch,  # noqa: F811
                                                                  compute_type, switches, step):
    """SPEECHCORE_CROSS_QUERY_FUSED=1 / SPEECHCORE_SELF_QKV_FUSED=1: a one-row step's attention
    sub-layers run their products inside the attention kernel (cuda::cross_query_attention,
    cuda::self_qkv_attention). The products and the KV cache are the fused step's bit for bit, the
    key splits merge in another order, so (as the persistent step's test) the windows agree with
    the fused step's on their first tokens; float32 never takes them."""
    env = dict(EIGHT_KERNELS, **{k: "1" for k in switches})
    one = _load(seeded_dir, compute_type, monkeypatch, **env)
    if not one.info["decoder_step"].startswith("fused+"):
        pytest.skip("this GPU cannot run the one-kernel sub-layers (needs compute capability 9.0)")
    assert one.info["decoder_step"] == step
    assert _load(seeded_dir, "float32", monkeypatch, **env).info["decoder_step"] == "fused"
    fused = _load(seeded_dir, compute_type, monkeypatch, **EIGHT_KERNELS)
    assert fused.info["decoder_step"] == "fused"
    agree = sum(_agrees(one, fused, a, opts, compute_type)
                for _, a in speech_audio[:4] for opts in (OPTS, dict(OPTS, without_timestamps=False)))
    assert agree >= 6, agree


@pytest.mark.parametrize("compute_type", ["float16", "bfloat16"])
def test_output_fold_agrees_with_the_six_kernel_step(seeded_dir, speech_audio, monkeypatch,  # noqa: F811
                                                     compute_type):
    """SPEECHCORE_OUT_FOLD=1: a one-row step's attention output products run inside the one-kernel
    attention sub-layers, each head adding its partial features to int64 fixed-point accumulators
    that fc1 reads and fc2's epilogue adds to the residual and zeroes (4 kernels a layer). The
    products sum in another order, so the windows agree with the 6-kernel step's on their first
    tokens; integer sums do not depend on the order of the atomic adds, so a window decodes the
    same tokens again, also after a two-row batch has run between (the accumulators are left
    zero)."""
    fold = _load(seeded_dir, compute_type, monkeypatch, SPEECHCORE_OUT_FOLD="1")
    if "+out_fold" not in fold.info["decoder_step"]:
        pytest.skip("this GPU cannot run the one-kernel sub-layers (needs compute capability 9.0)")
    assert fold.info["decoder_step"] == "fused+self_qkv+cross_query+out_fold"
    assert _load(seeded_dir, "float32", monkeypatch, SPEECHCORE_OUT_FOLD="1").info["decoder_step"] == "fused"
    six = speechcore.load(str(seeded_dir), device="cuda", compute_type=compute_type)
    assert six.info["decoder_step"] == "fused+self_qkv+cross_query"
    agree = sum(_agrees(fold, six, a, opts, compute_type)
                for _, a in speech_audio[:4] for opts in (OPTS, dict(OPTS, without_timestamps=False)))
    assert agree >= 6, agree
    audio = speech_audio[0][1]
    first = _summary(fold.transcribe(audio, **OPTS))
    assert sum(len(t) for t, _ in first) > 5
    fold.transcribe_batch([a for _, a in speech_audio[1:3]], **OPTS)
    assert _summary(fold.transcribe(audio, **OPTS)) == first


@pytest.mark.parametrize("compute_type", ["float16", "bfloat16"])
def test_one_kernel_sublayers_on_two_row_steps(seeded_dir, speech_audio, monkeypatch, compute_type):  # noqa: F811
    """SPEECHCORE_SUBLAYER_ROWS=2: two-row fused steps run the one-kernel attention sub-layers too
    (a cluster per row and head; by default only one-row steps do). A batch of two windows starts
    as the 8-kernel step's batch does (the key splits merge in another order)."""
    two = _load(seeded_dir, compute_type, monkeypatch, SPEECHCORE_SUBLAYER_ROWS="2")
    if not two.info["decoder_step"].startswith("fused+"):
        pytest.skip("this GPU cannot run the one-kernel sub-layers (needs compute capability 9.0)")
    eight = _load(seeded_dir, compute_type, monkeypatch, **EIGHT_KERNELS)
    pair = [a for _, a in speech_audio[:2]]
    agree = 0
    for opts in (OPTS, dict(OPTS, without_timestamps=False)):
        want = [_tokens(r) for r in eight.transcribe_batch(pair, batch_size=2, **opts)]
        got = [_tokens(r) for r in two.transcribe_batch(pair, batch_size=2, **opts)]
        agree += sum(_starts_alike(g, w, compute_type) for g, w in zip(got, want))
    assert agree >= 3, agree
