"""Token-for-token parity with faster-whisper (CTranslate2) on the same CT2 checkpoints:
greedy decoding, temperature 0, condition_on_previous_text=True, no VAD, real speech."""

from __future__ import annotations

import numpy as np
import pytest
import speechcore
from conftest import edit_distance

faster_whisper = pytest.importorskip("faster_whisper")

FW_OPTIONS = dict(language="en", beam_size=1, temperature=0.0, condition_on_previous_text=True, vad_filter=False)


def _fw_segments(model, audio):
    segments, info = model.transcribe(audio, **FW_OPTIONS)
    return list(segments), info


def _assert_same(ours, theirs, label):
    got = [(s.tokens, s.start, s.end, s.text) for s in ours.segments]
    want = [(list(s.tokens), s.start, s.end, s.text) for s in theirs]
    assert [g[0] for g in got] == [w[0] for w in want], f"{label}: tokens differ"
    for g, w in zip(got, want):
        assert g[1] == pytest.approx(w[1], abs=1e-9) and g[2] == pytest.approx(w[2], abs=1e-9), label
        assert g[3] == w[3], label
    for s, w in zip(ours.segments, theirs):
        assert s.avg_logprob == pytest.approx(w.avg_logprob, abs=2e-3), label
        assert s.no_speech_prob == pytest.approx(w.no_speech_prob, abs=2e-3), label
        assert s.compression_ratio == pytest.approx(w.compression_ratio, rel=1e-6), label


@pytest.fixture(scope="module", params=["tiny.en", "base"])
def pair(request):
    d = request.getfixturevalue("tiny_dir" if request.param == "tiny.en" else "base_dir")
    ours = speechcore.load(str(d), device="cpu", threads=2)
    theirs = faster_whisper.WhisperModel(str(d), device="cpu", compute_type="float32", cpu_threads=2)
    return request.param, ours, theirs


def test_clips_match_faster_whisper(pair, speech_audio):
    name, ours, theirs = pair
    for clip, audio in speech_audio:
        fw, _ = _fw_segments(theirs, audio)
        sc = ours.transcribe(audio, sample_rate=16000, **FW_OPTIONS)
        assert len(fw) >= 1
        _assert_same(sc, fw, f"{name} {clip}")


def test_longform_matches_faster_whisper(pair, longform_audio):
    name, ours, theirs = pair
    fw, info = _fw_segments(theirs, longform_audio)
    sc = ours.transcribe(longform_audio, sample_rate=16000, **FW_OPTIONS)
    assert sc.duration == pytest.approx(info.duration)
    assert sc.segments[-1].start > 30.0  # really crossed into later windows
    _assert_same(sc, fw, f"{name} long-form")


def test_transcripts_are_right(tiny_dir, testdata):
    """Not only equal to the oracle: close to the human reference transcripts."""
    from conftest import LIBRIVOX_REFS

    model = speechcore.load(str(tiny_dir), threads=2)
    errors = words = 0
    for fname, ref in LIBRIVOX_REFS.items():
        text = model.transcribe(str(testdata / "librivox" / fname)).text
        hyp = "".join(c for c in text.lower() if c.isalnum() or c.isspace() or c == "'").replace("-", " ").split()
        r = ref.split()
        errors += edit_distance(hyp, r)
        words += len(r)
    assert errors / words < 0.15, errors / words

