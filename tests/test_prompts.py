"""prefix, hotwords, initial_prompt and clip_timestamps: token-for-token parity with faster-whisper
1.2.1 (CTranslate2) on real speech (tiny.en and base), the same results through transcribe_batch
(the engine), and typed errors for bad values."""

from __future__ import annotations

import numpy as np
import pytest
import speechcore
from conftest import GREEDY
from speechcore.errors import InvalidArgumentError

faster_whisper = pytest.importorskip("faster_whisper")


def _assert_same(ours, theirs, label):
    assert [s.tokens for s in ours.segments] == [list(s.tokens) for s in theirs], f"{label}: tokens differ"
    for s, w in zip(ours.segments, theirs):
        assert s.start == pytest.approx(w.start, abs=1e-9) and s.end == pytest.approx(w.end, abs=1e-9), label
        assert s.seek == w.seek and s.text == w.text, label
        assert s.avg_logprob == pytest.approx(w.avg_logprob, abs=2e-3), label
        assert s.no_speech_prob == pytest.approx(w.no_speech_prob, abs=2e-3), label


def _check(ours, theirs, audio, label, **options):
    options = dict(GREEDY, **options)  # greedy unless a beam_size is given, no fallback, in both
    fw, _ = theirs.transcribe(audio, vad_filter=False, **options)
    fw = list(fw)
    assert fw, label
    sc = ours.transcribe(audio, **options)
    _assert_same(sc, fw, label)
    return sc


@pytest.fixture(scope="module")
def tiny_pair(tiny_dir):
    ours = speechcore.load(str(tiny_dir), device="cpu", threads=2)
    theirs = faster_whisper.WhisperModel(str(tiny_dir), device="cpu", compute_type="float32", cpu_threads=2)
    return ours, theirs


@pytest.fixture(scope="module")
def clip(speech_audio):
    return dict(speech_audio)["sense_and_sensibility_01_austen_64kb-0870.wav"]  # "and mister john dashwood ..."


def test_prefix_matches_faster_whisper(tiny_pair, clip):
    ours, theirs = tiny_pair
    sc = _check(ours, theirs, clip, "prefix", prefix="And Mr. John Dashwood")
    assert sc.text.startswith("And Mr. John Dashwood")
    assert sc.segments[0].tokens[0] == 50363  # tiny.en's <|0.00|> leads the window (timestamps on)
    _check(ours, theirs, clip, "prefix beam", prefix="And Mr. John", beam_size=3)
    _check(ours, theirs, clip, "prefix penalties", prefix="And Mr.", repetition_penalty=1.3,
           no_repeat_ngram_size=2)


def test_hotwords_and_initial_prompt_match_faster_whisper(tiny_pair, speech_audio, clip):
    ours, theirs = tiny_pair
    _check(ours, theirs, clip, "hotwords", hotwords="Dashwood prudently")
    audio = dict(speech_audio)["sense_and_sensibility_01_austen_64kb-0880.wav"]
    _check(ours, theirs, audio, "hotwords + initial_prompt", hotwords="ill disposed",
           initial_prompt="Sense and Sensibility.")


def test_clip_timestamps_match_faster_whisper(tiny_pair, longform_audio):
    """Clips in a > 60 s recording: windows stop at a clip's end, the previous text carries over,
    hotwords prompt every window; faster-whisper's comma string with an odd count."""
    ours, theirs = tiny_pair
    sc = _check(ours, theirs, longform_audio, "clips", clip_timestamps=[5.0, 12.0, 33.5, 40.25], hotwords="Dashwood")
    # (a segment may end after its clip: the model's last timestamp, as in faster-whisper)
    assert sc.segments[0].start >= 5.0 and 33.5 <= sc.segments[-1].start < 40.25
    assert any(s.start < 12.0 for s in sc.segments)
    sc = _check(ours, theirs, longform_audio, "clips string", clip_timestamps="62.5")
    assert sc.segments[0].start >= 62.5
    _check(ours, theirs, longform_audio, "clips + prefix", clip_timestamps=[0, 8.5, 20, 27], prefix="And Mr.",
           without_timestamps=True)


def test_base_prefix_and_clips_match_faster_whisper(base_dir, clip, longform_audio):
    ours = speechcore.load(str(base_dir), device="cpu", threads=2)
    theirs = faster_whisper.WhisperModel(str(base_dir), device="cpu", compute_type="float32", cpu_threads=2)
    # with a prefix, the first window has no hotwords
    _check(ours, theirs, clip, "base prefix", language="en", prefix="And Mr. John Dashwood", hotwords="Austen")
    _check(ours, theirs, longform_audio, "base clips", language="en", clip_timestamps="61,65.5,3,9")


def test_engine_gives_the_same(tiny_pair, clip, longform_audio):
    ours, _ = tiny_pair
    cases = [dict(prefix="And Mr.", hotwords="Dashwood"), dict(clip_timestamps=[50, 62], hotwords="cards"),
             dict(clip_timestamps="58", without_timestamps=True, condition_on_previous_text=False)]
    for options in cases:
        audio = clip if "prefix" in options else longform_audio
        alone = ours.transcribe(audio, **options, **GREEDY)
        batch = ours.transcribe_batch([audio], **options, **GREEDY)[0]
        assert [s.tokens for s in batch.segments] == [s.tokens for s in alone.segments], options
        assert [(s.start, s.end) for s in batch.segments] == [(s.start, s.end) for s in alone.segments]


def test_vad_filter_is_skipped_with_clips(tiny_pair, longform_audio):
    """faster-whisper runs the VAD filter only without clip_timestamps (no weights needed then)."""
    ours, _ = tiny_pair
    a = ours.transcribe(longform_audio, clip_timestamps=[10, 14], vad_filter=True, vad_model_path="/nonexistent")
    b = ours.transcribe(longform_audio, clip_timestamps=[10, 14])
    assert [s.tokens for s in a.segments] == [s.tokens for s in b.segments] and b.segments


@pytest.mark.parametrize("value, match", [
    ("1,x", "comma"), ([1.0, -2.0], ">= 0"), ([5.0, 5.0], "at or before its start"), ([3, 1], "before its start"),
    ([float("nan")], "finite"), ({"start": 0}, "list of seconds"), (["1"], "number"),
])
def test_bad_clip_timestamps(tiny_pair, clip, value, match):
    ours, _ = tiny_pair
    with pytest.raises(InvalidArgumentError, match=match):
        ours.transcribe(clip, clip_timestamps=value)


def test_bad_prompt_options_native(tiny_pair, clip):
    """The C++ checks behind the Python ones (the native options dict as other callers send it)."""
    ours, _ = tiny_pair
    native = ours._native
    with pytest.raises(InvalidArgumentError, match="ends .* before it starts"):
        native.transcribe(clip, 16000, {"clip_timestamps": [4.0, 2.0]})
    with pytest.raises(InvalidArgumentError, match="clip_timestamps"):
        native.transcribe(clip, 16000, {"clip_timestamps": [-1.0]})
    with pytest.raises(InvalidArgumentError, match="chunked"):
        native.check_options({"clip_timestamps": [1.0], "chunked": True})
    with pytest.raises(InvalidArgumentError, match="prefix must be a string"):
        ours.transcribe(clip, prefix=3)
    with pytest.raises(InvalidArgumentError, match="option 'hotwords' must be a string"):
        native.transcribe(clip, 16000, {"hotwords": 3})
    # a clip beyond the audio decodes nothing (as faster-whisper), it is not an error
    assert ours.transcribe(clip, clip_timestamps=[100.0, 110.0]).segments == []


def test_chunk_length_matches_faster_whisper(tiny_dir, longform_audio):
    """chunk_length: windows of at most that many seconds of audio (zero-padded to 30 s), as
    faster-whisper's chunk_length; token-for-token on the 70 s recording, with word timestamps,
    and the same through the engine; out-of-range values are typed errors."""
    ours = speechcore.load(str(tiny_dir), device="cpu", threads=2)
    # a model of its own: faster-whisper keeps a call's chunk_length in its feature extractor
    theirs = faster_whisper.WhisperModel(str(tiny_dir), device="cpu", compute_type="float32", cpu_threads=2)
    default = ours.transcribe(longform_audio, **GREEDY)
    for seconds in (10, 17):
        sc = _check(ours, theirs, longform_audio, f"chunk_length={seconds}", chunk_length=seconds)
        assert [s.tokens for s in sc.segments] != [s.tokens for s in default.segments]
        batch = ours.transcribe_batch([longform_audio], chunk_length=seconds, **GREEDY)[0]
        assert [s.tokens for s in batch.segments] == [s.tokens for s in sc.segments]
    fw, _ = theirs.transcribe(longform_audio, vad_filter=False, chunk_length=12, word_timestamps=True, **GREEDY)
    fw = list(fw)
    sc = ours.transcribe(longform_audio, chunk_length=12, word_timestamps=True, **GREEDY)
    _assert_same(sc, fw, "chunk_length=12 words")
    got = [(w.word, w.start, w.end) for s in sc.segments for w in s.words]
    want = [(w.word, w.start, w.end) for s in fw for w in s.words]
    assert [g[0] for g in got] == [w[0] for w in want]
    assert np.allclose([g[1:] for g in got], [w[1:] for w in want], atol=0.011)
    for bad in (0, 31, 2.5, "10", True):
        with pytest.raises(InvalidArgumentError):
            ours.transcribe(longform_audio[:16000], chunk_length=bad)
    with pytest.raises(InvalidArgumentError):  # the native check, past the Python options
        ours._native.transcribe(longform_audio[:16000], 16000, {"chunk_length": 31})
