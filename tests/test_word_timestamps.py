"""Word-level timestamps (word_timestamps=True) and hallucination_silence_threshold, against
faster-whisper 1.2.1 on the same CTranslate2 checkpoints: the same words, start/end within one
alignment frame (20 ms, the issue's tolerance), word probabilities within 1e-3, and the same
transcripts (segment boundaries and window seeks follow the words)."""

from __future__ import annotations

import numpy as np
import pytest
import speechcore

faster_whisper = pytest.importorskip("faster_whisper")

OPTIONS = dict(language="en", beam_size=1, temperature=0.0, word_timestamps=True)
TIME_TOL = 0.02 + 1e-6  # one encoder frame
PROB_TOL = 1e-3


def _assert_same(ours, theirs, label):
    assert [s.tokens for s in ours.segments] == [list(s.tokens) for s in theirs], f"{label}: tokens differ"
    for s, w in zip(ours.segments, theirs):
        assert s.text == w.text, label
        assert s.start == pytest.approx(w.start, abs=TIME_TOL), label
        assert s.end == pytest.approx(w.end, abs=TIME_TOL), label
        assert s.words is not None and len(s.words) >= 1, label
        assert [x.word for x in s.words] == [x.word for x in w.words], f"{label}: words differ"
        for x, y in zip(s.words, w.words):
            assert x.start == pytest.approx(y.start, abs=TIME_TOL), f"{label}: {x} vs {y}"
            assert x.end == pytest.approx(y.end, abs=TIME_TOL), f"{label}: {x} vs {y}"
            assert x.probability == pytest.approx(y.probability, abs=PROB_TOL), f"{label}: {x} vs {y}"
    # Not only close: almost every time is exactly faster-whisper's.
    times = [(x.start, y.start) for s, w in zip(ours.segments, theirs) for x, y in zip(s.words, w.words)]
    exact = sum(abs(a - b) < 1e-9 for a, b in times)
    assert exact >= 0.9 * len(times), f"{label}: only {exact} of {len(times)} word starts are exact"


@pytest.fixture(scope="module", params=["tiny.en", "base"])
def pair(request):
    d = request.getfixturevalue("tiny_dir" if request.param == "tiny.en" else "base_dir")
    ours = speechcore.load(str(d), device="cpu", threads=2)
    theirs = faster_whisper.WhisperModel(str(d), device="cpu", compute_type="float32", cpu_threads=2)
    return request.param, ours, theirs


def _fw(model, audio, **options):
    segments, _ = model.transcribe(audio, vad_filter=False, **{**OPTIONS, **options})
    return list(segments)


def test_clips_words_match_faster_whisper(pair, speech_audio):
    name, ours, theirs = pair
    for clip, audio in speech_audio:
        fw = _fw(theirs, audio)
        sc = ours.transcribe(audio, sample_rate=16000, **OPTIONS)
        _assert_same(sc, fw, f"{name} {clip}")
        # words cover the segment text
        for s in sc.segments:
            assert "".join(w.word for w in s.words) == s.text


def test_longform_words_match_faster_whisper(pair, longform_audio):
    name, ours, theirs = pair
    fw = _fw(theirs, longform_audio)
    sc = ours.transcribe(longform_audio, sample_rate=16000, **OPTIONS)
    plain = ours.transcribe(longform_audio, sample_rate=16000, language="en")
    assert sc.segments[-1].start > 30.0
    # word timestamps move segment boundaries and window seeks
    assert [(s.start, s.end) for s in sc.segments] != [(s.start, s.end) for s in plain.segments]
    _assert_same(sc, fw, f"{name} long-form")
