"""Model.transcribe_batch on the engine (continuous batching): many recordings, their windows
decoded together with those of any other request. Each result must equal transcribing that
recording alone (real tiny.en, real speech), in input order, whatever the cap on recordings in
flight and whatever else the engine runs; bad items are reported by index (and path), a
failure on the engine aborts the call's other requests, and so does an interruption."""

from __future__ import annotations

import io
import re
import threading
import time

import numpy as np
import pytest
import soundfile as sf

import speechcore
from conftest import GREEDY
from speechcore import api
from speechcore.errors import AudioError, InvalidArgumentError, NotFoundError, SpeechcoreError


# The batching tests decode greedily (they are about the engine, not about decoding; beam search
# through transcribe_batch and the engine: tests/test_beam_search.py).
GREEDY_NATIVE = speechcore.TranscribeOptions(**GREEDY).to_native()


def _read(path) -> np.ndarray:
    a, sr = sf.read(str(path), dtype="float32")
    assert sr == 16000
    return a


@pytest.fixture(scope="module")
def model(tiny_dir):
    m = speechcore.load(str(tiny_dir), device="cpu", threads=2)
    yield m
    m.close()


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
    return [model.transcribe(_fresh(a), sample_rate=sr, **GREEDY).to_dict() for a, sr in mix]


def _settled_stats(model, timeout=30.0):
    """Engine statistics once no request is left in it."""
    end = time.monotonic() + timeout
    st = model.engine_stats()
    while (st["active_requests"] or st["running_windows"] or st["kv_blocks_used"]) and time.monotonic() < end:
        time.sleep(0.01)
        st = model.engine_stats()
    return st


def _assert_same(batch, alone):
    assert len(batch) == len(alone)
    for i, (got, want) in enumerate(zip(batch, alone)):
        got = got.to_dict()
        # every field of every segment, exactly: tokens, start/end, text, avg_logprob, no_speech_prob, ...
        assert got == want, f"item {i} differs from transcribing it alone"


def test_batch_equals_one_at_a_time(model, mix, alone):
    out = model.transcribe_batch([_fresh(a) for a, _ in mix], sample_rate=[sr for _, sr in mix], **GREEDY)
    assert all(isinstance(t, speechcore.Transcription) for t in out)
    _assert_same(out, alone)
    assert [len(t["segments"]) for t in alone][:3] == [11, 1, 6]  # the mix is what it claims to be
    assert {t["segments"][-1]["seek"] for t in alone[:3]} == {5300, 0, 6000}
    assert alone[0]["segments"][-1]["start"] > 60.0
    # all six start in round 1; the short ones finish there, item 0 in round 3 and item 2 in
    # round 4, yet the results come in input order


def test_cap_and_other_submitters_keep_results_and_order(model, mix, alone):
    # two recordings of the batch in the engine at once: the long ones (items 0 and 2) stay for
    # three and four windows while the short ones pass through the other slot; meanwhile another
    # thread submits recordings of its own to the same engine. Every result is unchanged, and
    # the batch's come in input order.
    others, errors = [], []

    def submit_more():
        try:
            for k in (1, 3, 5, 4, 1):
                item, sr = mix[k]
                others.append((k, model.submit(_fresh(item), sample_rate=sr, **GREEDY)))
                time.sleep(0.2)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    before = model.engine_stats()["requests_finished"]
    thread = threading.Thread(target=submit_more)
    thread.start()
    out = model.transcribe_batch([_fresh(a) for a, _ in mix], sample_rate=[sr for _, sr in mix], batch_size=2,
                                 **GREEDY)
    thread.join()
    assert errors == []
    _assert_same(out, alone)
    for k, f in others:
        assert f.result(timeout=600).to_dict() == alone[k], f"submitted item {k} differs"
    # every one of them went through the engine
    assert _settled_stats(model)["requests_finished"] - before == len(mix) + len(others)


def test_options_apply_to_every_item(model, tiny_dir, speech_audio):
    clips = [a for _, a in speech_audio[:3]]
    opts = dict(without_timestamps=True, initial_prompt="Sense and Sensibility, the cards.", max_new_tokens=40,
                **GREEDY)
    want = [model.transcribe(a, **opts).to_dict() for a in clips]
    out = model.transcribe_batch(clips, batch_size=2, **opts)
    _assert_same(out, want)
    plain = model.transcribe(clips[0], **GREEDY).to_dict()
    assert want[0] != plain  # the options really changed something
    ts = speechcore._C.Tokenizer.from_file(str(tiny_dir / "tokenizer.json")).timestamp_begin
    assert all(tok < ts for t in want for s in t["segments"] for tok in s["tokens"])  # no timestamps


def test_empty_list(model):
    assert model.transcribe_batch([]) == []
    assert model.transcribe_batch((), batch_size=1) == []
    with pytest.raises(InvalidArgumentError, match="unknown transcribe option 'best_off'"):
        model.transcribe_batch([], best_off=2)  # options are checked even when there is nothing to do


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


def test_failure_on_the_engine_names_the_item_and_aborts_the_rest(model, speech_audio, longform_audio):
    """max_new_tokens=440 fits the first window of every item (a 3-token prompt) but not the
    second window of the long-form item, whose prompt carries the previous text: that item fails
    on the engine, in the middle of its decoding. The call raises naming it, its other requests
    leave the engine, and a request of another caller is untouched."""
    clips = [a for _, a in speech_audio[5:8]]
    opts = dict(max_new_tokens=440, **GREEDY)
    want = model.transcribe(clips[0], **opts).to_dict()
    bystander = model.submit(clips[0], **opts)
    items = [clips[1], longform_audio, clips[2], clips[0]]
    with pytest.raises(InvalidArgumentError, match=r"^audio item 1: the prompt \(\d+ tokens\) plus max_new_tokens "
                                                   r"\(440\) exceeds the model's 448 positions"):
        model.transcribe_batch(items, batch_size=2, **opts)
    assert bystander.result(timeout=600).to_dict() == want
    st = _settled_stats(model)
    assert st["active_requests"] == 0 and st["kv_blocks_used"] == 0
    # the native overload on a running engine, all items in flight at once: the same failure
    native = speechcore.TranscribeOptions(**opts).to_native()
    with pytest.raises(InvalidArgumentError, match=r"^audio item 1: the prompt \(\d+ tokens\)"):
        model._native.transcribe_batch_on_engine(model._get_engine(), items, [16000] * 4, native, 0)
    st = _settled_stats(model)
    assert st["active_requests"] == 0 and st["kv_blocks_used"] == 0
    assert model.transcribe_batch([clips[0]], **opts)[0].to_dict() == want  # and it keeps serving


def test_native_batch_on_a_running_engine(model, mix, alone):
    """Model::transcribe_batch(Engine&, ...) (the C++ overload) on the model's engine, at most
    two recordings in flight, while another request runs on the same engine; then the C++
    Model::transcribe_batch on its temporary engine."""
    picks = [1, 3, 4, 5]
    loaded = [speechcore.load_audio(_fresh(mix[k][0]), mix[k][1]) for k in picks]
    engine = model._get_engine()
    extra = [model.submit(_fresh(mix[5][0]), sample_rate=mix[5][1], **GREEDY) for _ in range(2)]
    out = model._native.transcribe_batch_on_engine(engine, [a for a, _ in loaded], [r for _, r in loaded],
                                                  GREEDY_NATIVE, 2)
    _assert_same([speechcore.Transcription.from_native(d) for d in out], [alone[k] for k in picks])
    assert [f.result(timeout=600).to_dict() for f in extra] == [alone[5]] * 2
    # Model::transcribe_batch(audio, options, max_batch): its own temporary engine of 2 windows
    out = model._native.transcribe_batch([a for a, _ in loaded], [r for _, r in loaded], dict(GREEDY), 2)
    _assert_same([speechcore.Transcription.from_native(d) for d in out], [alone[k] for k in picks])
    with pytest.raises(InvalidArgumentError, match="max_in_flight must be >= 0"):
        model._native.transcribe_batch_on_engine(engine, [loaded[0][0]], [loaded[0][1]], {}, -1)
    with pytest.raises(InvalidArgumentError, match="unknown language code 'xx'"):  # options first, no item named
        model._native.transcribe_batch_on_engine(engine, [loaded[0][0]], [loaded[0][1]], {"language": "xx"}, 0)
    nan = np.zeros(1600, np.float32)
    nan[7] = np.nan
    with pytest.raises(AudioError, match="audio item 1: audio contains a non-finite sample"):
        model._native.transcribe_batch_on_engine(engine, [loaded[0][0], nan], [loaded[0][1], 16000], {}, 0)


def test_interrupt_aborts_the_calls_requests(model, longform_audio, speech_audio, monkeypatch):
    """A KeyboardInterrupt while transcribe_batch waits: its requests are aborted (they leave
    the engine without finishing) and the model keeps working."""

    class InterruptedQueue(api.queue.Queue):
        def get(self, *args, **kwargs):
            time.sleep(0.5)  # the requests are in the engine by now
            raise KeyboardInterrupt

    fake_queue = type("queue_module", (), {"Queue": InterruptedQueue, "Empty": api.queue.Empty})
    before = _settled_stats(model)
    monkeypatch.setattr(api, "queue", fake_queue)
    with pytest.raises(KeyboardInterrupt):
        model.transcribe_batch([longform_audio, longform_audio, longform_audio], batch_size=2, **GREEDY)
    monkeypatch.undo()
    # (the statistics are a snapshot between engine steps: wait for the two requests to leave)
    end = time.monotonic() + 120
    st = model.engine_stats()
    while st["requests_failed"] + st["requests_finished"] < before["requests_failed"] + before["requests_finished"] + 2:
        assert time.monotonic() < end, st
        time.sleep(0.01)
        st = model.engine_stats()
    st = _settled_stats(model)
    assert st["active_requests"] == 0 and st["kv_blocks_used"] == 0
    assert st["requests_failed"] - before["requests_failed"] == 2  # both in flight were aborted
    assert st["requests_finished"] == before["requests_finished"]
    clip = speech_audio[6][1]
    assert model.transcribe_batch([clip], **GREEDY)[0].to_dict() == model.transcribe(clip, **GREEDY).to_dict()


# ---------------------------------------------------------------------------------------------
# Argument handling in the SDK, over the fake native model and engine of test_cli.py (no decoding)


@pytest.fixture
def fake(monkeypatch):
    from test_cli import install_fake

    install_fake(monkeypatch)
    return speechcore.load()


def test_sdk_arguments(fake, tmp_path):
    from test_cli import FakeEngine

    x = np.zeros(1600, np.float32)
    sf.write(tmp_path / "a.wav", np.zeros(800, np.float32), 8000)
    out = fake.transcribe_batch([x, tmp_path / "a.wav", x], sample_rate=[16000, None, 32000], language="en",
                                suppress_tokens=None)
    assert [t.text for t in out] == [" 0.1 seconds.", " 0.1 seconds.", " 0.1 seconds."]
    (engine,) = FakeEngine.instances
    assert [rate for _, _, rate in engine.submitted] == [16000, 8000, 32000]
    assert engine.options["max_batch"] == api.DEFAULT_BATCH_SIZE  # the engine's defaults
    assert {str(o) for _, _, o in fake._native.calls} == {str(speechcore.TranscribeOptions(language="en").to_native())}
    audios = [a for a, _, _ in fake._native.calls]
    assert all(a == (1600,) or a == (800,) for a in audios)
    fake.transcribe_batch([x], sample_rate=8000, batch_size=5)  # the engine runs: it stays as it is
    assert len(FakeEngine.instances) == 1 and engine.submitted[-1][2] == 8000


def test_sdk_batch_size_starts_the_engine_and_bounds_requests_in_flight(fake, monkeypatch):
    from test_cli import FakeEngine, FakeNativeModel

    original = FakeNativeModel.transcribe

    def hold_the_first(self, audio, rate, options):
        if not self.calls:  # the first stays in the engine while the call could submit more
            deadline = time.monotonic() + 5
            while len(FakeEngine.instances[0].submitted) < 3 and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.2)
        return original(self, audio, rate, options)

    monkeypatch.setattr(FakeNativeModel, "transcribe", hold_the_first)
    xs = [np.zeros(160 * (i + 1), np.float32) for i in range(8)]
    out = fake.transcribe_batch(xs, batch_size=3)
    assert [t.duration for t in out] == [0.01 * (i + 1) for i in range(8)]  # input order
    (engine,) = FakeEngine.instances
    assert engine.options["max_batch"] == 3  # started by this call, never configured
    assert engine.max_outstanding == 3
    # a model whose engine was configured keeps that configuration
    fake.close()
    fake.start_engine(max_batch=7)
    fake.close()
    fake.transcribe_batch(xs[:1], batch_size=2)
    assert FakeEngine.instances[-1].options["max_batch"] == 7


def test_sdk_failure_on_the_engine(fake):
    from test_cli import FakeEngine, FakeNativeModel

    FakeNativeModel.fail_on_rate = 8000
    xs = [np.zeros(1600, np.float32)] * 5
    with pytest.raises(RuntimeError, match=r"^audio item 2: cannot transcribe audio at 8000 Hz$"):
        fake.transcribe_batch(xs, sample_rate=[16000, 16000, 8000, 16000, 8000], batch_size=2)
    (engine,) = FakeEngine.instances
    assert len(engine.submitted) <= 4 and engine.stats()["active_requests"] == 0
    # an engine shut down under the call: the items fail with CancelledError, named
    fake.close()
    engine = fake._get_engine()
    engine.shutdown(True)
    with pytest.raises(speechcore.CancelledError, match="^audio item 0: the engine is shut down"):
        fake.transcribe_batch(xs[:2])


def test_sdk_rejects_before_native_work(fake, tmp_path):
    from test_cli import FakeEngine

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
    assert fake._native.calls == [] and FakeEngine.instances == []  # no engine was even started
