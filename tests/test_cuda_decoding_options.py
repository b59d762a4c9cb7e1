"""Decoding options on the GPU, real tiny.en weights, against the CPU path (the oracle) in
float32: beam search, sampling, the fallback, penalties, prefix and word timestamps through
transcribe and the engine; and the VAD modes:
vad_filter=True through transcribe and the engine, and the batched VAD-chunked mode
(transcribe_chunked on the engine, transcribe(chunked=True) without it) give the CPU's tokens
and times. The Silero weights come from the silero-vad package, or from
.cache/vad/silero_vad_16k.safetensors / SPEECHCORE_TEST_VAD_WEIGHTS (the GPU machine has no
model packages)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import speechcore

pytestmark = pytest.mark.cuda
SR = 16000


@pytest.fixture(scope="module")
def vad_weights() -> str:
    for c in (os.environ.get("SPEECHCORE_TEST_VAD_WEIGHTS"),
              Path(__file__).resolve().parent.parent / ".cache/vad/silero_vad_16k.safetensors"):
        if c and Path(c).is_file():
            return str(c)
    from speechcore import vad

    try:
        return str(vad.silero_vad_weights())
    except speechcore.NotFoundError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def gapped(speech_audio) -> np.ndarray:
    """Eight real clips with 2.5-4 s of silence around each (~58 s, several VAD chunks)."""
    rng = np.random.default_rng(11)
    parts = [np.zeros(3 * SR, np.float32)]
    for _, a in speech_audio[:8]:
        parts += [a, np.zeros(int(SR * rng.uniform(2.5, 4.0)), np.float32)]
    return np.concatenate(parts)


def _segs(t):
    return [(s.tokens, round(s.start, 3), round(s.end, 3)) for s in t.segments]


def test_vad_modes_on_gpu_match_cpu(tiny_dir, gapped, vad_weights):
    cpu = speechcore.load(str(tiny_dir), device="cpu", threads=8)
    gpu = speechcore.load(str(tiny_dir), device="cuda", compute_type="float32")
    try:
        opts = dict(language="en", vad_model_path=vad_weights, beam_size=1, temperature=0.0)
        want = cpu.transcribe(gapped, vad_filter=True, **opts)
        assert want.segments  # speech was found
        assert _segs(gpu.transcribe(gapped, vad_filter=True, **opts)) == _segs(want)
        assert _segs(gpu.submit(gapped, vad_filter=True, **opts).result(timeout=300)) == _segs(want)
        for wt in (True, False):
            want_c = cpu.transcribe(gapped, chunked=True, without_timestamps=wt, **opts)
            assert len(want_c.segments) >= 2
            assert _segs(gpu.transcribe(gapped, chunked=True, without_timestamps=wt, **opts)) == _segs(want_c), wt
            assert _segs(gpu.transcribe_chunked(gapped, without_timestamps=wt, **opts)) == _segs(want_c), wt
    finally:
        cpu.close()
        gpu.close()


def _tokens(t):
    return [s.tokens for s in t.segments]


def test_cuda_beam_search_and_sampling_match_cpu(tiny_dir, speech_audio, longform_audio):
    """Beam search, best-of sampling and the temperature fallback on the GPU (transcribe):
    float32 tokens identical to the CPU's on real clips and the 70 s long-form file (sampling
    draws the same numbers from the same seed; the GPU's float32 log-probs differ from the
    CPU's by rounding only, far from any draw's boundary on real speech)."""
    cpu = speechcore.load(str(tiny_dir), device="cpu", threads=8)
    gpu = speechcore.load(str(tiny_dir), device="cuda", compute_type="float32")
    try:
        settings = [dict(beam_size=5), dict(beam_size=3, patience=2.0),
                    dict(temperature=0.6, best_of=4, seed=3),
                    # every window fails the log-prob threshold: all six temperatures run
                    dict(temperature=[0.0, 0.2, 0.4, 0.6, 0.8, 1.0], log_prob_threshold=0.0, beam_size=2, seed=5)]
        for opts in settings:
            for name, audio in speech_audio[:4]:
                want = cpu.transcribe(audio, language="en", **opts)
                got = gpu.transcribe(audio, language="en", **opts)
                assert _tokens(got) == _tokens(want), (opts, name)
                assert [s.temperature for s in got.segments] == [s.temperature for s in want.segments], (opts, name)
        want = cpu.transcribe(longform_audio, language="en", beam_size=5)
        got = gpu.transcribe(longform_audio, language="en", beam_size=5)
        assert _tokens(got) == _tokens(want)
        assert [(round(s.start, 2), round(s.end, 2)) for s in got.segments] == \
            [(round(s.start, 2), round(s.end, 2)) for s in want.segments]
        # bfloat16: the same words as the CPU on the clips (WER-level agreement)
        half = speechcore.load(str(tiny_dir), device="cuda", compute_type="bfloat16")
        same = sum(half.transcribe(a, language="en", beam_size=5).text == cpu.transcribe(a, language="en",
                                                                                         beam_size=5).text
                   for _, a in speech_audio)
        assert same >= len(speech_audio) - 2, same
        half.close()
    finally:
        cpu.close()
        gpu.close()


def test_cuda_engine_search_matches_cpu(tiny_dir, speech_audio, longform_audio):
    """The engine on the GPU (submit, transcribe_batch) runs beam search, sampling, the
    fallback, penalties and a prefix (hotwords, clip_timestamps too) with each window's beams or candidates as rows of the
    shared decoder batch (one encoder output per window, KV blocks per row): float32 tokens
    identical to the CPU's, for requests submitted together and mixed with greedy ones; and the
    same through transcribe (penalties and prefix run the host-side rules there)."""
    cpu = speechcore.load(str(tiny_dir), device="cpu", threads=8)
    gpu = speechcore.load(str(tiny_dir), device="cuda", compute_type="float32")
    greedy = dict(beam_size=1, temperature=0.0)
    try:
        clips = [a for _, a in speech_audio[:4]]
        want_greedy = [_tokens(cpu.transcribe(a, language="en", **greedy)) for a in clips]
        settings = [dict(beam_size=5, temperature=0.0), dict(beam_size=3, patience=2.0, length_penalty=0.6),
                    dict(temperature=0.6, best_of=4, seed=3),
                    dict(temperature=[0.0, 0.2, 0.4, 0.6, 0.8, 1.0], log_prob_threshold=0.0, beam_size=2, seed=5),
                    dict(repetition_penalty=1.5, no_repeat_ngram_size=2, **greedy),
                    dict(prefix="And so", **greedy), dict(prefix="And so", beam_size=4, temperature=0.0),
                    dict(hotwords="Dashwood", **greedy), dict(clip_timestamps=[1.0, 5.0], **greedy)]
        for opts in settings:
            want = [_tokens(cpu.transcribe(a, language="en", **opts)) for a in clips]
            assert [_tokens(gpu.transcribe(a, language="en", **opts)) for a in clips] == want, opts
            futures = [gpu.submit(a, language="en", **opts) for a in clips]
            plain = [gpu.submit(a, language="en", **greedy) for a in clips]
            assert [_tokens(f.result(timeout=300)) for f in futures] == want, opts
            assert [_tokens(f.result(timeout=300)) for f in plain] == want_greedy, opts
            assert [_tokens(t) for t in gpu.transcribe_batch(clips, language="en", **opts)] == want, opts
        want = cpu.transcribe(longform_audio, language="en", beam_size=5, temperature=0.0)
        got = gpu.submit(longform_audio, language="en", beam_size=5, temperature=0.0).result(timeout=600)
        assert _tokens(got) == _tokens(want)
        assert [(round(s.start, 2), round(s.end, 2)) for s in got.segments] == \
            [(round(s.start, 2), round(s.end, 2)) for s in want.segments]
    finally:
        cpu.close()
        gpu.close()


def test_cuda_engine_beams_under_memory_pressure(tiny_dir, speech_audio, longform_audio):
    """A KV pool too small for every beam window at once: windows wait or are preempted and
    recomputed, and every result still equals the CPU's; a window with more beams than the
    decoder batch is refused with a typed error."""
    cpu = speechcore.load(str(tiny_dir), device="cpu", threads=8)
    gpu = speechcore.load(str(tiny_dir), device="cuda", compute_type="float32")
    try:
        gpu.start_engine(max_batch=12, kv_blocks=120, kv_block_size=16)
        opts = dict(language="en", beam_size=4, temperature=0.0)
        clips = [a for _, a in speech_audio[:8]]
        want = [_tokens(cpu.transcribe(a, **opts)) for a in clips]
        futures = [gpu.submit(a, **opts) for a in clips]
        assert [_tokens(f.result(timeout=300)) for f in futures] == want
        # A pool of 64 blocks (the engine accepts a 4-row window whose whole context fits) and
        # three copies of the 70 s file, not conditioned on previous text, so each 30 s window
        # grows to ~28 blocks: the first windows to outgrow the pool preempt the last ones,
        # which are recomputed (prompt and tokens so far, every row) and still give the CPU's
        # tokens.
        gpu.close()
        gpu.start_engine(max_batch=12, kv_blocks=64, kv_block_size=16)
        long_opts = dict(opts, condition_on_previous_text=False)
        want_long = _tokens(cpu.transcribe(longform_audio, **long_opts))
        futures = [gpu.submit(longform_audio, **long_opts) for _ in range(3)]
        assert [_tokens(f.result(timeout=300)) for f in futures] == [want_long] * 3
        assert gpu.engine_stats()["preemptions"] > 0
        with pytest.raises(speechcore.InvalidArgumentError, match="rows"):
            gpu.submit(clips[0], language="en", beam_size=13, temperature=0.0).result(timeout=60)
    finally:
        cpu.close()
        gpu.close()


def _words(t):
    return [(w.word, w.start, w.end, w.probability) for s in t.segments for w in s.words]


def _close(got, want, seconds=0.02, prob=1e-3):
    assert len(got) == len(want), (len(got), len(want))
    for g, w in zip(got, want):
        assert g[0] == w[0] and abs(g[1] - w[1]) <= seconds and abs(g[2] - w[2]) <= seconds, (g, w)
        assert abs(g[3] - w[3]) <= prob, (g, w)


def test_cuda_word_timestamps_match_cpu(tiny_dir, speech_audio, longform_audio):
    """Word timestamps on the GPU (the alignment heads' cross-attention captured in a prefill,
    DTW on the host) in float32: the CPU's words, times within 20 ms and probabilities within
    1e-3, through transcribe, submit and transcribe_batch, on clips and the 70 s file; with
    hallucination_silence_threshold too."""
    cpu = speechcore.load(str(tiny_dir), device="cpu", threads=8)
    gpu = speechcore.load(str(tiny_dir), device="cuda", compute_type="float32")
    opts = dict(language="en", word_timestamps=True, beam_size=1, temperature=0.0)
    try:
        clips = [a for _, a in speech_audio[:4]]
        want = [cpu.transcribe(a, **opts) for a in clips]
        assert sum(len(_words(w)) for w in want) > 20
        for w, a in zip(want, clips):
            _close(_words(gpu.transcribe(a, **opts)), _words(w))
        for w, f in zip(want, [gpu.submit(a, **opts) for a in clips]):
            _close(_words(f.result(timeout=300)), _words(w))
        for w, t in zip(want, gpu.transcribe_batch(clips, **opts)):
            _close(_words(t), _words(w))
        for extra in (dict(), dict(hallucination_silence_threshold=1.0), dict(beam_size=5)):
            o = dict(opts, **extra)
            want_long = cpu.transcribe(longform_audio, **o)
            got_long = gpu.transcribe(longform_audio, **o)
            assert _tokens(got_long) == _tokens(want_long), extra
            _close(_words(got_long), _words(want_long))
    finally:
        cpu.close()
        gpu.close()


def test_language_detection_on_cuda(base_dir):
    """The CUDA backend detects the language through its own prompt logits (float32: the CPU's
    probabilities) on the espeak-ng French/German/Spanish fixtures, in transcribe and on the
    engine (transcribe_batch). (Here rather than in test_language.py, which needs
    faster-whisper: the GPU machine has no model packages.)"""
    import soundfile as sf

    clips = {}
    for code in ("fr", "de", "es"):
        audio, rate = sf.read(str(Path(__file__).parent / "data" / f"lang_{code}.wav"), dtype="float32")
        assert rate == SR
        clips[code] = audio
    gpu = speechcore.load(str(base_dir), device="cuda", compute_type="float32")
    cpu = speechcore.load(str(base_dir), device="cpu")
    try:
        for code, audio in clips.items():
            g, c = gpu.detect_language(audio), cpu.detect_language(audio)
            assert g[0] == c[0] == code and g[1] == pytest.approx(c[1], abs=2e-3)
        t = gpu.transcribe(clips["fr"])
        b = gpu.transcribe_batch([clips["fr"], clips["de"]])
        assert t.language == b[0].language == "fr" and b[1].language == "de"
        assert [s.tokens for s in t.segments] == [s.tokens for s in b[0].segments]
    finally:
        gpu.close()
        cpu.close()
