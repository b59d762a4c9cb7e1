"""The decoding defaults are faster-whisper 1.2.1's: TranscribeOptions(), Model.transcribe's
keywords and the C++ TranscribeOptions hold WhisperModel.transcribe's defaults (beam_size=5,
best_of=5, patience=1, temperature=[0.0, 0.2, ..., 1.0], ...), and a transcription with no
decoding options gives faster-whisper's tokens with its defaults (tiny.en, a real clip on which
beam search and greedy decoding differ); transcribe_chunked's equal BatchedInferencePipeline's."""

from __future__ import annotations

import dataclasses
import inspect

import numpy as np
import pytest

import speechcore
from speechcore import api

faster_whisper = pytest.importorskip("faster_whisper")

FW_DEFAULTS = {name: p.default for name, p in inspect.signature(faster_whisper.WhisperModel.transcribe).parameters.items()
               if p.default is not inspect.Parameter.empty}
# faster-whisper's keywords that are Model.transcribe keywords but not TranscribeOptions fields
# (they steer the call, not the decoding), and those whose "whole audio" / "model default" value
# is spelled otherwise: clip_timestamps "0" (ours None), suppress_tokens [-1] (Model.transcribe's
# None means [-1]).
NOT_TAKEN = {"log_progress"}
SPELLED_OTHERWISE = {"clip_timestamps": ("0", None)}
CLIP = "005.wav"  # cards: beam search (the default) and greedy decoding give different tokens


def test_options_defaults_are_faster_whispers():
    o = speechcore.TranscribeOptions()
    assert (o.beam_size, o.best_of, o.patience) == (5, 5, 1.0)
    assert o.temperature == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    ours = {f.name: getattr(o, f.name) for f in dataclasses.fields(o)}
    assert set(FW_DEFAULTS) - set(ours) == NOT_TAKEN  # every other option of faster-whisper is ours
    params = inspect.signature(speechcore.Model.transcribe).parameters
    for name, want in FW_DEFAULTS.items():
        if name in NOT_TAKEN:
            assert params[name].default == want, name  # a keyword of Model.transcribe only
            continue
        got = ours[name]
        if name in SPELLED_OTHERWISE:
            assert (want, got) == SPELLED_OTHERWISE[name], name
            continue
        assert got == want and type(got) in (type(want), float), (name, got, want)
        keyword = params[name].default  # Model.transcribe's keyword: the same default
        if name == "suppress_tokens":
            assert keyword is None
        else:
            assert (list(keyword) if name == "temperature" else keyword) == want, name
    # the batched pipeline (transcribe_chunked) has the same decoding defaults
    batched = inspect.signature(faster_whisper.BatchedInferencePipeline.transcribe).parameters
    for name in ("beam_size", "best_of", "patience", "temperature"):
        assert batched[name].default == FW_DEFAULTS[name], name
    # the engine entry points take no decoding keywords of their own: the dataclass's defaults
    for method in (api.Model.submit, api.Model.transcribe_batch, api.Model.transcribe_chunked):
        assert not {"beam_size", "temperature", "best_of", "patience"} & set(inspect.signature(method).parameters)


def test_cli_defaults_are_faster_whispers():
    from speechcore import cli

    a = cli.build_parser().parse_args(["transcribe", "x.wav"])
    assert (a.beam_size, a.best_of, a.patience, a.temperature) == (5, 5, 1.0, FW_DEFAULTS["temperature"])


@pytest.fixture(scope="module")
def pair(tiny_dir):
    ours = speechcore.load(str(tiny_dir), device="cpu", threads=2)
    theirs = faster_whisper.WhisperModel(str(tiny_dir), device="cpu", compute_type="float32", cpu_threads=2)
    yield ours, theirs
    ours.close()


def _tokens(segments):
    return [list(s.tokens) for s in segments]


def test_no_options_gives_faster_whispers_tokens(pair, speech_audio):
    ours, theirs = pair
    audio = dict(speech_audio)[CLIP]
    fw, _ = theirs.transcribe(audio)  # every option at its default
    fw = list(fw)
    sc = ours.transcribe(audio)
    assert fw and _tokens(sc.segments) == _tokens(fw)
    assert [(s.start, s.end, s.text) for s in sc.segments] == [(s.start, s.end, s.text) for s in fw]
    assert [s.avg_logprob for s in sc.segments] == pytest.approx([s.avg_logprob for s in fw], abs=2e-3)
    assert [s.temperature for s in sc.segments] == [s.temperature for s in fw] == [0.0] * len(fw)
    # not greedy decoding: the default is really the beam search
    greedy = ours.transcribe(audio, beam_size=1, temperature=0.0)
    assert _tokens(greedy.segments) != _tokens(sc.segments)
    # the C++ TranscribeOptions defaults (an empty native options dict) are the same
    native = speechcore.Transcription.from_native(ours._native.transcribe(audio, 16000, {}))
    assert _tokens(native.segments) == _tokens(sc.segments)
    # and so are the engine's (submit, transcribe_batch)
    assert _tokens(ours.submit(audio).result(timeout=300).segments) == _tokens(sc.segments)
    assert _tokens(ours.transcribe_batch([audio])[0].segments) == _tokens(sc.segments)


def test_digital_silence_as_faster_whisper(pair):
    """5 s of zeros with the defaults: tiny.en's beam search says " You" with a log-prob above the
    threshold, so the window is not skipped as silence, in both (greedy decoding skips it)."""
    ours, theirs = pair
    audio = np.zeros(16000 * 5, np.float32)
    fw, _ = theirs.transcribe(audio)
    fw = list(fw)
    sc = ours.transcribe(audio)
    assert _tokens(sc.segments) == _tokens(fw)
    assert [s.no_speech_prob for s in sc.segments] == pytest.approx([s.no_speech_prob for s in fw], abs=2e-3)
    assert ours.transcribe(audio, beam_size=1, temperature=0.0).segments == []


def test_default_temperatures_fall_back_as_faster_whisper(pair, speech_audio):
    """A log-prob threshold no attempt passes: every default temperature is tried, and the window
    reports the last one (1.0), in both (samples bounded to 16 tokens: hot samples run long)."""
    ours, theirs = pair
    audio = dict(speech_audio)[CLIP]
    fw, _ = theirs.transcribe(audio, log_prob_threshold=0.0, max_new_tokens=16)
    sc = ours.transcribe(audio, log_prob_threshold=0.0, max_new_tokens=16)
    assert [s.temperature for s in sc.segments] == [s.temperature for s in fw] == [1.0] * len(sc.segments)
    assert sc.segments


def test_chunked_defaults_are_the_batched_pipelines(pair, speech_audio, tmp_path):
    """transcribe_chunked with no decoding options equals BatchedInferencePipeline.transcribe with
    its defaults (beam 5, the first temperature, no timestamps), on the clip between silences
    (our VAD on faster-whisper's Silero weights, so both find the same speech)."""
    pytest.importorskip("onnx")
    from vad_oracle import faster_whisper_weights

    ours, theirs = pair
    weights = tmp_path / "fw_silero.safetensors"
    faster_whisper_weights(weights)
    gap = np.zeros(16000 * 2, np.float32)
    audio = np.concatenate([gap, dict(speech_audio)[CLIP], gap])
    fw, _ = faster_whisper.BatchedInferencePipeline(theirs).transcribe(audio)
    fw = list(fw)
    sc = ours.transcribe_chunked(audio, vad_model_path=str(weights))
    assert fw and _tokens(sc.segments) == _tokens(fw)
    assert [s.text for s in sc.segments] == [s.text for s in fw]
