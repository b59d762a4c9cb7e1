"""Language detection (language=None on a multilingual model, Model.detect_language) and
task="translate": the same languages, probabilities and tokens as faster-whisper 1.2.1 on the
multilingual `base` checkpoint, on espeak-ng sentences (tests/data/lang_*.wav, made by
tests/data/make_language_clips.py); the same results through transcribe_batch (the engine)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import speechcore
from conftest import GREEDY
from speechcore.errors import InvalidArgumentError

faster_whisper = pytest.importorskip("faster_whisper")

DATA = Path(__file__).parent / "data"
LANGS = ("fr", "de", "es")


@pytest.fixture(scope="module")
def clips():
    import soundfile as sf

    out = {}
    for code in LANGS:
        audio, rate = sf.read(str(DATA / f"lang_{code}.wav"), dtype="float32")
        assert rate == 16000
        out[code] = audio
    return out


@pytest.fixture(scope="module")
def base_pair(base_dir):
    ours = speechcore.load(str(base_dir), device="cpu", threads=2)
    theirs = faster_whisper.WhisperModel(str(base_dir), device="cpu", compute_type="float32", cpu_threads=2)
    return ours, theirs


def _fw(model, audio, **options):
    segments, info = model.transcribe(audio, **GREEDY, vad_filter=False, **options)
    return list(segments), info


def _assert_probs_close(ours, theirs):
    """Every language's probability within 1e-4 of faster-whisper's (same order up to ties)."""
    o, t = dict(ours), dict(theirs)
    assert set(o) == set(t) and len(o) == len(ours) == 99
    for code in t:
        assert o[code] == pytest.approx(t[code], abs=1e-4), code
    assert [c for c, _ in ours[:5]] == [c for c, _ in theirs[:5]]
    assert sum(o.values()) == pytest.approx(1.0, abs=1e-4)


def test_detect_language_matches_faster_whisper(base_pair, clips):
    ours, theirs = base_pair
    for code, audio in clips.items():
        language, probability, probs = ours.detect_language(audio)
        fw_language, fw_probability, fw_probs = theirs.detect_language(audio)
        assert language == fw_language == code  # the right language, not only the oracle's
        assert probability == pytest.approx(fw_probability, abs=1e-4)
        assert probs[0] == (language, probability)
        _assert_probs_close(probs, fw_probs)


def test_detection_in_transcribe_and_translate(base_pair, clips):
    """language=None detects the language as faster-whisper's transcribe does (its window includes
    the features' last frame), then decodes the same tokens; translate too."""
    ours, theirs = base_pair
    audio = clips["fr"]
    fw, info = _fw(theirs, audio)
    sc = ours.transcribe(audio, **GREEDY)
    assert sc.language == info.language == "fr"
    assert sc.language_probability == pytest.approx(info.language_probability, abs=1e-4)
    _assert_probs_close(sc.all_language_probs, info.all_language_probs)
    assert [s.tokens for s in sc.segments] == [list(s.tokens) for s in fw]
    assert sc.text == "".join(s.text for s in fw).strip()

    fw, info = _fw(theirs, clips["de"], task="translate")
    sc = ours.transcribe(clips["de"], task="translate", **GREEDY)
    assert sc.language == info.language == "de"
    assert [s.tokens for s in sc.segments] == [list(s.tokens) for s in fw]
    # the sot sequence asked for a translation: the output is English words, not German
    assert "Berlin" in sc.text and "Morgen" not in sc.text and "heiße" not in sc.text


def test_detection_segments_and_threshold(base_pair, clips):
    """language_detection_segments / _threshold as faster-whisper: more windows than one, a
    threshold nothing passes (majority vote, highest probability), a clip start."""
    ours, theirs = base_pair
    gap = np.zeros(16000 * 27, np.float32)
    # 30 s windows: German, then Spanish twice
    audio = np.concatenate([clips["de"], gap, clips["es"], gap, clips["es"], gap])
    # no window is sure enough: Spanish wins the vote (2 of 3 windows), with its best probability
    for segments, threshold, language in ((3, 0.99, "es"),):
        want = theirs.detect_language(audio, language_detection_segments=segments,
                                      language_detection_threshold=threshold)
        got = ours.detect_language(audio, language_detection_segments=segments,
                                   language_detection_threshold=threshold)
        assert got[0] == want[0] == language, (segments, threshold)
        assert got[1] == pytest.approx(want[1], abs=1e-4)
        _assert_probs_close(got[2], want[2])
    # transcribe: detection from the first clip's start
    kw = dict(clip_timestamps=[30.5, 35.0], max_new_tokens=5)
    fw, info = _fw(theirs, audio, **kw)
    sc = ours.transcribe(audio, **kw, **GREEDY)
    assert sc.language == info.language == "es"
    assert sc.language_probability == pytest.approx(info.language_probability, abs=1e-4)
    assert [s.tokens for s in sc.segments] == [list(s.tokens) for s in fw]


def test_engine_detects_the_same(base_pair, clips):
    ours, _ = base_pair
    alone = ours.transcribe(clips["es"], task="translate", max_new_tokens=12, **GREEDY)
    batch = ours.transcribe_batch([clips["es"], clips["de"]], task="translate", max_new_tokens=12, **GREEDY)
    assert alone.language == batch[0].language == "es" and batch[1].language == "de"
    assert alone.language_probability == batch[0].language_probability
    assert alone.all_language_probs == batch[0].all_language_probs
    assert [s.tokens for s in alone.segments] == [s.tokens for s in batch[0].segments]


def test_given_language_and_english_only(base_pair, tiny_dir, clips):
    ours, _ = base_pair
    t = ours.transcribe(clips["es"], language="es", max_new_tokens=3)
    assert (t.language, t.language_probability, t.all_language_probs) == ("es", 1.0, None)
    tiny = speechcore.load(str(tiny_dir), device="cpu", threads=2)
    t = tiny.transcribe(clips["es"], max_new_tokens=3)  # English-only: always English, as faster-whisper
    assert (t.language, t.language_probability, t.all_language_probs) == ("en", 1.0, None)
    with pytest.raises(InvalidArgumentError, match="multilingual"):
        tiny.detect_language(clips["fr"])
    with pytest.raises(InvalidArgumentError, match="multilingual"):
        tiny.transcribe(clips["fr"], task="translate")


def test_bad_detection_options(base_pair, clips):
    ours, _ = base_pair
    with pytest.raises(InvalidArgumentError, match="unknown language"):
        ours.transcribe(clips["fr"], language="xx")
    with pytest.raises(InvalidArgumentError, match="unknown language code"):
        ours._native.transcribe(clips["fr"], 16000, {"language": "xx"})  # the C++ check too
    with pytest.raises(InvalidArgumentError, match="language_detection_segments"):
        ours.transcribe(clips["fr"], language_detection_segments=0)
    with pytest.raises(InvalidArgumentError, match="language_detection_segments"):
        ours.detect_language(clips["fr"], language_detection_segments=0)
    with pytest.raises(InvalidArgumentError, match="language_detection_threshold"):
        ours.detect_language(clips["fr"], language_detection_threshold=float("nan"))
    with pytest.raises(InvalidArgumentError, match="segments"):
        ours._native.detect_language(clips["fr"], 16000, 0, 0.5)


def test_multilingual_detects_every_window(base_pair, clips):
    """multilingual=True (faster-whisper's): every 30 s window detects its own language on its
    encoder output and is decoded in it. Three windows (French, German, Spanish, each padded
    to 30 s), English given as the language: faster-whisper's tokens window by window, through
    transcribe and the engine; without the option every window is decoded as English, so the
    tokens differ. English-only models ignore it; CUDA refuses it (not here)."""
    ours, theirs = base_pair
    window = 30 * 16000
    audio = np.concatenate([np.pad(clips[c], (0, window - len(clips[c]))) for c in LANGS]).astype(np.float32)
    options = dict(language="en", without_timestamps=True, condition_on_previous_text=False)
    got = ours.transcribe(audio, **GREEDY, multilingual=True, **options)
    fw, info = _fw(theirs, audio, multilingual=True, **options)
    assert [s.tokens for s in got.segments] == [list(s.tokens) for s in fw]
    assert len(got.segments) == 3 and got.language == info.language == "en"
    engine = ours.submit(audio, **GREEDY, multilingual=True, **options).result(timeout=600)
    assert [s.tokens for s in engine.segments] == [s.tokens for s in got.segments]
    english = ours.transcribe(audio, **GREEDY, **options)
    assert [s.tokens for s in english.segments] != [s.tokens for s in got.segments]
    # word timestamps align each window with its own language in the start-of-transcript sequence
    words = ours.transcribe(audio, **GREEDY, multilingual=True, word_timestamps=True, **options)
    fw_words, _ = _fw(theirs, audio, multilingual=True, word_timestamps=True, **options)
    ours_w = [(w.word, w.start, w.end) for s in words.segments for w in s.words]
    theirs_w = [(w.word, w.start, w.end) for s in fw_words for w in s.words]
    assert [w[0] for w in ours_w] == [w[0] for w in theirs_w] and len(ours_w) > 10
    for a, b in zip(ours_w, theirs_w):
        assert a[1] == pytest.approx(b[1], abs=0.02) and a[2] == pytest.approx(b[2], abs=0.02), (a, b)
    with pytest.raises(InvalidArgumentError, match="multilingual"):
        ours.transcribe(audio, multilingual="yes")


def test_multilingual_is_ignored_by_english_only_models(tiny_dir, speech_audio):
    """As faster-whisper (which warns and turns it off): an English-only model decodes English."""
    tiny = speechcore.load(str(tiny_dir), device="cpu", threads=2)
    audio = speech_audio[0][1]
    assert [s.tokens for s in tiny.transcribe(audio, **GREEDY, multilingual=True).segments] == \
        [s.tokens for s in tiny.transcribe(audio, **GREEDY).segments]
