"""The VAD modes on the GPU against the CPU path (the oracle), real tiny.en weights in float32:
vad_filter=True through transcribe and the engine, and the batched VAD-chunked mode
(transcribe_chunked on the engine, transcribe(chunked=True) without it) give the CPU's tokens
and times. The Silero weights come from the silero-vad package, or from
.cache/vad/silero_vad_16k.safetensors / SPEECHCORE_TEST_VAD_WEIGHTS (the GPU machine has no
model packages)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import speechcore

pytestmark = pytest.mark.cuda
SR = 16000


@pytest.fixture(scope="module")
def vad_weights() -> str:
    for c in (os.environ.get("SPEECHCORE_TEST_VAD_WEIGHTS"),
              Path(__file__).resolve().parent.parent / ".cache/vad/silero_vad_16k.safetensors"):
        if c and Path(c).is_file():
            return str(c)
    from speechcore import vad

    try:
        return str(vad.silero_vad_weights())
    except speechcore.NotFoundError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def gapped(speech_audio) -> np.ndarray:
    """Eight real clips with 2.5-4 s of silence around each (~58 s, several VAD chunks)."""
    rng = np.random.default_rng(11)
    parts = [np.zeros(3 * SR, np.float32)]
    for _, a in speech_audio[:8]:
        parts += [a, np.zeros(int(SR * rng.uniform(2.5, 4.0)), np.float32)]
    return np.concatenate(parts)


def _segs(t):
    return [(s.tokens, round(s.start, 3), round(s.end, 3)) for s in t.segments]


def test_vad_modes_on_gpu_match_cpu(tiny_dir, gapped, vad_weights):
    cpu = speechcore.load(str(tiny_dir), device="cpu", threads=8)
    gpu = speechcore.load(str(tiny_dir), device="cuda", compute_type="float32")
    try:
        opts = dict(language="en", vad_model_path=vad_weights)
        want = cpu.transcribe(gapped, vad_filter=True, **opts)
        assert want.segments  # speech was found
        assert _segs(gpu.transcribe(gapped, vad_filter=True, **opts)) == _segs(want)
        assert _segs(gpu.submit(gapped, vad_filter=True, **opts).result(timeout=300)) == _segs(want)
        for wt in (True, False):
            want_c = cpu.transcribe(gapped, chunked=True, without_timestamps=wt, **opts)
            assert len(want_c.segments) >= 2
            assert _segs(gpu.transcribe(gapped, chunked=True, without_timestamps=wt, **opts)) == _segs(want_c), wt
            assert _segs(gpu.transcribe_chunked(gapped, without_timestamps=wt, **opts)) == _segs(want_c), wt
    finally:
        cpu.close()
        gpu.close()
