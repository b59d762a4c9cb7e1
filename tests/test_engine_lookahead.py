"""Long-form look-ahead in the engine: when a recording's windows cannot depend on each other
(without_timestamps, no conditioning on previous text) the engine decodes several windows of one
file at once, guessing each window's start and prompt; a wrong guess (a silent window keeps the
initial prompt) drops the windows issued ahead. Either way the result equals transcribe()."""

from __future__ import annotations

import numpy as np
import pytest

import speechcore
from conftest import GREEDY  # look-ahead is about the engine: greedy decoding (beam search: test_beam_search.py)


def _key(t):
    return [(s.tokens, s.start, s.end, s.text, s.avg_logprob, s.no_speech_prob, s.seek) for s in t.segments]


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    m = speechcore.load(str(tiny_dir), device="cpu", threads=2)
    yield m
    m.close()


def _stats_after(model, fn):
    before = model.engine_stats()
    out = fn()
    after = model.engine_stats()
    return out, {k: after[k] - before[k] for k in ("windows_discarded", "requests_finished")}


def test_independent_windows_run_ahead_and_match(tiny, longform_audio):
    audio = longform_audio[: 75 * 16000]  # three windows
    opts = dict(without_timestamps=True, condition_on_previous_text=False, **GREEDY)
    ref = tiny.transcribe(audio, **opts)
    tiny.start_engine(max_batch=8)
    got, delta = _stats_after(tiny, lambda: tiny.submit(audio, **opts).result(timeout=300))
    assert _key(got) == _key(ref) and got.text == ref.text
    assert len(ref.segments) == 3
    assert delta["windows_discarded"] == 0  # every guess held: no silent window, no timestamps


def test_wrong_guess_drops_windows_and_still_matches(tiny, longform_audio):
    # A silent first window is skipped without resetting the prompt, so the second window keeps
    # the initial prompt: the engine's guess (prompt reset) is wrong and it must redo the rest.
    audio = np.concatenate([np.zeros(30 * 16000, np.float32), longform_audio[: 40 * 16000]])
    opts = dict(without_timestamps=True, condition_on_previous_text=False, initial_prompt="Sense and Sensibility.",
                **GREEDY)
    ref = tiny.transcribe(audio, **opts)
    assert ref.segments and ref.segments[0].start >= 30.0  # the first window was skipped as silence
    tiny.start_engine(max_batch=8)
    got, delta = _stats_after(tiny, lambda: tiny.submit(audio, **opts).result(timeout=300))
    assert _key(got) == _key(ref) and got.text == ref.text
    assert delta["windows_discarded"] >= 1


def test_sequential_options_do_not_look_ahead(tiny, longform_audio):
    # With timestamps (the default) each window starts where the previous one's last timestamp
    # says: one window in flight per file, nothing to discard.
    audio = longform_audio[: 65 * 16000]
    ref = tiny.transcribe(audio, **GREEDY)
    tiny.start_engine(max_batch=8)
    got, delta = _stats_after(tiny, lambda: tiny.submit(audio, **GREEDY).result(timeout=300))
    assert _key(got) == _key(ref)
    assert delta["windows_discarded"] == 0
