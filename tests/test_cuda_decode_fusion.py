"""The fused decoder step (layer norms inside the products, QKV product writing K/V into the
cache, single-kernel split attention, fused final layer norm; used for <= gemv-rows rows) against
the unfused kernel sequence (SPEECHCORE_DECODE_FUSION=1 / 0, read when a model loads): the same
tokens and the same log-probabilities, bit for bit, in every compute type, for one window and
for small batches whose rows drop out as windows finish."""

from __future__ import annotations

import pytest

import speechcore

pytestmark = pytest.mark.cuda
pytest.importorskip("torch")
pytest.importorskip("transformers")

from test_cuda_whisper import OPTS, seeded_dir  # noqa: E402,F401  (fixture)


def _load(path, compute_type, fused, monkeypatch):
    monkeypatch.setenv("SPEECHCORE_DECODE_FUSION", "1" if fused else "0")
    m = speechcore.load(str(path), device="cuda", compute_type=compute_type)
    monkeypatch.delenv("SPEECHCORE_DECODE_FUSION")
    return m


def _summary(result):
    return [(s.tokens, s.avg_logprob) for s in result.segments]


@pytest.mark.parametrize("compute_type", ["float32", "float16", "bfloat16"])
def test_fused_step_bit_identical_to_unfused(seeded_dir, speech_audio, monkeypatch, compute_type):  # noqa: F811
    fused = _load(seeded_dir, compute_type, True, monkeypatch)
    plain = _load(seeded_dir, compute_type, False, monkeypatch)
    audios = [a for _, a in speech_audio[:3]]
    for a in audios:
        for opts in (OPTS, dict(OPTS, without_timestamps=False)):
            want = _summary(plain.transcribe(a, **opts))
            assert _summary(fused.transcribe(a, **opts)) == want
    assert sum(len(t) for t, _ in _summary(plain.transcribe(audios[0], **OPTS))) > 5  # a real decode ran
    opts = OPTS
    # batches of 2 (both rows fused, then one as the shorter window finishes)
    pair = [audios[0], audios[1][: len(audios[1]) // 2]]
    # Through the engine, which windows share a step depends on when each request's preparation
    # ends (a second thread), so the two runs may batch rows differently: in float32 the same
    # tokens and log-probs equal up to rounding; in half precision a different batch composition
    # may change a pick, so only float32 is compared there.
    if compute_type != "float32":
        return
    want = [_summary(r) for r in plain.transcribe_batch(pair, batch_size=2, **opts)]
    got = [_summary(r) for r in fused.transcribe_batch(pair, batch_size=2, **opts)]
    assert [[t for t, _ in r] for r in got] == [[t for t, _ in r] for r in want]
    for g, w in zip(got, want):
        assert [lp for _, lp in g] == pytest.approx([lp for _, lp in w], rel=1e-5, abs=1e-6)
