"""transcribe(log_progress=True) and the native progress callback: faster-whisper's progress
(seconds of audio along the windows' timeline), reported after every window, with results
unchanged; an exception raised by the callback stops the transcription and reaches the caller."""

from __future__ import annotations

import numpy as np
import pytest

import speechcore
from conftest import GREEDY
from speechcore.errors import InvalidArgumentError


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    return speechcore.load(str(tiny_dir), device="cpu", threads=2)


def _native_progress(model, audio, **options):
    calls = []
    opts = speechcore.TranscribeOptions(**dict(GREEDY, **options)).to_native()
    result = model._native.transcribe(audio, 16000, opts, lambda d, t: calls.append((d, t)))
    return calls, speechcore.Transcription.from_native(result)


def test_progress_walks_the_windows(tiny, longform_audio):
    plain = tiny.transcribe(longform_audio, **GREEDY)
    calls, result = _native_progress(tiny, longform_audio)
    assert [s.tokens for s in result.segments] == [s.tokens for s in plain.segments]
    done = [d for d, _ in calls]
    totals = {t for _, t in calls}
    assert len(totals) == 1 and abs(totals.pop() - len(longform_audio) / 16000) < 0.02
    assert done[0] == 0.0 and done[-1] == calls[-1][1]
    assert all(a <= b for a, b in zip(done, done[1:]))
    windows = len({s.seek for s in plain.segments})
    assert len(set(done)) >= windows + 1  # the start, then every window further on


def test_progress_with_a_vad_filter_and_chunked(tiny, longform_audio):
    gapped = np.concatenate([np.zeros(16000 * 8, np.float32), longform_audio[: 16000 * 40],
                             np.zeros(16000 * 10, np.float32)])
    calls, _ = _native_progress(tiny, gapped, vad_filter=True)
    total = calls[-1][1]
    assert total < len(gapped) / 16000 - 10  # the speech's timeline, not the input's
    assert calls[0][0] == 0.0 and calls[-1][0] == total
    calls, _ = _native_progress(tiny, gapped, chunked=True, without_timestamps=True)
    assert calls[0][0] == 0.0 and calls[-1][0] == calls[-1][1] > 0
    calls, result = _native_progress(tiny, np.zeros(16000 * 5, np.float32), vad_filter=True)
    assert calls == [(0.0, 0.0)] and not result.segments  # no speech: nothing to walk


def test_log_progress_prints_and_changes_nothing(tiny, speech_audio, capsys):
    clip = speech_audio[0][1]
    want = tiny.transcribe(clip, **GREEDY)
    got = tiny.transcribe(clip, log_progress=True, **GREEDY)
    err = capsys.readouterr().err
    assert "100%" in err and "of audio" in err
    assert got.text == want.text and [s.tokens for s in got.segments] == [s.tokens for s in want.segments]
    tiny.transcribe(clip, log_progress=False, **GREEDY)
    assert capsys.readouterr().err == ""
    with pytest.raises(InvalidArgumentError):
        tiny.transcribe(clip, log_progress="yes")


def test_an_exception_in_the_callback_stops_the_transcription(tiny, longform_audio, speech_audio):
    calls = []

    def stop(done, total):
        calls.append(done)
        if len(calls) == 2:
            raise KeyboardInterrupt

    opts = speechcore.TranscribeOptions(**GREEDY).to_native()
    with pytest.raises(KeyboardInterrupt):
        tiny._native.transcribe(longform_audio, 16000, opts, stop)
    assert len(calls) == 2  # stopped at the first window
    with pytest.raises(ZeroDivisionError):
        tiny._native.transcribe(longform_audio, 16000, opts, lambda d, t: 1 / 0)
    assert tiny.transcribe(speech_audio[0][1], **GREEDY).text  # the model keeps working
