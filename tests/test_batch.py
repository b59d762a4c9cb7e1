"""Model.transcribe_batch: many recordings through one long-form loop, their windows decoded
together. Each result must equal transcribing that recording alone (real tiny.en, real speech),
in input order, whatever the round cap; bad items are reported by index (and path)."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
import soundfile as sf

import speechcore
from speechcore import api
from speechcore.errors import AudioError, InvalidArgumentError, NotFoundError, SpeechcoreError


def _read(path) -> np.ndarray:
    a, sr = sf.read(str(path), dtype="float32")
    assert sr == 16000
    return a


@pytest.fixture(scope="module")
def model(tiny_dir):
    return speechcore.load(str(tiny_dir), device="cpu", threads=2)


@pytest.fixture(scope="module")
def medium_audio(testdata) -> np.ndarray:
    """63 s: three sentences, 40 s of digital silence (a window skipped as silence), a card reading.
    Four windows, so it finishes after the 70 s long-form file (three windows)."""
    lib = sorted((testdata / "librivox").glob("*.wav"))
    gap = np.zeros(8000, np.float32)
    return np.concatenate([_read(lib[0]), gap, _read(lib[2]), gap, _read(lib[3]),
                           np.zeros(40 * 16000, np.float32), _read(sorted((testdata / "cards").glob("*.wav"))[4])])


@pytest.fixture(scope="module")
def mix(speech_clips, speech_audio, longform_audio, medium_audio):
    """(item, sample_rate) pairs of every kind transcribe accepts and of different lengths (one to
    four windows, so recordings finish in different rounds); the long ones first."""
    raw = dict(speech_audio)["goforward.raw"]
    pcm8k = np.round(raw[::2] * 32767).astype(np.int16)  # int16 PCM at 8 kHz (resampled inside)
    return [
        (longform_audio, None),
        (str(speech_clips[0]), None),                    # path (librivox 0870, 7.1 s)
        (medium_audio, None),
        (speech_clips[6].read_bytes(), None),            # encoded bytes (cards 002)
        (io.BytesIO(speech_clips[3].read_bytes()), None),  # binary file object (librivox 0920)
        (pcm8k, 8000),
    ]


def _fresh(item):
    """File objects are consumed by reading: give each transcription its own."""
    return io.BytesIO(item.getvalue()) if isinstance(item, io.BytesIO) else item


@pytest.fixture(scope="module")
def alone(model, mix):
    return [model.transcribe(_fresh(a), sample_rate=sr).to_dict() for a, sr in mix]


def _assert_same(batch, alone):
    assert len(batch) == len(alone)
    for i, (got, want) in enumerate(zip(batch, alone)):
        got = got.to_dict()
        # every field of every segment, exactly: tokens, start/end, text, avg_logprob, no_speech_prob, ...
        assert got == want, f"item {i} differs from transcribing it alone"


def test_batch_equals_one_at_a_time(model, mix, alone):
    out = model.transcribe_batch([_fresh(a) for a, _ in mix], sample_rate=[sr for _, sr in mix])
    assert all(isinstance(t, speechcore.Transcription) for t in out)
    _assert_same(out, alone)
    assert [len(t["segments"]) for t in alone][:3] == [11, 1, 6]  # the mix is what it claims to be
    assert {t["segments"][-1]["seek"] for t in alone[:3]} == {5300, 0, 6000}
    assert alone[0]["segments"][-1]["start"] > 60.0
    # all six start in round 1; the short ones finish there, item 0 in round 3 and item 2 in
    # round 4, yet the results come in input order


def test_round_cap_keeps_results_and_order(model, mix, alone):
    # two windows per round: the long recordings (items 0 and 2) stay for three and four rounds
    # while the short ones pass through the other slot; results still come in input order
    out = model.transcribe_batch([_fresh(a) for a, _ in mix], sample_rate=[sr for _, sr in mix], batch_size=2)
    _assert_same(out, alone)


def test_options_apply_to_every_item(model, tiny_dir, speech_audio):
    clips = [a for _, a in speech_audio[:3]]
    opts = dict(without_timestamps=True, initial_prompt="Sense and Sensibility, the cards.", max_new_tokens=40)
    want = [model.transcribe(a, **opts).to_dict() for a in clips]
    out = model.transcribe_batch(clips, batch_size=2, **opts)
    _assert_same(out, want)
    plain = model.transcribe(clips[0]).to_dict()
    assert want[0] != plain  # the options really changed something
    ts = speechcore._C.Tokenizer.from_file(str(tiny_dir / "tokenizer.json")).timestamp_begin
    assert all(tok < ts for t in want for s in t["segments"] for tok in s["tokens"])  # no timestamps


def test_empty_list(model):
    assert model.transcribe_batch([]) == []
    assert model.transcribe_batch((), batch_size=1) == []
    with pytest.raises(InvalidArgumentError, match="unknown transcribe option 'best_of'"):
        model.transcribe_batch([], best_of=2)  # options are checked even when there is nothing to do


def test_bad_items_are_named(model, speech_clips, tmp_path):
    good = str(speech_clips[0])
    missing = tmp_path / "missing.wav"
    with pytest.raises(NotFoundError, match=rf"audio item 1 \({re.escape(str(missing))}\): audio file not found"):
        model.transcribe_batch([good, missing])
    nan = np.zeros(16000, np.float32)
    nan[100] = np.nan
    with pytest.raises(AudioError, match=r"audio item 2: .*NaN"):
        model.transcribe_batch([good, good, nan])
    with pytest.raises(AudioError, match="audio item 0: .*empty"):
        model.transcribe_batch([np.zeros(0, np.float32)])
    with pytest.raises(InvalidArgumentError, match="audio item 1: unsupported audio type int"):
        model.transcribe_batch([good, 5])
    # the native layer names the item too (arrays that bypass the SDK checks)
    with pytest.raises(AudioError, match="audio item 1: audio contains a non-finite sample"):
        model._native.transcribe_batch([np.zeros(100, np.float32), nan], [16000, 16000], {})
    with pytest.raises(InvalidArgumentError, match="audio item 0 must be a C-contiguous float32"):
        model._native.transcribe_batch([np.zeros(100, np.float64)], [16000], {})
    with pytest.raises(InvalidArgumentError, match="max_batch must be >= 1"):
        model._native.transcribe_batch([np.zeros(100, np.float32)], [16000], {}, 0)


# ---------------------------------------------------------------------------------------------
# Argument handling in the SDK, over a fake native model (no decoding)


class FakeNative:
    def __init__(self, path, device="auto", compute_type="auto", threads=0):
        self.calls = []

    def transcribe_batch(self, audios, sample_rates, options, max_batch):
        self.calls.append((audios, sample_rates, options, max_batch))
        return [{"text": f"item {i}", "language": "en", "language_probability": 1.0,
                 "duration": len(a) / r, "segments": []} for i, (a, r) in enumerate(zip(audios, sample_rates))]


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setattr(api, "_native_model_class", lambda: FakeNative)
    return speechcore.load()


def test_sdk_arguments(fake, tmp_path):
    x = np.zeros(1600, np.float32)
    sf.write(tmp_path / "a.wav", np.zeros(800, np.float32), 8000)
    out = fake.transcribe_batch([x, tmp_path / "a.wav", x], sample_rate=[16000, None, 32000], language="en",
                                suppress_tokens=None)
    assert [t.text for t in out] == ["item 0", "item 1", "item 2"]
    audios, rates, options, max_batch = fake._native.calls[-1]
    assert rates == [16000, 8000, 32000] and max_batch == api.DEFAULT_BATCH_SIZE
    assert options == speechcore.TranscribeOptions(language="en").to_native()
    assert all(a.dtype == np.float32 and a.flags.c_contiguous for a in audios)
    fake.transcribe_batch([x], sample_rate=8000, batch_size=5)
    _, rates, _, max_batch = fake._native.calls[-1]
    assert rates == [8000] and max_batch == 5


def test_sdk_rejects_before_native_work(fake, tmp_path):
    x = np.zeros(1600, np.float32)
    for bad in (0, -1, 2.0, True, "4"):
        with pytest.raises(InvalidArgumentError, match="batch_size"):
            fake.transcribe_batch([x], batch_size=bad)
    for bad in ("a.wav", tmp_path, x, b"RIFF", io.BytesIO(b"x"), 3):
        with pytest.raises(InvalidArgumentError, match="audios must be a list"):
            fake.transcribe_batch(bad)
    with pytest.raises(InvalidArgumentError, match="sample_rate has 1 entries for 2"):
        fake.transcribe_batch([x, x], sample_rate=[16000])
    with pytest.raises(InvalidArgumentError, match="audio item 1: sample_rate must be a positive integer"):
        fake.transcribe_batch([x, x], sample_rate=[16000, 0])
    with pytest.raises(InvalidArgumentError, match="task"):
        fake.transcribe_batch([tmp_path / "missing.wav"], task="Translate")  # options before audio
    with pytest.raises(SpeechcoreError, match=r"audio item 0 \(.*missing\.wav\)"):
        fake.transcribe_batch([tmp_path / "missing.wav", x])
    assert fake._native.calls == []
