"""The engine (continuous batching) on the CPU: many concurrent requests give exactly the
one-at-a-time results; abort, shutdown with work in flight, bad input in the middle of a batch,
a KV pool small enough to force queueing and preemption, statistics and no block leaks."""

from __future__ import annotations

import asyncio
from pathlib import Path
import shutil
import threading

import numpy as np
import pytest

import speechcore
from conftest import GREEDY  # the engine tests decode greedily (beam search on the engine: test_beam_search.py)
from speechcore import _C


def _settled_stats(model, timeout=10.0):
    """Engine statistics once the engine is idle (published before each request resolves, see
    test_statistics_are_current_when_a_request_resolves; the wait is a safety margin)."""
    import time

    end = time.monotonic() + timeout
    st = model.engine_stats()
    while (st["running_windows"] or st["active_requests"] or st["kv_blocks_used"]) and time.monotonic() < end:
        time.sleep(0.01)
        st = model.engine_stats()
    return st


def _key(t):
    return [(s.tokens, s.start, s.end, s.text, s.avg_logprob, s.no_speech_prob) for s in t.segments]


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    m = speechcore.load(str(tiny_dir), device="cpu", threads=2)
    yield m
    m.close()


@pytest.fixture(scope="module")
def seeded_small(tmp_path_factory, tiny_dir):
    """A small seeded Whisper (d 64, 2 + 2 layers) with tiny.en's tokenizer: fast enough for
    hundreds of requests on two cores; correctness here is engine == one at a time."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(7)
    cfg = transformers.WhisperConfig(vocab_size=51864, num_mel_bins=80, d_model=64, encoder_layers=2,
                                     decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2,
                                     encoder_ffn_dim=256, decoder_ffn_dim=256)
    model = transformers.WhisperForConditionalGeneration(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(4.0 if p.dim() > 1 else 1.0)
    d = tmp_path_factory.mktemp("seeded_small")
    model.save_pretrained(str(d), safe_serialization=True)
    shutil.copy(tiny_dir / "tokenizer.json", d / "tokenizer.json")
    m = speechcore.load(str(d), device="cpu", threads=2)
    yield m
    m.close()


def test_200_mixed_requests_equal_one_at_a_time(seeded_small, speech_audio, longform_audio):
    """200 requests (short clips, cut clips and > 60 s files) submitted together from 4 threads."""
    from conftest import mixed_requests

    audios = mixed_requests(speech_audio, longform_audio, 200, seed=0)
    opts = dict(max_new_tokens=12, **GREEDY)
    alone = [_key(seeded_small.transcribe(a, **opts)) for a in audios]
    seeded_small.start_engine(max_batch=32, max_encode_batch=8, prepare_threads=3)  # bursts prepared 3 at a time
    futures = [None] * len(audios)

    def submit_range(lo, hi):
        for i in range(lo, hi):
            futures[i] = seeded_small.submit(audios[i], priority=0, **opts)

    threads = [threading.Thread(target=submit_range, args=(k * 50, (k + 1) * 50)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = [_key(f.result(timeout=600)) for f in futures]
    assert got == alone
    st = _settled_stats(seeded_small)
    assert st["requests_finished"] >= 200 and st["kv_blocks_used"] == 0 and st["running_windows"] == 0
    assert st["tokens_generated"] > 0 and st["tokens_per_second"] > 0


def test_real_model_concurrent_and_streamed(tiny, speech_audio, longform_audio):
    audios = [a for _, a in speech_audio] + [longform_audio]
    alone = [_key(tiny.transcribe(a, **GREEDY)) for a in audios]
    futures = [tiny.submit(a, **GREEDY) for a in audios]
    assert [_key(f.result(timeout=600)) for f in futures] == alone
    # streaming gives the same segments, in order, as they finish
    streamed = list(tiny.transcribe_stream(longform_audio, **GREEDY))
    assert [(s.tokens, s.start, s.end, s.text) for s in streamed] == [k[:4] for k in alone[-1]]
    # asyncio
    got = asyncio.run(tiny.atranscribe(audios[0], **GREEDY))
    assert _key(got) == alone[0]


def test_small_kv_pool_queues_and_preempts(tiny, speech_audio, longform_audio):
    """A pool of 112 blocks of 4 positions (the least one full-length window needs) for 8 windows
    at once, long-form windows with long prompts among them: windows queue and running ones get
    preempted (restarted later); every result is unchanged and no block leaks."""
    audios = [longform_audio] * 3 + [a for _, a in speech_audio[:5]]
    long_alone = _key(tiny.transcribe(longform_audio, **GREEDY))
    alone = [long_alone] * 3 + [_key(tiny.transcribe(a, **GREEDY)) for a in audios[3:]]
    tiny.start_engine(max_batch=8, max_encode_batch=4, kv_block_size=4, kv_blocks=112)
    try:
        futures = [tiny.submit(a, **GREEDY) for a in audios]
        assert [_key(f.result(timeout=600)) for f in futures] == alone
        st = _settled_stats(tiny)
        assert st["kv_blocks_total"] == 112 and st["kv_blocks_used"] == 0
        assert st["preemptions"] > 0
    finally:
        tiny.start_engine()  # back to the defaults


def _submit_native(engine, items):
    """Submits `items` to a native engine at once; returns ({index: result}, {index: error})."""
    errors, results = {}, {}
    done_evt = threading.Event()

    def cb(i):
        def on_done(d):
            results[i] = d
            if len(results) + len(errors) == len(items):
                done_evt.set()

        def on_error(e):
            errors[i] = e
            if len(results) + len(errors) == len(items):
                done_evt.set()
        return on_done, on_error

    for i, a in enumerate(items):
        engine.submit(a, 16000, dict(GREEDY), *cb(i))
    assert done_evt.wait(600)
    return results, errors


@pytest.mark.parametrize("prepare_threads", [1, 4])
def test_bad_input_in_a_batch(tiny, speech_audio, prepare_threads):
    clips = [a for _, a in speech_audio]
    alone = [_key(tiny.transcribe(a, **GREEDY)) for a in clips[:4]]
    # native submissions: bad audio reaches the engine's preparation and fails only its own
    # request, also when a burst is prepared on several threads at once
    engine = _C.Engine(tiny._native, max_batch=8, max_encode_batch=8, prepare_threads=prepare_threads)
    bad = [np.full(16000, np.nan, np.float32), np.zeros(0, np.float32)]
    items = [clips[0], bad[0], clips[1], bad[1], clips[2], clips[3]]
    results, errors = _submit_native(engine, items)
    engine.shutdown(True)
    assert set(errors) == {1, 3} and isinstance(errors[1], speechcore.AudioError)
    assert isinstance(errors[3], speechcore.AudioError)
    got = [_key(speechcore.Transcription.from_native(results[i])) for i in (0, 2, 4, 5)]
    assert got == alone


def test_abort_and_stream(tiny, speech_audio, longform_audio):
    clips = [a for _, a in speech_audio]
    expected = _key(tiny.transcribe(clips[1], **GREEDY))
    # closing a stream after its first segment aborts the request; others are untouched
    other = tiny.submit(clips[1], **GREEDY)
    stream = tiny.transcribe_stream(longform_audio, **GREEDY)
    first = next(stream)
    assert first.text
    stream.close()
    assert _key(other.result(timeout=600)) == expected
    # an explicit abort: the future fails with CancelledError
    f = tiny.submit(longform_audio, **GREEDY)
    assert tiny.abort(f)
    with pytest.raises(speechcore.CancelledError):
        f.result(timeout=600)
    st = _settled_stats(tiny)
    assert st["kv_blocks_used"] == 0 and st["active_requests"] == 0


def test_statistics_are_current_when_a_request_resolves(tiny, speech_audio):
    """The engine publishes its statistics before it resolves a request: a callback of the last
    future to resolve (it runs on the engine thread) already sees no request, window or KV block
    left, and every request counted as finished or failed."""
    tiny.start_engine(max_batch=4)  # fresh statistics
    seen, lock = [], threading.Lock()

    def record(_):
        with lock:
            seen.append(tiny.engine_stats())

    try:
        futures = [tiny.submit(a, **GREEDY) for _, a in speech_audio[:4]]
        doomed = tiny.submit(speech_audio[0][1], **GREEDY)
        aborted = tiny.abort(doomed)
        for f in futures + [doomed]:
            f.add_done_callback(record)
        for f in futures:
            assert f.result(timeout=600).text
        if aborted:
            with pytest.raises(speechcore.CancelledError):
                doomed.result(timeout=600)
        else:  # it finished before the abort arrived
            assert doomed.result(timeout=600).text
    finally:
        tiny.start_engine()
    with lock:
        last = max(seen, key=lambda st: st["requests_finished"] + st["requests_failed"])
    assert len(seen) == 5
    assert last["requests_finished"] + last["requests_failed"] == 5, last
    assert last["active_requests"] == 0 and last["running_windows"] == 0 and last["kv_blocks_used"] == 0, last


def test_shutdown_with_work_in_flight(tiny, speech_audio, longform_audio):
    futures = [tiny.submit(longform_audio, **GREEDY) for _ in range(3)] + [tiny.submit(a, **GREEDY) for _, a in speech_audio[:3]]
    tiny.close(cancel=True)
    outcomes = []
    for f in futures:
        try:
            f.result(timeout=600)
            outcomes.append("done")
        except speechcore.CancelledError:
            outcomes.append("cancelled")
    assert "cancelled" in outcomes
    # a graceful close completes what was submitted
    futures = [tiny.submit(a, **GREEDY) for _, a in speech_audio[:3]]
    tiny.close(cancel=False)
    assert all(f.done() and f.exception() is None for f in futures)
    # and the model keeps working
    assert tiny.transcribe(speech_audio[0][1], **GREEDY).text


def test_window_larger_than_the_kv_pool_fails_only_its_request(tiny, speech_audio):
    """A pool too small for any full window: the request fails with OutOfMemoryError (typed,
    no hang), and the engine keeps serving after a restart with a normal pool."""
    tiny.start_engine(max_batch=2, kv_block_size=16, kv_blocks=2)
    try:
        with pytest.raises(speechcore.OutOfMemoryError):
            tiny.submit(speech_audio[0][1], **GREEDY).result(timeout=600)
    finally:
        tiny.start_engine()
    assert tiny.submit(speech_audio[0][1], **GREEDY).result(timeout=600).text


def test_engine_options_are_checked(tiny):
    with pytest.raises(speechcore.InvalidArgumentError):
        tiny.start_engine(max_batch=0)
    with pytest.raises(speechcore.InvalidArgumentError):
        tiny.submit(np.zeros(16000, np.float32), priority="high")
    with pytest.raises(speechcore.InvalidArgumentError):
        tiny.submit(np.zeros(16000, np.float32), beam_size=0)
    with pytest.raises(speechcore.InvalidArgumentError):
        _C.Engine(tiny._native, max_batch=-1)
    with pytest.raises(speechcore.InvalidArgumentError):
        tiny.start_engine(prepare_threads=-1)
    with pytest.raises(speechcore.InvalidArgumentError):
        _C.Engine(tiny._native, prepare_threads=-2)
    assert set(tiny.engine_stats()) >= {"queued_requests", "running_windows", "kv_blocks_used", "tokens_per_second"}


def test_dropping_a_model_with_requests_in_flight(tiny_dir, tmp_path):
    """The last reference to an engine can go away on the engine's own thread: a model dropped
    (in a reference cycle, collected by gc) while its aborted requests are still in the engine
    leaves the engine to the callbacks' objects, released there. That must not destroy the engine
    under its running thread (it crashed the interpreter). Run in a child process: a crash fails
    this test instead of ending the session."""
    import subprocess
    import sys

    script = tmp_path / "drop.py"
    script.write_text(f"""
import gc, sys, time
import numpy as np
import speechcore
audio = np.random.default_rng(0).standard_normal(16000 * 70).astype(np.float32) * 0.1
for rep in range(3):
    m = speechcore.load({str(tiny_dir)!r}, device="cpu", threads=2)
    futures = [m.submit(audio) for _ in range(2)]
    time.sleep(0.2)
    for f in futures:
        m.abort(f)
    cycle = [m]
    cycle.append(cycle)
    del m, cycle, futures
    gc.collect()
    end = time.monotonic() + 3
    while time.monotonic() < end:  # Python work while the engine thread finishes its callbacks
        junk = [dict(a=i) for i in range(1000)]
print("done")
""")
    import os

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in [str(Path(speechcore.__file__).parents[1]),
                                                                  os.environ.get("PYTHONPATH", "")] if p))
    proc = subprocess.run([sys.executable, "-X", "faulthandler", str(script)], capture_output=True, text=True,
                          timeout=600, env=env)
    assert proc.returncode == 0 and proc.stdout.strip() == "done", proc.stderr[-3000:]
