"""Transcription behind the Silero VAD (vad_filter=True, and the batched VAD-chunked mode),
checked against faster-whisper 1.2.1 on the same tiny.en checkpoint and audio:

- vad_filter: WhisperModel.transcribe(vad_filter=True) (greedy, temperature 0);
- chunked: BatchedInferencePipeline.transcribe (greedy), with and without timestamps.

faster-whisper runs its own bundled Silero model (silero_vad_v6.onnx); our VAD loads the same
weights (vad_oracle.faster_whisper_weights), so both find the same speech chunks (checked first)
and the results can be compared segment by segment: same text and tokens, times within 20 ms.
Also: the engine paths (submit, transcribe_stream, transcribe_batch), audio without speech (no
segments, no hallucination, the engine keeps serving), and the typed errors.
"""

from __future__ import annotations

import numpy as np
import pytest

import speechcore
from conftest import GREEDY
from speechcore import vad as scvad

faster_whisper = pytest.importorskip("faster_whisper")
pytest.importorskip("onnx")
from faster_whisper import BatchedInferencePipeline  # noqa: E402
from faster_whisper import vad as fwv  # noqa: E402
from vad_oracle import faster_whisper_weights  # noqa: E402

SR = 16000
TIME_TOL = 0.02  # seconds
FW_SEQUENTIAL = dict(language="en", condition_on_previous_text=True, **GREEDY)
BATCHED_VAD = dict(min_silence_duration_ms=160, max_speech_duration_s=30)  # the pipeline's defaults


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def fw_weights(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("vadfilter") / "fw_silero.safetensors"
    faster_whisper_weights(path)
    return str(path)


@pytest.fixture(scope="module")
def ours(tiny_dir):
    model = speechcore.load(str(tiny_dir), device="cpu", threads=2)
    yield model
    model.close()


@pytest.fixture(scope="module")
def theirs(tiny_dir):
    return faster_whisper.WhisperModel(str(tiny_dir), device="cpu", compute_type="float32", cpu_threads=2)


@pytest.fixture(scope="module")
def gapped(speech_audio) -> np.ndarray:
    """Eight real clips (~31 s of speech) with 2.5-4 s of silence around each (~58 s): several
    VAD chunks, speech longer than one 30 s window."""
    rng = np.random.default_rng(11)
    clips = [a for _, a in speech_audio[:8]]
    parts = [np.zeros(3 * SR, np.float32)]
    for a in clips:
        parts += [a, np.zeros(int(SR * rng.uniform(2.5, 4.0)), np.float32)]
    return np.concatenate(parts)


@pytest.fixture(scope="module")
def padded(speech_audio) -> np.ndarray:
    """One real clip between 12 s and 15 s of quiet noise (a noise floor, not digital zeros)."""
    rng = np.random.default_rng(3)
    noise = lambda s: (3e-4 * rng.standard_normal(int(s * SR))).astype(np.float32)  # noqa: E731
    return np.concatenate([noise(12.0), speech_audio[0][1], noise(15.0)])


def fw_chunks(audio, **options):
    return fwv.get_speech_timestamps(audio, fwv.VadOptions(**options))


def assert_same_segments(ours_segments, fw_segments, what, tokens=True):
    got = [(s.text, s.start, s.end) for s in ours_segments]
    want = [(s.text, s.start, s.end) for s in fw_segments]
    assert [g[0] for g in got] == [w[0] for w in want], f"{what}: texts differ:\n{got}\n{want}"
    for g, w in zip(got, want):
        assert abs(g[1] - w[1]) <= TIME_TOL and abs(g[2] - w[2]) <= TIME_TOL, f"{what}: times {g} vs {w}"
    if tokens:
        assert [s.tokens for s in ours_segments] == [list(s.tokens) for s in fw_segments], f"{what}: tokens"


# ----------------------------------------------------------------------------- parity

@pytest.mark.parametrize("which", ["gapped", "padded"])
def test_same_speech_chunks_as_faster_whisper(which, request, fw_weights):
    """The precondition of the parity tests: our VAD on faster-whisper's weights finds its chunks."""
    audio = request.getfixturevalue(which)
    net = scvad.SileroVad(fw_weights)
    for options in ({}, BATCHED_VAD):
        ref = fw_chunks(audio, **options)
        assert scvad.get_speech_timestamps(audio, vad=net, **options) == ref, options
        assert len(ref) >= (8 if which == "gapped" else 1)


@pytest.fixture(scope="module")
def sequential(ours, theirs, gapped, padded, fw_weights):
    """(ours, faster-whisper's segments, faster-whisper's info) of vad_filter=True per audio."""
    out = {}
    for name, audio in (("gapped", gapped), ("padded", padded)):
        fw, info = theirs.transcribe(audio, vad_filter=True, **FW_SEQUENTIAL)
        fw = list(fw)
        sc = ours.transcribe(audio, vad_filter=True, vad_model_path=fw_weights, **FW_SEQUENTIAL)
        out[name] = (sc, fw, info)
    return out


@pytest.mark.parametrize("which", ["gapped", "padded"])
def test_vad_filter_matches_faster_whisper(which, sequential, request):
    sc, fw, info = sequential[which]
    audio = request.getfixturevalue(which)
    assert len(fw) >= (8 if which == "gapped" else 1)
    assert_same_segments(sc.segments, fw, which)
    assert sc.duration == pytest.approx(info.duration) == pytest.approx(len(audio) / SR)
    assert sc.text == "".join(s.text for s in fw).strip()
    # the times are on the input's timeline: the first segment starts after the leading silence
    assert sc.segments[0].start >= (2.5 if which == "gapped" else 11.0)
    if which == "gapped":
        assert sc.segments[-1].end > 45.0  # past the first 30 s window of speech, mapped back
        assert [s.id for s in sc.segments] == list(range(1, len(sc.segments) + 1))


def test_vad_parameters_match_faster_whisper(ours, theirs, padded, fw_weights):
    params = dict(min_silence_duration_ms=500, speech_pad_ms=200, threshold=0.4)
    fw, _ = theirs.transcribe(padded, vad_filter=True, vad_parameters=params, **FW_SEQUENTIAL)
    fw = list(fw)
    sc = ours.transcribe(padded, vad_filter=True, vad_parameters=params, vad_model_path=fw_weights, **FW_SEQUENTIAL)
    assert_same_segments(sc.segments, fw, "vad_parameters dict")
    # a VadOptions object (faster-whisper's, or ours) gives the same
    again = ours.transcribe(padded, vad_filter=True, vad_parameters=fwv.VadOptions(**params),
                            vad_model_path=fw_weights, **FW_SEQUENTIAL)
    assert [(s.text, s.start, s.end) for s in again.segments] == [(s.text, s.start, s.end) for s in sc.segments]
    assert speechcore.TranscribeOptions(vad_parameters=scvad.VadOptions(**params)).to_native()["vad_parameters"] == \
        speechcore.TranscribeOptions(vad_parameters=params).to_native()["vad_parameters"]


@pytest.mark.parametrize("without_timestamps", [True, False])
def test_chunked_matches_batched_pipeline(without_timestamps, ours, theirs, gapped, fw_weights):
    pipeline = BatchedInferencePipeline(theirs)
    fw, info = pipeline.transcribe(gapped, language="en", batch_size=8, without_timestamps=without_timestamps,
                                   **GREEDY)
    fw = list(fw)
    ours.start_engine(max_batch=8)  # fresh statistics
    try:
        sc = ours.transcribe_chunked(gapped, language="en", without_timestamps=without_timestamps,
                                     vad_model_path=fw_weights, **GREEDY)
        stats = ours.engine_stats()
    finally:
        ours.start_engine()
    groups = scvad.collect_chunks(gapped, fw_chunks(gapped, **BATCHED_VAD), max_duration=30)[1]
    assert len(groups) >= 2  # several 30 s groups, decoded together:
    assert stats["tokens_generated"] > stats["steps"]  # some engine steps advanced several windows
    assert sc.duration == pytest.approx(info.duration)
    what = f"chunked without_timestamps={without_timestamps}"
    if without_timestamps:
        assert len(fw) == len(groups)  # one segment per group
        matched = sc.segments
    else:
        # With timestamps the pipeline drops a group's text after its last timestamp pair; we
        # decode it from there (as the sequential algorithm does): the pipeline's segments are
        # ours minus those re-decoded tails (at most one run of them per group).
        matched, extra = [], []
        for s in sc.segments:
            if len(matched) < len(fw) and s.text == fw[len(matched)].text:
                matched.append(s)
            else:
                extra.append(s)
        assert len(extra) <= len(groups), f"{what}: extra segments {extra}"
        for e in extra:
            # a tail continues where the segment before it ends
            i = sc.segments.index(e)
            assert i > 0 and abs(e.start - sc.segments[i - 1].end) <= TIME_TOL, e
    assert_same_segments(matched, fw, what, tokens=False)
    for s, w in zip(matched, fw):
        assert s.seek == w.seek
        assert s.tokens == list(w.tokens)  # text and timestamp tokens
    if not without_timestamps:
        return
    # the same mode without the engine (Model.transcribe: the groups as one run_batch)
    direct = ours.transcribe(gapped, language="en", chunked=True, without_timestamps=without_timestamps,
                             vad_model_path=fw_weights, **GREEDY)
    assert [(s.text, s.start, s.end, s.seek, s.tokens) for s in direct.segments] == \
        [(s.text, s.start, s.end, s.seek, s.tokens) for s in sc.segments]
    assert direct.text == sc.text


def test_chunked_chunk_length_matches_batched_pipeline(ours, theirs, gapped, fw_weights):
    """chunk_length with chunked=True: speech merged into groups of at most chunk_length
    seconds, as BatchedInferencePipeline's chunk_length."""
    pipeline = BatchedInferencePipeline(theirs)
    fw, _ = pipeline.transcribe(gapped, language="en", batch_size=8, without_timestamps=True, chunk_length=12,
                                **GREEDY)
    fw = list(fw)
    sc = ours.transcribe(gapped, language="en", chunked=True, without_timestamps=True, chunk_length=12,
                         vad_model_path=fw_weights, **GREEDY)
    default = ours.transcribe(gapped, language="en", chunked=True, without_timestamps=True,
                              vad_model_path=fw_weights, **GREEDY)
    assert len(sc.segments) > len(default.segments)  # shorter groups
    assert_same_segments(sc.segments, fw, "chunked chunk_length=12", tokens=False)
    assert [s.tokens for s in sc.segments] == [list(w.tokens) for w in fw]


# ----------------------------------------------------------------------------- engine paths

def test_engine_paths_equal_transcribe(ours, sequential, gapped, padded, fw_weights):
    want = sequential["gapped"][0]
    streamed = list(ours.transcribe_stream(gapped, vad_filter=True, vad_model_path=fw_weights, **FW_SEQUENTIAL))
    assert [(s.id, s.text, s.start, s.end, s.tokens) for s in streamed] == \
        [(s.id, s.text, s.start, s.end, s.tokens) for s in want.segments]
    silence = np.zeros(10 * SR, np.float32)
    batch = ours.transcribe_batch([padded, silence], vad_filter=True, vad_model_path=fw_weights, **FW_SEQUENTIAL)
    one = sequential["padded"][0]
    assert [(s.text, s.start, s.end) for s in batch[0].segments] == [(s.text, s.start, s.end) for s in one.segments]
    assert batch[1].segments == [] and batch[1].text == "" and batch[1].duration == pytest.approx(10.0)


def test_no_speech_gives_nothing_and_the_engine_keeps_serving(ours, speech_audio, fw_weights):
    rng = np.random.default_rng(8)
    silence = np.zeros(20 * SR, np.float32)
    hiss = (1e-3 * rng.standard_normal(20 * SR)).astype(np.float32)
    for audio in (silence, hiss):
        assert scvad.get_speech_timestamps(audio, vad=scvad.SileroVad(fw_weights)) == []
        for kwargs in (dict(vad_filter=True), dict(chunked=True)):
            r = ours.transcribe(audio, vad_model_path=fw_weights, **kwargs)
            assert r.segments == [] and r.text == "" and r.duration == pytest.approx(20.0), kwargs
            assert r.language == "en"
        assert ours.transcribe_chunked(audio, vad_model_path=fw_weights).segments == []
    before = ours.engine_stats()
    futures = [ours.submit(a, vad_model_path=fw_weights, **kw)
               for a in (silence, hiss) for kw in (dict(vad_filter=True), dict(chunked=True))]
    assert all(f.result(timeout=60).segments == [] for f in futures)
    clip = speech_audio[1][1]
    assert ours.submit(clip, vad_filter=True, vad_model_path=fw_weights).result(timeout=60).text == \
        ours.transcribe(clip).text
    after = ours.engine_stats()
    assert after["requests_failed"] == before["requests_failed"]
    assert after["requests_finished"] == before["requests_finished"] + 5


# ----------------------------------------------------------------------------- errors

def test_errors(ours, speech_audio, fw_weights, tmp_path, monkeypatch):
    clip = speech_audio[1][1]
    native = ours._native
    # the C++ API needs the weights path: a typed error naming the option
    with pytest.raises(speechcore.InvalidArgumentError, match="vad_model_path"):
        native.transcribe(clip, SR, {"vad_filter": True})
    with pytest.raises(speechcore.InvalidArgumentError, match="vad_model_path"):
        native.check_options({"chunked": True})
    with pytest.raises(speechcore.NotFoundError):
        native.transcribe(clip, SR, {"vad_filter": True, "vad_model_path": str(tmp_path / "missing.safetensors")})
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(speechcore.ModelError):
        ours.transcribe(clip, vad_filter=True, vad_model_path=bad)
    with pytest.raises(speechcore.InvalidArgumentError, match="threshold"):
        ours.transcribe(clip, vad_filter=True, vad_model_path=fw_weights, vad_parameters={"threshold": 2.0})
    with pytest.raises(speechcore.InvalidArgumentError, match="unknown VAD option"):
        ours.transcribe(clip, vad_filter=True, vad_model_path=fw_weights, vad_parameters={"treshold": 0.4})
    with pytest.raises(speechcore.InvalidArgumentError, match="vad_parameters"):
        native.transcribe(clip, SR, {"vad_filter": True, "vad_model_path": fw_weights, "vad_parameters": 3})
    with pytest.raises(speechcore.InvalidArgumentError):
        ours.transcribe(clip, vad_filter="yes")
    with pytest.raises(speechcore.InvalidArgumentError, match="chunked"):
        ours.transcribe_chunked(clip, chunked=False)
    # batch: checked before anything is submitted; engine: only that request fails
    with pytest.raises(speechcore.NotFoundError):
        ours.transcribe_batch([clip], vad_filter=True, vad_model_path=tmp_path / "missing.safetensors")
    future = ours.submit(clip, chunked=True, vad_model_path=tmp_path / "missing.safetensors")
    with pytest.raises(speechcore.NotFoundError):
        future.result(timeout=60)
    assert ours.submit(clip).result(timeout=60).text == ours.transcribe(clip).text
    # without the silero-vad package (and no path), the Python SDK says how to install it
    def missing():
        raise speechcore.NotFoundError('Silero VAD weights not found: pip install --no-deps "silero-vad==6.2.3"')
    monkeypatch.setattr(scvad, "silero_vad_weights", missing)
    with pytest.raises(speechcore.NotFoundError, match="silero-vad"):
        ours.transcribe(clip, vad_filter=True)


def test_default_weights_are_the_silero_vad_package(ours, speech_audio):
    """Without vad_model_path the SDK uses the silero-vad package's safetensors file."""
    try:
        path = scvad.silero_vad_weights()
    except speechcore.NotFoundError:
        pytest.skip("silero-vad is not installed (pip install --no-deps silero-vad==6.2.3)")
    clip = speech_audio[0][1]
    a = ours.transcribe(clip, vad_filter=True)
    b = ours.transcribe(clip, vad_filter=True, vad_model_path=path)
    assert [(s.text, s.start, s.end) for s in a.segments] == [(s.text, s.start, s.end) for s in b.segments]
    assert a.segments
