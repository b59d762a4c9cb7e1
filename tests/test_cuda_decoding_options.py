"""Decoding options on the GPU, real tiny.en weights: what the CUDA backend does not run yet
(beam search, sampling, penalties, word timestamps) is refused with UnsupportedError naming
the option on every path, never decoded greedily instead; and the VAD modes against the CPU
path (the oracle) in float32:
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


def test_cuda_rejects_search_it_lacks(tiny_dir):
    """Beams and sampling run through transcribe but not yet on the engine (transcribe_batch,
    submit): refused there before any window runs; penalties and word timestamps are refused
    everywhere (UnsupportedError naming the option, never decoded greedily); greedy still works."""
    model = speechcore.load(str(tiny_dir), device="cuda")
    audio = np.zeros(16000, np.float32)
    greedy = dict(beam_size=1, temperature=0.0)  # each case changes one option of greedy decoding
    for options, name, direct in [(dict(greedy, beam_size=5), "beam_size", True),
                                  (dict(greedy, temperature=[0.0, 0.2]), "temperature", True),
                                  (dict(greedy, repetition_penalty=1.2), "repetition_penalty", False),
                                  (dict(greedy, no_repeat_ngram_size=3), "no_repeat_ngram_size", False),
                                  (dict(greedy, word_timestamps=True), "word_timestamps", False)]:
        if direct:
            model.transcribe(audio, sample_rate=16000, language="en", **options)
        else:
            with pytest.raises(speechcore.UnsupportedError, match=name):
                model.transcribe(audio, sample_rate=16000, language="en", **options)
        with pytest.raises(speechcore.UnsupportedError, match=name):
            model.transcribe_batch([audio], sample_rate=16000, language="en", **options)
        with pytest.raises(speechcore.UnsupportedError, match=name):
            model.submit(audio, sample_rate=16000, language="en", **options).result(timeout=60)
    model.transcribe(audio, sample_rate=16000, beam_size=1, temperature=0.0)  # greedy still works
    model.close()
