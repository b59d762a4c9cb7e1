"""Silero VAD run by speechcore (C++), checked against independent implementations:

- the network: onnxruntime running silero-vad's own ONNX graph (silero_vad_16k_op15.onnx) with
  the same weights (the package's silero_vad_16k.safetensors put into the graph), with the graph's
  own weights (converted to a safetensors file for us), and faster-whisper's bundled model;
- the speech-timestamp algorithm: faster-whisper 1.2.1's get_speech_timestamps (unmodified,
  driven by the onnxruntime model) and silero-vad 6.2.3's get_speech_timestamps_from_probs;
- collect_chunks and SpeechTimestampsMap: faster-whisper's.

Note: the three weight sets differ (the safetensors file is not the weights of the package's
ONNX/JIT models, nor of faster-whisper's silero_vad_v6.onnx), so each comparison runs the
oracle on the weights we load.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import math
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

import speechcore
from speechcore import _C
from speechcore import vad as scvad

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
from vad_oracle import (  # noqa: E402  (tests/ is on sys.path: pytest's rootdir conftest)
    SR, WIN, OnnxVad, faster_whisper_weights, onnx_weights, shipped_weights_onnx_model, silero_data_dir)

PROB_TOL = 1e-4


# ----------------------------------------------------------------------------- oracles

@pytest.fixture(scope="session")
def silero_data() -> Path:
    d = silero_data_dir()
    if d is None:
        pytest.skip("silero-vad is not installed (pip install --no-deps silero-vad==6.2.3)")
    assert (d / "silero_vad_16k_op15.onnx").is_file()
    return d


@pytest.fixture(scope="session")
def shipped_vad(silero_data):
    return scvad.SileroVad(silero_data / "silero_vad_16k.safetensors")


@pytest.fixture(scope="session")
def shipped_oracle(silero_data) -> OnnxVad:
    """silero-vad's official graph with the shipped safetensors weights in place of its own."""
    return OnnxVad(shipped_weights_onnx_model(silero_data))


@pytest.fixture(scope="session")
def official(silero_data, tmp_path_factory):
    """(our SileroVad on the official ONNX model's weights, onnxruntime on that unmodified model)."""
    from safetensors.numpy import save_file

    path = tmp_path_factory.mktemp("vad") / "official.safetensors"
    save_file(onnx_weights(silero_data / "silero_vad_16k_op15.onnx"), str(path))
    return scvad.SileroVad(path), OnnxVad((silero_data / "silero_vad_16k_op15.onnx").read_bytes())


@pytest.fixture(scope="session")
def fw_vad(tmp_path_factory):
    """Our SileroVad on faster-whisper's bundled model's weights."""
    path = tmp_path_factory.mktemp("vad") / "fw.safetensors"
    faster_whisper_weights(path)
    return scvad.SileroVad(path)


@pytest.fixture(scope="session")
def silero_algorithm():
    """silero-vad 6.2.3's get_speech_timestamps_from_probs, loaded from its utils_vad.py without
    running the package's __init__ (which would set torch's thread count for the session)."""
    pytest.importorskip("torch")
    path = Path(str(importlib.metadata.distribution("silero-vad").locate_file("silero_vad/utils_vad.py")))
    spec = importlib.util.spec_from_file_location("_silero_utils_vad", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.get_speech_timestamps_from_probs


def fw_timestamps(audio: np.ndarray, probs_fn, monkeypatch, **options) -> list:
    """faster-whisper's get_speech_timestamps, unmodified, with its model replaced by probs_fn
    (None: its own bundled model)."""
    from faster_whisper import vad as fwv

    if probs_fn is not None:
        monkeypatch.setattr(fwv, "get_vad_model", lambda: probs_fn)
    try:
        return fwv.get_speech_timestamps(audio, fwv.VadOptions(**options))
    finally:
        monkeypatch.undo()


def assert_regions_close(ours: list, ref: list, what: str, tol: int = WIN):
    assert len(ours) == len(ref), f"{what}: {len(ours)} chunks vs {len(ref)}: {ours} vs {ref}"
    for a, b in zip(ours, ref):
        assert abs(a["start"] - b["start"]) <= tol and abs(a["end"] - b["end"]) <= tol, f"{what}: {ours} vs {ref}"


# ----------------------------------------------------------------------------- audio

@pytest.fixture(scope="session")
def synthetic(speech_audio) -> dict:
    """Speech between silences (real clips and zeros), noise, silence, very short audio."""
    rng = np.random.default_rng(5)
    clips = dict(speech_audio)
    a = clips["sense_and_sensibility_01_austen_64kb-0880.wav"]
    b = clips["001.wav"]
    z = lambda s: np.zeros(int(s * SR), np.float32)  # noqa: E731
    return {
        "speech_between_silences": np.concatenate([z(1.5), a, z(3.0), b, z(0.4), a, z(1.0)]),
        "white_noise": (0.1 * rng.standard_normal(5 * SR)).astype(np.float32),
        "quiet_noise_then_speech": np.concatenate([(0.003 * rng.standard_normal(2 * SR)).astype(np.float32), b]),
        "silence": z(5.0),
        "short_100": a[8000:8100].copy(),
        "short_512": a[8000:8512].copy(),
        "short_513": a[8000:8513].copy(),
        "one_sample": a[9000:9001].copy(),
    }


def all_audio(speech_audio, synthetic, longform_audio=None):
    items = list(speech_audio) + list(synthetic.items())
    if longform_audio is not None:
        items.append(("longform", longform_audio))
    return items


# ----------------------------------------------------------------------------- the network

def test_probs_match_onnxruntime_on_shipped_weights(shipped_vad, shipped_oracle, speech_audio, synthetic, longform_audio):
    worst = 0.0
    for name, audio in all_audio(speech_audio, synthetic, longform_audio):
        ours = shipped_vad.speech_probs(audio)
        ref = shipped_oracle(audio)
        assert ours.dtype == np.float32 and ours.shape == (math.ceil(len(audio) / WIN),), name
        err = float(np.abs(ours - ref).max())
        worst = max(worst, err)
        assert err < PROB_TOL, f"{name}: max |p - p_onnx| = {err}"
    # speech was found where there is speech: the probabilities are not trivially equal
    probs = shipped_vad.speech_probs(dict(speech_audio)["001.wav"])
    assert probs.max() > 0.9 and probs.min() < 0.2
    print(f"max probability difference vs onnxruntime: {worst:.2e}")


def test_probs_match_official_onnx_model(official, speech_audio, synthetic):
    ours_vad, oracle = official
    for name, audio in all_audio(speech_audio, synthetic):
        err = float(np.abs(ours_vad.speech_probs(audio) - oracle(audio)).max())
        assert err < PROB_TOL, f"{name}: {err}"


def test_probs_match_faster_whisper_model(fw_vad, speech_audio, synthetic):
    from faster_whisper.vad import get_vad_model

    model = get_vad_model()
    for name, audio in all_audio(speech_audio, synthetic):
        # One spare zero window at the end: faster-whisper's model zeroes the last 64 samples of
        # the array it is given in place (get_speech_timestamps always pads at least 1 sample).
        nw = -(-len(audio) // WIN)
        padded = np.zeros((nw + 1) * WIN, np.float32)
        padded[: len(audio)] = audio
        ref = np.asarray(model(padded)).reshape(-1)[:nw]
        err = float(np.abs(fw_vad.speech_probs(audio) - ref).max())
        assert err < PROB_TOL, f"{name}: {err}"


def test_streaming_equals_whole(shipped_vad, longform_audio):
    audio = longform_audio[: 20 * SR + 300]
    whole = shipped_vad.speech_probs(audio)
    rng = np.random.default_rng(0)
    stream = shipped_vad.stream()
    parts, pos = [], 0
    while pos < len(audio):
        step = int(rng.integers(1, 3000))
        parts.append(stream.process(audio[pos:pos + step]))
        pos += step
    parts.append(stream.flush())
    assert stream.samples == len(audio)
    got = np.concatenate(parts)
    # BLAS sums in another order for other block sizes: equal up to float rounding
    np.testing.assert_allclose(got, whole, rtol=0, atol=1e-5)
    # native streaming: window by window with one state
    state = _C.vad.State()
    n = (len(audio) // WIN) * WIN
    one = np.concatenate([shipped_vad._native.process(state, audio[i:i + WIN]) for i in range(0, n, WIN)])
    np.testing.assert_allclose(one, whole[: n // WIN], rtol=0, atol=1e-5)
    stream.reset()
    np.testing.assert_allclose(stream.process(audio[: 3 * WIN]), whole[:3], rtol=0, atol=1e-5)


def test_speech_probs_threads_independent(shipped_vad, speech_audio):
    from concurrent.futures import ThreadPoolExecutor

    audios = [a for _, a in speech_audio]
    serial = [shipped_vad.speech_probs(a) for a in audios]
    with ThreadPoolExecutor(4) as ex:
        parallel = list(ex.map(shipped_vad.speech_probs, audios))
    for s, p in zip(serial, parallel):
        np.testing.assert_array_equal(s, p)


# ----------------------------------------------------------------------------- timestamps

OPTION_SETS = [
    {},                                                   # faster-whisper's defaults
    {"max_speech_duration_s": 30, "min_silence_duration_ms": 160},  # faster-whisper's batched mode
    {"min_silence_duration_ms": 100, "speech_pad_ms": 30, "min_speech_duration_ms": 250},  # silero-vad's
    {"threshold": 0.7, "neg_threshold": 0.4, "min_silence_duration_ms": 300, "speech_pad_ms": 100},
    {"threshold": 0.3, "min_silence_duration_ms": 0, "speech_pad_ms": 0},
    {"max_speech_duration_s": 2.5, "min_silence_duration_ms": 200, "speech_pad_ms": 50},
]


@pytest.mark.parametrize("options", OPTION_SETS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "defaults")
def test_timestamps_match_faster_whisper(options, shipped_vad, shipped_oracle, speech_audio, synthetic, longform_audio,
                                         monkeypatch):
    exact = 0
    items = all_audio(speech_audio, synthetic, longform_audio)
    for name, audio in items:
        ours = scvad.get_speech_timestamps(audio, vad=shipped_vad, **options)
        ref = fw_timestamps(audio, shipped_oracle, monkeypatch, **options)
        assert_regions_close(ours, ref, name)
        exact += ours == ref
    assert exact >= len(items) - 1  # differences can only come from a probability at a threshold


def test_timestamps_match_faster_whisper_end_to_end(fw_vad, speech_audio, synthetic, longform_audio, monkeypatch):
    """faster-whisper unmodified (its own model and code) vs us on that model's weights."""
    for options in (OPTION_SETS[0], OPTION_SETS[1], OPTION_SETS[2]):
        for name, audio in all_audio(speech_audio, synthetic, longform_audio):
            ours = scvad.get_speech_timestamps(audio, vad=fw_vad, **options)
            assert_regions_close(ours, fw_timestamps(audio, None, monkeypatch, **options), f"{name} {options}")


def test_expected_speech_regions(shipped_vad, synthetic, speech_audio):
    """Sanity of the shipped weights on audio whose speech we know."""
    z = scvad.get_speech_timestamps(synthetic["silence"], vad=shipped_vad)
    assert z == []
    assert scvad.get_speech_timestamps(synthetic["white_noise"], vad=shipped_vad) == []
    spans = scvad.get_speech_timestamps(synthetic["speech_between_silences"], vad=shipped_vad,
                                        min_silence_duration_ms=500, speech_pad_ms=0)
    a = len(dict(speech_audio)["sense_and_sensibility_01_austen_64kb-0880.wav"])
    # the first clip starts at 1.5 s and the 3 s gap after it is not speech
    assert abs(spans[0]["start"] - 1.5 * SR) < 0.5 * SR
    gap = (int(1.5 * SR) + a, int(4.5 * SR) + a)
    assert all(s["end"] <= gap[0] + 0.5 * SR or s["start"] >= gap[1] for s in spans)


def random_probs(rng, n: int) -> np.ndarray:
    """Probability sequences with runs of speech, silence and in-between values."""
    out = []
    while len(out) < n:
        kind = rng.integers(3)
        length = int(rng.integers(1, 120))
        lo, hi = [(0.6, 1.0), (0.0, 0.3), (0.3, 0.6)][kind]
        out.extend(rng.uniform(lo, hi, length))
    return np.asarray(out[:n], np.float32)


def random_options(rng) -> dict:
    return {
        "threshold": float(rng.choice([0.3, 0.5, 0.65])),
        "neg_threshold": [None, 0.2, 0.45][int(rng.integers(3))],
        "min_speech_duration_ms": float(rng.choice([0, 100, 250, 1000])),
        "max_speech_duration_s": float(rng.choice([math.inf, 1.0, 2.5, 6.0])),
        "min_silence_duration_ms": float(rng.choice([0, 100, 160, 700, 2000])),
        "speech_pad_ms": float(rng.choice([0, 30, 100, 400])),
        "min_silence_at_max_speech": float(rng.choice([98, 0, 300])),
        "use_max_poss_sil_at_max_speech": bool(rng.integers(2)),
    }


def test_algorithm_equals_silero_and_faster_whisper_on_random_probs(silero_algorithm, monkeypatch):
    """The state machine alone, exactly: silero-vad's (every option) and faster-whisper's
    (its fixed 98 ms and last-silence split) on the same probability sequences."""
    rng = np.random.default_rng(1)
    cases = fw_cases = 0
    for _ in range(300):
        probs = random_probs(rng, int(rng.integers(1, 900)))
        length = WIN * (len(probs) - 1) + int(rng.integers(0, WIN))  # faster-whisper's framing
        opts = random_options(rng)
        ours = scvad.speech_timestamps_from_probs(probs, length, **opts)
        ref = silero_algorithm([float(p) for p in probs], sampling_rate=SR, audio_length_samples=length, **opts)
        assert ours == ref, (opts, len(probs), length)
        cases += bool(ref)
        if opts["min_silence_at_max_speech"] == 98 and not opts["use_max_poss_sil_at_max_speech"]:
            fw_opts = {k: v for k, v in opts.items() if k not in ("min_silence_at_max_speech", "use_max_poss_sil_at_max_speech")}
            fw = fw_timestamps(np.zeros(length, np.float32), lambda padded: probs[: len(padded) // WIN], monkeypatch, **fw_opts)
            assert ours == fw, (opts, len(probs), length)
            fw_cases += 1
    assert cases > 200 and fw_cases > 30


def test_max_speech_split_matches_silero_on_real_audio(shipped_vad, shipped_oracle, longform_audio, silero_algorithm):
    probs = shipped_oracle(longform_audio)
    for use_max in (True, False):
        for max_s in (3.0, 8.0):
            opts = dict(max_speech_duration_s=max_s, min_silence_duration_ms=1000, speech_pad_ms=30,
                        use_max_poss_sil_at_max_speech=use_max)
            ours = scvad.get_speech_timestamps(longform_audio, vad=shipped_vad, **opts)
            ref = silero_algorithm([float(p) for p in probs], sampling_rate=SR,  # its defaults differ: all options
                                   audio_length_samples=len(longform_audio), **asdict(scvad.VadOptions(**opts)))
            assert_regions_close(ours, ref, str(opts))
            assert max(c["end"] - c["start"] for c in ours) <= max_s * SR + WIN


# ----------------------------------------------------------------------------- chunks and time map

def test_collect_chunks_matches_faster_whisper(shipped_vad, longform_audio):
    from faster_whisper import vad as fwv

    chunks = scvad.get_speech_timestamps(longform_audio, vad=shipped_vad, max_speech_duration_s=12,
                                         min_silence_duration_ms=300)
    assert len(chunks) > 5
    for max_duration in (math.inf, 30.0, 10.0):
        audios, meta = scvad.collect_chunks(longform_audio, chunks, max_duration=max_duration)
        ref_audios, ref_meta = fwv.collect_chunks(longform_audio, chunks, max_duration=max_duration)
        if ref_audios[0].size == 0 and len(ref_audios) > 1:  # faster-whisper's empty first group
            ref_audios, ref_meta = ref_audios[1:], ref_meta[1:]
        assert len(audios) == len(ref_audios)
        for a, b, m, r in zip(audios, ref_audios, meta, ref_meta):
            np.testing.assert_array_equal(a, b)
            assert m["offset"] == pytest.approx(r["offset"], abs=1e-12)
            assert m["duration"] == pytest.approx(r["duration"], abs=1e-12)
            assert len(a) <= max_duration * SR or len(m["segments"]) == 1
        # every chunk is in exactly one group, in order
        assert [s for m in meta for s in m["segments"]] == chunks
        # faster-whisper lists them too, except the first chunk of each later group
        assert ref_meta[0]["segments"] == meta[0]["segments"]
        for m, r in zip(meta[1:], ref_meta[1:]):
            assert r["segments"] == m["segments"][1:]
    empty_audios, empty_meta = scvad.collect_chunks(longform_audio, [])
    assert len(empty_audios) == 1 and empty_audios[0].size == 0
    assert empty_meta == [{"offset": 0, "duration": 0, "segments": []}]


def test_speech_timestamps_map_matches_faster_whisper(shipped_vad, longform_audio):
    from faster_whisper import vad as fwv

    chunks = scvad.get_speech_timestamps(longform_audio, vad=shipped_vad, min_silence_duration_ms=300)
    ours = scvad.SpeechTimestampsMap(chunks, SR)
    ref = fwv.SpeechTimestampsMap(chunks, SR)
    speech = sum(c["end"] - c["start"] for c in chunks) / SR
    rng = np.random.default_rng(2)
    times = list(rng.uniform(0, speech, 400)) + [ce / SR for ce in ref.chunk_end_sample] + [0.0, speech, speech + 3]
    times += [round(t, 2) for t in rng.uniform(0, speech, 200)]  # segment-like times
    for t in times:
        for is_end in (False, True):
            assert ours.get_chunk_index(t, is_end) == ref.get_chunk_index(t, is_end), t
            assert ours.get_original_time(t, is_end=is_end) == ref.get_original_time(t, is_end=is_end), t
        i = int(rng.integers(len(chunks)))
        assert ours.get_original_time(t, i) == ref.get_original_time(t, i)
    precise = scvad.SpeechTimestampsMap(chunks, SR, time_precision=4)
    ref4 = fwv.SpeechTimestampsMap(chunks, SR, time_precision=4)
    assert all(precise.get_original_time(t) == ref4.get_original_time(t) for t in times)
    assert scvad.SpeechTimestampsMap([], SR).get_original_time(1.234) == 1.23


# ----------------------------------------------------------------------------- rates, options, errors

def test_8khz_is_resampled_in_python_and_refused_natively(shipped_vad, speech_audio):
    audio16 = dict(speech_audio)["sense_and_sensibility_01_austen_64kb-0870.wav"]
    audio8 = _C.resample(audio16, SR, 8000)
    ours = scvad.get_speech_timestamps(audio8, sample_rate=8000, vad=shipped_vad, min_silence_duration_ms=300)
    # positions are in samples of the 16 kHz audio the network saw (the 8 kHz input resampled)
    same = scvad.get_speech_timestamps(_C.resample(audio8, 8000, SR), vad=shipped_vad, min_silence_duration_ms=300)
    assert ours == same
    direct = scvad.get_speech_timestamps(audio16, vad=shipped_vad, min_silence_duration_ms=300)
    assert_regions_close(ours, direct, "8 kHz vs 16 kHz", tol=3 * WIN)
    # stereo 44.1 kHz input is mixed down and resampled too
    stereo = np.stack([_C.resample(audio16, SR, 44100)] * 2, axis=1)
    assert_regions_close(scvad.get_speech_timestamps(stereo, sample_rate=44100, vad=shipped_vad,
                                                     min_silence_duration_ms=300), direct, "44.1 kHz stereo", tol=3 * WIN)
    with pytest.raises(speechcore.InvalidArgumentError, match="16000 Hz"):
        shipped_vad._native.speech_timestamps(audio8, 8000, {})
    with pytest.raises(speechcore.InvalidArgumentError):
        scvad.get_speech_timestamps(audio16, sample_rate=0, vad=shipped_vad)


def test_defaults_match_faster_whisper():
    from faster_whisper.vad import VadOptions as FwOptions

    ours = scvad.VadOptions()
    fw = FwOptions()
    for f in ("threshold", "neg_threshold", "min_speech_duration_ms", "max_speech_duration_s",
              "min_silence_duration_ms", "speech_pad_ms"):
        assert getattr(ours, f) == getattr(fw, f), f
    # the Python defaults are the C++ defaults
    assert asdict(ours) == _C.vad.default_options()


def test_option_errors(shipped_vad):
    audio = np.zeros(SR, np.float32)
    bad = [{"threshold": 1.5}, {"threshold": float("nan")}, {"neg_threshold": -0.1}, {"min_silence_duration_ms": -1},
           {"speech_pad_ms": float("inf")}, {"max_speech_duration_s": 0}, {"min_speech_duration_ms": "x"},
           {"use_max_poss_sil_at_max_speech": "yes"}]
    for opts in bad:
        with pytest.raises(speechcore.InvalidArgumentError):
            scvad.get_speech_timestamps(audio, vad=shipped_vad, **opts)
    with pytest.raises(speechcore.InvalidArgumentError, match="unknown VAD option"):
        scvad.get_speech_timestamps(audio, vad=shipped_vad, min_silence_ms=100)
    with pytest.raises(speechcore.InvalidArgumentError, match="not both"):
        scvad.get_speech_timestamps(audio, scvad.VadOptions(), vad=shipped_vad, threshold=0.4)
    # a VadOptions or a dict of its fields
    assert scvad.get_speech_timestamps(audio, scvad.VadOptions(threshold=0.4), vad=shipped_vad) == []
    assert scvad.get_speech_timestamps(audio, {"threshold": 0.4}, vad=shipped_vad) == []
    from faster_whisper.vad import VadOptions as FwOptions  # faster-whisper's options object works too

    speechy = scvad.get_speech_timestamps(audio, FwOptions(threshold=0.0, speech_pad_ms=0), vad=shipped_vad)
    assert speechy == [{"start": 0, "end": SR}]
    with pytest.raises(speechcore.InvalidArgumentError):
        scvad.collect_chunks(audio, [{"start": 10, "end": 5}])
    with pytest.raises(speechcore.InvalidArgumentError):
        scvad.collect_chunks(audio, [{"start": 0, "end": SR + 1}])
    with pytest.raises(speechcore.InvalidArgumentError):
        scvad.collect_chunks(audio, [{"begin": 0}])


def test_audio_errors(shipped_vad):
    nan = np.zeros(2 * WIN, np.float32)
    nan[700] = np.nan
    with pytest.raises(speechcore.AudioError):
        shipped_vad._native.speech_probs(nan)
    with pytest.raises(speechcore.AudioError):
        scvad.get_speech_timestamps(nan, vad=shipped_vad)
    with pytest.raises(speechcore.AudioError):
        scvad.get_speech_timestamps(np.zeros(0, np.float32), vad=shipped_vad)
    with pytest.raises(speechcore.InvalidArgumentError):
        shipped_vad._native.speech_probs(np.zeros(WIN, np.int16))
    with pytest.raises(speechcore.InvalidArgumentError, match="whole number"):
        shipped_vad._native.process(_C.vad.State(), np.zeros(WIN + 1, np.float32))
    with pytest.raises(speechcore.InvalidArgumentError):
        shipped_vad.stream().process(np.zeros((2, WIN), np.float32))
    assert shipped_vad._native.speech_probs(np.zeros(0, np.float32)).shape == (0,)


def test_weights_errors(tmp_path, silero_data, monkeypatch):
    from safetensors.numpy import load_file, save_file

    with pytest.raises(speechcore.NotFoundError):
        scvad.SileroVad(tmp_path / "missing.safetensors")
    with pytest.raises(speechcore.NotFoundError):  # the native loader's own check
        _C.vad.SileroVad(str(tmp_path / "missing.safetensors"))
    with pytest.raises(speechcore.InvalidArgumentError):
        scvad.SileroVad(tmp_path)
    weights = load_file(str(silero_data / "silero_vad_16k.safetensors"))
    missing = {k: v for k, v in weights.items() if k != "lstm_cell.bias_hh"}
    save_file(missing, str(tmp_path / "missing_tensor.safetensors"))
    with pytest.raises(speechcore.ModelError, match="lstm_cell.bias_hh"):
        scvad.SileroVad(tmp_path / "missing_tensor.safetensors")
    wrong = dict(weights)
    wrong["conv2.weight"] = np.zeros((64, 128, 5), np.float32)
    save_file(wrong, str(tmp_path / "wrong_shape.safetensors"))
    with pytest.raises(speechcore.ModelError, match="conv2.weight"):
        scvad.SileroVad(tmp_path / "wrong_shape.safetensors")
    (tmp_path / "garbage.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(speechcore.ModelError):
        scvad.SileroVad(tmp_path / "garbage.safetensors")
    # half-precision weights are converted at load
    save_file({k: v.astype(np.float16) for k, v in weights.items()}, str(tmp_path / "half.safetensors"))
    half = scvad.SileroVad(tmp_path / "half.safetensors")
    assert half.speech_probs(np.zeros(4 * WIN, np.float32)).shape == (4,)

    # the package is found by its metadata; without it, a NotFoundError with the pip command
    assert scvad.silero_vad_weights() == silero_data / "silero_vad_16k.safetensors"

    def absent(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", absent)
    with pytest.raises(speechcore.NotFoundError, match="pip install --no-deps"):
        scvad.silero_vad_weights()
    with pytest.raises(speechcore.NotFoundError, match="pip install --no-deps"):
        scvad.SileroVad()


def test_runtime_does_not_import_torch(silero_data, speech_audio):
    """The VAD needs only the weights file: no torch (silero-vad's dependency), no onnxruntime."""
    code = ("import sys, numpy as np; from speechcore import vad; "
            "a = np.zeros(16000, np.float32); vad.get_speech_timestamps(a); vad.SileroVad().speech_probs(a); "
            "bad = [m for m in ('torch', 'onnxruntime', 'silero_vad', 'faster_whisper') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120,
                   env={**__import__("os").environ, "PYTHONPATH": str(Path(scvad.__file__).parent.parent)})


def test_speed(shipped_vad, longform_audio):
    """The network costs little next to the ASR model: far faster than real time on one core."""
    import time

    shipped_vad.speech_probs(longform_audio[:SR])
    t = time.perf_counter()
    shipped_vad.speech_probs(longform_audio)
    elapsed = time.perf_counter() - t
    duration = len(longform_audio) / SR
    print(f"VAD on {duration:.1f} s of audio: {elapsed * 1000:.1f} ms ({duration / elapsed:.0f}x real time)")
    assert elapsed < duration / 50
