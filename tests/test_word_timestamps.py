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


def _fw(model, audio, **options):
    segments, _ = model.transcribe(audio, vad_filter=False, **{**OPTIONS, **options})
    return list(segments)


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    ours = speechcore.load(str(tiny_dir), device="cpu", threads=2)
    theirs = faster_whisper.WhisperModel(str(tiny_dir), device="cpu", compute_type="float32", cpu_threads=2)
    yield ours, theirs
    ours.close()


def test_clips_words_match_faster_whisper(tiny, speech_audio):
    ours, theirs = tiny
    for clip, audio in speech_audio[:3] + speech_audio[5:7] + speech_audio[-1:]:  # librivox, cards, goforward
        fw = _fw(theirs, audio)
        sc = ours.transcribe(audio, sample_rate=16000, **OPTIONS)
        _assert_same(sc, fw, f"tiny.en {clip}")
        for s in sc.segments:  # the words make up the segment text
            assert "".join(w.word for w in s.words) == s.text


def test_longform_words_match_faster_whisper(tiny, longform_audio):
    ours, theirs = tiny
    fw = _fw(theirs, longform_audio)
    sc = ours.transcribe(longform_audio, sample_rate=16000, **OPTIONS)
    plain = ours.transcribe(longform_audio, sample_rate=16000, **dict(OPTIONS, word_timestamps=False))
    assert sc.segments[-1].start > 60.0
    # word timestamps move segment boundaries and window seeks
    assert [(s.start, s.end) for s in sc.segments] != [(s.start, s.end) for s in plain.segments]
    _assert_same(sc, fw, "tiny.en long-form")


def test_base_words_match_faster_whisper(base_dir, speech_audio, longform_audio):
    """base (its alignment heads span three decoder layers): three clips and two windows of the
    long-form file (tiny.en covers six clips and the whole file)."""
    ours = speechcore.load(str(base_dir), device="cpu", threads=2)
    theirs = faster_whisper.WhisperModel(str(base_dir), device="cpu", compute_type="float32", cpu_threads=2)
    for clip, audio in speech_audio[:2] + speech_audio[6:7] + [("long-form", longform_audio[: 45 * 16000])]:
        _assert_same(ours.transcribe(audio, sample_rate=16000, **OPTIONS), _fw(theirs, audio), f"base {clip}")
    ours.close()


def _silences(speech_audio, noise: float) -> np.ndarray:
    """Four real clips after 8-25 s of quiet noise each (~80 s): tiny.en hallucinates short
    words in the noise (in the first 50 s too), which hallucination_silence_threshold skips."""
    rng = np.random.default_rng(0)
    parts = []
    for seconds, (_, a) in zip([12, 25, 8, 18], speech_audio[:3] + speech_audio[5:6]):
        parts += [rng.normal(0, noise, seconds * 16000).astype(np.float32), a]
    return np.concatenate(parts)


def test_hallucination_silence_threshold_matches_faster_whisper(tiny, speech_audio):
    ours, theirs = tiny
    audio = _silences(speech_audio, 0.01)[: 50 * 16000]
    fw = _fw(theirs, audio, hallucination_silence_threshold=1.0)
    sc = ours.transcribe(audio, sample_rate=16000, **OPTIONS, hallucination_silence_threshold=1.0)
    _assert_same(sc, fw, "hallucination_silence_threshold=1.0")
    # the threshold really skipped something here (without it: the words hallucinated in the noise)
    off = ours.transcribe(audio, sample_rate=16000, **OPTIONS)
    assert [s.text for s in off.segments] != [s.text for s in sc.segments]


def test_batch_and_engine_equal_transcribe(tiny, speech_audio, longform_audio):
    ours, _ = tiny
    audios = [speech_audio[6][1], longform_audio[: 45 * 16000]]  # the second one: two windows
    want = [ours.transcribe(a, sample_rate=16000, **OPTIONS) for a in audios]
    got = ours.transcribe_batch(audios, sample_rate=16000, **OPTIONS)
    assert [g.to_dict() for g in got] == [w.to_dict() for w in want]
    streamed = list(ours.transcribe_stream(audios[0], sample_rate=16000, **OPTIONS))
    assert [s.words for s in streamed] == [s.words for s in want[0].segments]
    # beam search with words, through the engine too
    beam = dict(OPTIONS, beam_size=3)
    assert ours.submit(audios[0], sample_rate=16000, **beam).result().to_dict() == \
        ours.transcribe(audios[0], sample_rate=16000, **beam).to_dict()


def test_vad_filter_words_match_faster_whisper(tiny, speech_audio, tmp_path):
    pytest.importorskip("onnx")
    from vad_oracle import faster_whisper_weights

    ours, theirs = tiny
    weights = tmp_path / "fw_silero.safetensors"
    faster_whisper_weights(weights)
    audio = _silences(speech_audio, 0.0)[: 40 * 16000]
    fw, _ = theirs.transcribe(audio, vad_filter=True, **OPTIONS)
    sc = ours.transcribe(audio, sample_rate=16000, vad_filter=True, vad_model_path=str(weights), **OPTIONS)
    _assert_same(sc, list(fw), "vad_filter")


def test_options_and_errors(tiny, speech_audio):
    ours, _ = tiny
    audio = speech_audio[0][1]
    plain = ours.transcribe(audio, sample_rate=16000, language="en")
    assert all(s.words is None for s in plain.segments)
    # other punctuation sets change how words are merged, as in faster-whisper
    sc = ours.transcribe(audio, sample_rate=16000, **OPTIONS, append_punctuations="")
    assert any(w.word.strip() in (",", ".") for s in sc.segments for w in s.words)
    with pytest.raises(speechcore.UnsupportedError, match="word_timestamps"):
        ours.transcribe(audio, sample_rate=16000, **OPTIONS, chunked=True, vad_model_path="x")
    for bad in (dict(word_timestamps="yes"), dict(hallucination_silence_threshold=float("nan")),
                dict(prepend_punctuations=3)):
        with pytest.raises(speechcore.InvalidArgumentError):
            ours.transcribe(audio, sample_rate=16000, language="en", **bad)


def test_cli_json_has_words(tiny_dir, speech_clips, tmp_path, capsys):
    import json

    from speechcore import cli

    assert cli.main(["transcribe", "--model", str(tiny_dir), "--threads", "2", "--word-timestamps", "-f", "json",
                     "-o", str(tmp_path), str(speech_clips[5])]) == 0
    d = json.loads((tmp_path / (speech_clips[5].stem + ".json")).read_text())
    words = [w for s in d["segments"] for w in s["words"]]
    assert words and {"start", "end", "word", "probability"} <= set(words[0])
