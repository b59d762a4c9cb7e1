"""Beam search (beam_size, patience, length_penalty, repetition_penalty, no_repeat_ngram_size)
on the CPU backend: token-for-token parity with faster-whisper 1.2.1 (CTranslate2) on the same
CT2 checkpoints and real speech, and the same results through transcribe_batch and the engine."""

from __future__ import annotations

import numpy as np
import pytest
import speechcore

faster_whisper = pytest.importorskip("faster_whisper")

BEAM = dict(language="en", beam_size=5, temperature=0.0, condition_on_previous_text=True)


def _fw(model, audio, **options):
    segments, info = model.transcribe(audio, vad_filter=False, **options)
    return list(segments)


def _assert_same(ours, theirs, label):
    assert [s.tokens for s in ours.segments] == [list(s.tokens) for s in theirs], f"{label}: tokens differ"
    for s, w in zip(ours.segments, theirs):
        assert s.start == pytest.approx(w.start, abs=1e-9) and s.end == pytest.approx(w.end, abs=1e-9), label
        assert s.text == w.text, label
        assert s.avg_logprob == pytest.approx(w.avg_logprob, abs=2e-3), label
        assert s.no_speech_prob == pytest.approx(w.no_speech_prob, abs=2e-3), label
        assert s.compression_ratio == pytest.approx(w.compression_ratio, rel=1e-6), label
        assert s.temperature == w.temperature, label


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    ours = speechcore.load(str(tiny_dir), device="cpu", threads=2)
    theirs = faster_whisper.WhisperModel(str(tiny_dir), device="cpu", compute_type="float32", cpu_threads=2)
    return ours, theirs


@pytest.fixture(scope="module")
def base(base_dir):
    ours = speechcore.load(str(base_dir), device="cpu", threads=2)
    theirs = faster_whisper.WhisperModel(str(base_dir), device="cpu", compute_type="float32", cpu_threads=2)
    return ours, theirs


@pytest.mark.parametrize("name", ["tiny", "base"])
def test_beam5_clips_match_faster_whisper(name, request, speech_audio):
    ours, theirs = request.getfixturevalue(name)
    for clip, audio in speech_audio:
        fw = _fw(theirs, audio, **BEAM)
        assert len(fw) >= 1
        _assert_same(ours.transcribe(audio, sample_rate=16000, **BEAM), fw, f"{name} {clip}")


@pytest.mark.parametrize("name", ["tiny", "base"])
def test_beam5_longform_matches_faster_whisper(name, request, longform_audio):
    ours, theirs = request.getfixturevalue(name)
    fw = _fw(theirs, longform_audio, **BEAM)
    sc = ours.transcribe(longform_audio, sample_rate=16000, **BEAM)
    assert sc.segments[-1].start > 30.0  # really crossed into later windows
    _assert_same(sc, fw, f"{name} long-form")


# Each variant takes another branch of the search: other widths, patience (more finished
# hypotheses), length_penalty 0 (early exit when the best beam ends) and 0.5, the repetition
# penalty and n-gram ban (also in greedy decoding), text-only windows.
VARIANTS = [
    dict(beam_size=2),
    dict(beam_size=3, patience=2.0),
    dict(beam_size=5, length_penalty=0.0),
    dict(beam_size=4, length_penalty=0.5),
    dict(beam_size=5, repetition_penalty=1.3),
    dict(beam_size=5, no_repeat_ngram_size=2),
    dict(beam_size=1, repetition_penalty=1.5, no_repeat_ngram_size=3),
    dict(beam_size=5, without_timestamps=True, max_new_tokens=40),
]


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: ",".join(f"{k}={v[k]}" for k in v))
def test_search_options_match_faster_whisper(variant, tiny, speech_audio):
    ours, theirs = tiny
    options = dict(language="en", temperature=0.0, **variant)
    for clip, audio in [speech_audio[1], speech_audio[-1]]:
        _assert_same(ours.transcribe(audio, sample_rate=16000, **options), _fw(theirs, audio, **options),
                     f"{variant} {clip}")


def test_beam_batch_and_engine_equal_transcribe(tiny, speech_audio, longform_audio):
    ours, _ = tiny
    audios = [a for _, a in speech_audio[1:3]] + [longform_audio]
    options = dict(language="en", beam_size=4, patience=1.5)
    one = [ours.transcribe(a, sample_rate=16000, **options) for a in audios]
    batch = ours.transcribe_batch(audios, sample_rate=16000, batch_size=3, **options)
    futures = [ours.submit(a, sample_rate=16000, **options) for a in audios]
    engine = [f.result(timeout=600) for f in futures]
    for a, b, c in zip(one, batch, engine):
        assert [s.tokens for s in a.segments] == [s.tokens for s in b.segments] == [s.tokens for s in c.segments]
        assert [s.avg_logprob for s in a.segments] == [s.avg_logprob for s in b.segments]
        assert [s.avg_logprob for s in a.segments] == [s.avg_logprob for s in c.segments]


def test_beam_is_not_greedy(tiny, speech_audio):
    """The parity above compares real searches: beam search changes the text of some clip."""
    ours, _ = tiny
    for _, audio in speech_audio:
        g = ours.transcribe(audio, sample_rate=16000, language="en", beam_size=1, temperature=0.0)
        b = ours.transcribe(audio, sample_rate=16000, language="en", beam_size=5, temperature=0.0)
        if [s.tokens for s in g.segments] != [s.tokens for s in b.segments]:
            return
    pytest.fail("beam search gave greedy decoding's tokens on every clip")


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(beam_size=0), "beam_size"),
        (dict(best_of=0), "best_of"),
        (dict(patience=0.0), "patience"),
        (dict(repetition_penalty=0.0), "repetition_penalty"),
        (dict(no_repeat_ngram_size=-1), "no_repeat_ngram_size"),
        (dict(beam_size=1, patience=0.2), "patience"),
        (dict(temperature=[]), "temperature"),
        (dict(temperature=[0.0, -0.2]), "temperature"),
        (dict(temperature="0.2"), "temperature"),
        (dict(seed=-1), "seed"),
    ],
)
def test_bad_search_options(tiny, options, message):
    ours, _ = tiny
    with pytest.raises(speechcore.InvalidArgumentError, match=message):
        ours.transcribe(np.zeros(16000, np.float32), sample_rate=16000, **options)
