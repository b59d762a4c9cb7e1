"""Audio frontend: log-mel vs faster-whisper, mel filters, resampler vs analytic sines,
mono mix / prepare_audio checks, read_wav vs soundfile and the errors bad input must give."""

from __future__ import annotations

import glob
import math
import os
import struct
from pathlib import Path

import numpy as np
import pytest

import speechcore
from speechcore import _C
from speechcore.errors import AudioError, InvalidArgumentError, NotFoundError

FeatureExtractor = pytest.importorskip("faster_whisper.feature_extractor").FeatureExtractor
sf = pytest.importorskip("soundfile")

# Real speech (16 kHz mono WAV) from Debian's pocketsphinx-testdata, found or fetched once by
# conftest (SPEECHCORE_TESTDATA overrides the location); tests that need it skip without it.
from conftest import _pocketsphinx_dir  # noqa: E402

SPEECH_DIR = str(_pocketsphinx_dir() or "/nonexistent")

# faster-whisper's features are float32 end to end (numpy's pocketfft runs float32 for
# float32 input); ours run the FFT and mel sums in double. Measured max difference on
# speech and on the synthetic signals below: 1.2e-7 (one float32 ulp near 1), so the
# 1e-5 budget of the spec holds with a wide margin.
MEL_ATOL = 1e-5


def speech_files() -> list[str]:
    files = sorted(glob.glob(os.path.join(SPEECH_DIR, "librivox", "*.wav")))
    files += sorted(glob.glob(os.path.join(SPEECH_DIR, "cards", "*.wav")))[:2]
    return files


def speech_or_skip() -> np.ndarray:
    files = speech_files()
    if not files:
        pytest.skip(f"no speech WAV files under {SPEECH_DIR}")
    return np.concatenate([sf.read(f, dtype="float32")[0] for f in files[:3]])


def synthetic(n: int, seed: int = 0) -> np.ndarray:
    """Speech-like test signal: tones with a moving envelope, a chirp, and some noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000.0
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 1.7 * t) ** 2
    x = env * (0.3 * np.sin(2 * np.pi * 220 * t) + 0.1 * np.sin(2 * np.pi * 3100 * t))
    x += 0.05 * np.sin(2 * np.pi * (100 + 2000 * (t % 3.0)) * t)
    x += 0.01 * rng.standard_normal(n)
    return x.astype(np.float32)


def fw_features(audio: np.ndarray, n_mels: int, padding: int = 160, **kw) -> np.ndarray:
    return FeatureExtractor(feature_size=n_mels, **kw)(audio, padding=padding)


# --------------------------------------------------------------------------- log-mel


@pytest.mark.parametrize("n_mels", [80, 128])
def test_log_mel_matches_faster_whisper_on_speech(n_mels):
    files = speech_files()
    if not files:
        pytest.skip(f"no speech WAV files under {SPEECH_DIR}")
    for path in files:
        audio, sr = sf.read(path, dtype="float32")
        assert sr == 16000
        ref = fw_features(audio, n_mels)
        out = _C.log_mel_spectrogram(audio, n_mels=n_mels)
        assert out.dtype == np.float32 and out.shape == ref.shape, path
        np.testing.assert_allclose(out, ref, rtol=0, atol=MEL_ATOL, err_msg=path)


@pytest.mark.parametrize("n_mels", [80, 128])
@pytest.mark.parametrize("n", [1, 159, 160, 399, 400, 401, 16000 * 30 + 17, 16000 * 61])
def test_log_mel_awkward_lengths(n_mels, n):
    audio = synthetic(n, seed=n)
    ref = fw_features(audio, n_mels)
    out = _C.log_mel_spectrogram(audio, n_mels=n_mels)
    assert out.shape == ref.shape == (n_mels, (n + 160) // 160)
    np.testing.assert_allclose(out, ref, rtol=0, atol=MEL_ATOL)


def test_log_mel_long_speech_matches_transcribe_windows():
    # transcribe() computes features once over the whole audio (+160 padding), then slices
    # 3000-frame windows: the slices of our features must match too.
    audio = np.tile(speech_or_skip(), 3)[: 16000 * 45]
    ref = fw_features(audio, 80)
    out = _C.log_mel_spectrogram(audio)
    for start in (0, 3000):
        np.testing.assert_allclose(out[:, start:start + 3000], ref[:, start:start + 3000],
                                   rtol=0, atol=MEL_ATOL)


@pytest.mark.parametrize("n,padding", [(161, 0), (160, 0), (1000, 0), (37, 480), (5000, 3)])
def test_log_mel_padding_and_long_reflection(n, padding):
    # padding=0 with fewer than n_fft/2 samples makes numpy's reflect padding wrap repeatedly.
    audio = synthetic(n, seed=3)
    ref = fw_features(audio, 80, padding=padding)
    out = _C.log_mel_spectrogram(audio, padding=padding)
    np.testing.assert_allclose(out, ref, rtol=0, atol=MEL_ATOL)


@pytest.mark.parametrize("n_fft,hop,sr,n_mels", [
    (512, 128, 16000, 80),   # radix-4/2 path
    (300, 100, 16000, 64),   # radix 3 in the half-size FFT
    (401, 160, 16000, 80),   # odd and prime: generic butterfly, full complex FFT
    (462, 160, 16000, 80),   # 231 = 3 * 7 * 11: generic radix 7 and 11
    (256, 80, 8000, 40),     # another sample rate for the filterbank
])
def test_log_mel_other_stft_shapes(n_fft, hop, sr, n_mels):
    audio = synthetic(sr * 2 + 33, seed=n_fft)
    ref = fw_features(audio, n_mels, n_fft=n_fft, hop_length=hop, sampling_rate=sr)
    out = _C.log_mel_spectrogram(audio, n_mels=n_mels, n_fft=n_fft, hop_length=hop,
                                 sample_rate=sr)
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, rtol=0, atol=MEL_ATOL)


def test_log_mel_silence_and_float64_input():
    silence = np.zeros(16000, np.float32)
    np.testing.assert_allclose(_C.log_mel_spectrogram(silence), fw_features(silence, 80),
                               rtol=0, atol=MEL_ATOL)
    assert np.all(_C.log_mel_spectrogram(silence) == np.float32(-1.5))
    x64 = synthetic(8000).astype(np.float64)  # converted to float32 once, like faster-whisper
    np.testing.assert_allclose(_C.log_mel_spectrogram(x64), fw_features(x64, 80),
                               rtol=0, atol=MEL_ATOL)


def test_log_mel_threads_give_identical_results():
    audio = synthetic(16000 * 7 + 5)
    one = _C.log_mel_spectrogram(audio, n_mels=128)
    for threads in (2, 3, 0):
        np.testing.assert_array_equal(_C.log_mel_spectrogram(audio, n_mels=128,
                                                             num_threads=threads), one)


def test_log_mel_bad_input():
    with pytest.raises(AudioError, match="too short"):
        _C.log_mel_spectrogram(np.zeros(100, np.float32), padding=0)
    with pytest.raises(AudioError):
        _C.log_mel_spectrogram(np.zeros(0, np.float32), padding=0)
    with pytest.raises(InvalidArgumentError, match="dimension"):
        _C.log_mel_spectrogram(np.zeros((2, 400), np.float32))
    with pytest.raises(InvalidArgumentError, match="floating-point"):
        _C.log_mel_spectrogram(np.zeros(400, np.int16))
    with pytest.raises(InvalidArgumentError, match="n_mels"):
        _C.log_mel_spectrogram(np.zeros(400, np.float32), n_mels=0)
    with pytest.raises(InvalidArgumentError, match="padding"):
        _C.log_mel_spectrogram(np.zeros(400, np.float32), padding=-1)


@pytest.mark.parametrize("sr,n_fft,n_mels", [
    (16000, 400, 80), (16000, 400, 128), (8000, 256, 40), (22050, 512, 64), (16000, 401, 80)])
def test_mel_filters_match_faster_whisper(sr, n_fft, n_mels):
    ref = FeatureExtractor.get_mel_filters(sr, n_fft, n_mels=n_mels).astype(np.float32)
    out = _C.mel_filters(sr, n_fft, n_mels)
    assert out.shape == ref.shape == (n_mels, n_fft // 2 + 1)
    # Both are computed in float64 and rounded once; allow one float32 ulp for libm's exp.
    np.testing.assert_allclose(out, ref, rtol=2e-7, atol=0)


# --------------------------------------------------------------------------- resampler

RATES = [8000, 11025, 16000, 22050, 44100, 48000, 96000]
PAIRS = sorted({(a, 16000) for a in RATES if a != 16000} | {(16000, b) for b in RATES if b != 16000}
               | {(44100, 48000), (48000, 44100), (8000, 96000), (96000, 8000), (22050, 11025),
                  (44101, 16000), (16000, 44101), (1000, 384000), (384000, 1000)})


def margin(from_rate: int, to_rate: int) -> int:
    """Output samples at each edge touched by the zero-extension (kernel reach + slack)."""
    return int(math.ceil(70 * to_rate / min(from_rate, to_rate))) + 8


def resample_sine(freq: float, from_rate: int, to_rate: int, seconds: float):
    n = int(seconds * from_rate)
    x = np.sin(2 * np.pi * freq * np.arange(n) / from_rate + 0.3).astype(np.float32)
    y = _C.resample(x, from_rate, to_rate)
    assert y.dtype == np.float32
    assert len(y) == -(-n * to_rate // from_rate)  # ceil(n * to / from)
    m = margin(from_rate, to_rate)
    j = np.arange(m, len(y) - m)
    return x, y[j], np.sin(2 * np.pi * freq * j / to_rate + 0.3)


@pytest.mark.parametrize("from_rate,to_rate", PAIRS)
def test_resample_passband_matches_analytic_sine(from_rate, to_rate):
    nyquist = min(from_rate, to_rate) / 2
    seconds = max(0.1, 400 / min(from_rate, to_rate))
    for rel in (0.01, 0.1, 0.45, 0.85):
        _, y, expected = resample_sine(rel * nyquist, from_rate, to_rate, seconds)
        err = np.sqrt(np.mean((y - expected) ** 2) / np.mean(expected ** 2))
        assert err < 1e-3, (from_rate, to_rate, rel, err)


@pytest.mark.parametrize("from_rate,to_rate", [p for p in PAIRS if p[1] < p[0]])
def test_resample_attenuates_above_new_nyquist(from_rate, to_rate):
    new_nyq, old_nyq = to_rate / 2, from_rate / 2
    seconds = max(0.1, 400 / to_rate)
    freqs = [f for f in (1.01 * new_nyq, 1.3 * new_nyq, 1.9 * new_nyq, 0.97 * old_nyq)
             if f < 0.98 * old_nyq]
    assert freqs
    for f in freqs:
        x, y, _ = resample_sine(f, from_rate, to_rate, seconds)
        ratio_db = 10 * np.log10(np.mean(y.astype(np.float64) ** 2) / np.mean(x ** 2.0))
        assert ratio_db < -60, (from_rate, to_rate, f, ratio_db)


def test_resample_multitone_against_analytic_and_fft_reference():
    # Independent oracle: a multi-tone signal sampled at both rates analytically, and
    # numpy's FFT resampling of a periodic signal (exact for band-limited periodic input).
    from_rate, to_rate, n = 44100, 16000, 44100
    freqs, amps = [123.0, 1000.0, 2500.5, 6900.0], [0.5, 0.25, 0.15, 0.1]
    t_in, t_out = np.arange(n) / from_rate, np.arange(16000) / to_rate
    x = sum(a * np.sin(2 * np.pi * f * t_in) for f, a in zip(freqs, amps)).astype(np.float32)
    y = _C.resample(x, from_rate, to_rate)
    expected = sum(a * np.sin(2 * np.pi * f * t_out) for f, a in zip(freqs, amps))
    spec = np.fft.rfft(x.astype(np.float64))[: 16000 // 2 + 1] * (16000 / n)
    fft_ref = np.fft.irfft(spec, 16000)
    m = margin(from_rate, to_rate)
    for ref in (expected, fft_ref):
        err = np.sqrt(np.mean((y[m:-m] - ref[m:-m]) ** 2) / np.mean(ref[m:-m] ** 2))
        assert err < 1e-3


def test_resample_dc_edges_and_errors():
    ones = np.ones(48000, np.float32)
    y = _C.resample(ones, 48000, 16000)
    m = margin(48000, 16000)
    np.testing.assert_allclose(y[m:-m], 1.0, atol=1e-4)
    assert _C.resample(np.zeros(0, np.float32), 8000, 16000).shape == (0,)
    one = _C.resample(np.ones(1, np.float32), 8000, 16000)
    assert one.shape == (2,) and np.all(np.isfinite(one))
    same = synthetic(1000)
    np.testing.assert_array_equal(_C.resample(same, 22050, 22050), same)
    for bad in [(0, 16000), (999, 16000), (16000, 384001), (-8000, 16000)]:
        with pytest.raises(InvalidArgumentError, match="sample rates"):
            _C.resample(same, *bad)


# --------------------------------------------------------------------------- mono / prepare


def test_to_mono_and_prepare_audio():
    rng = np.random.default_rng(1)
    stereo = rng.uniform(-1, 1, (4001, 3)).astype(np.float32)
    np.testing.assert_allclose(_C.to_mono(stereo), stereo.astype(np.float64).mean(axis=1),
                               rtol=0, atol=1e-7)
    np.testing.assert_allclose(_C.prepare_audio(stereo, 16000), _C.to_mono(stereo))
    mono16 = synthetic(5000)
    np.testing.assert_array_equal(_C.prepare_audio(mono16, 16000), mono16)
    two = rng.uniform(-1, 1, (48000, 2)).astype(np.float32)
    np.testing.assert_array_equal(_C.prepare_audio(two, 48000),
                                  _C.resample(_C.to_mono(two), 48000, 16000))
    assert len(_C.prepare_audio(two[:, :1], 48000)) == 16000


def test_prepare_audio_errors():
    x = synthetic(100)
    with pytest.raises(InvalidArgumentError, match="sample_rate"):
        _C.prepare_audio(x, 0)
    with pytest.raises(InvalidArgumentError, match="sample_rate"):
        _C.prepare_audio(x, -16000)
    with pytest.raises(InvalidArgumentError, match="channels"):
        _C.prepare_audio(np.zeros((10, 0), np.float32), 16000)
    with pytest.raises(AudioError, match="empty"):
        _C.prepare_audio(np.zeros(0, np.float32), 16000)
    with pytest.raises(InvalidArgumentError):
        _C.prepare_audio(np.zeros((2, 2, 2), np.float32), 16000)
    with pytest.raises(InvalidArgumentError, match="sample rates"):
        _C.prepare_audio(x, 500)  # below what the resampler accepts
    bad = x.copy()
    bad[37] = np.nan
    with pytest.raises(AudioError, match="index 37"):
        _C.prepare_audio(bad, 16000)
    with pytest.raises(AudioError, match="index 37"):
        _C.validate_audio(bad)
    st = np.zeros((50, 2), np.float32)
    st[20, 1] = -np.inf
    with pytest.raises(AudioError, match=r"index 41 \(frame 20, channel 1\)"):
        _C.prepare_audio(st, 44100)
    _C.validate_audio(x)  # finite: no error


@pytest.mark.parametrize("index", [0, 1023, 1024, 2047, 5000, 480000 - 1])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_found_anywhere(index, value):
    # The scan checks blocks of 1,024 samples without branches, then finds the index in a bad
    # block: the first bad sample is reported wherever it is (block edges, the last sample),
    # also with a second one later in the same or another block.
    x = synthetic(480000)
    x[index] = value
    x[min(index + 3, 480000 - 1)] = np.nan
    with pytest.raises(AudioError, match=f"index {index} "):
        _C.validate_audio(x)
    with pytest.raises(AudioError, match=rf"index {index} \(frame {index}, channel 0\)"):
        _C.prepare_audio(x, 16000)


# --------------------------------------------------------------------------- read_wav


def write(tmp_path: Path, name: str, data: np.ndarray, sr: int, subtype: str,
          fmt: str = "WAV") -> Path:
    path = tmp_path / name
    sf.write(path, data, sr, subtype=subtype, format=fmt)
    return path


def sf_read(path) -> tuple[np.ndarray, int]:
    return sf.read(path, dtype="float32", always_2d=True)


@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE", "PCM_U8"])
@pytest.mark.parametrize("fmt", ["WAV", "WAVEX"])
@pytest.mark.parametrize("sr,channels", [(8000, 1), (44100, 2), (16000, 6)])
def test_read_wav_matches_soundfile(tmp_path, subtype, fmt, sr, channels):
    rng = np.random.default_rng(sr + channels)
    data = rng.uniform(-1, 1, (1234, channels))
    data[0] = 1.0  # full scale, clipped by the integer writers
    data[1] = -1.0
    path = write(tmp_path, "a.wav", data, sr, subtype, fmt)
    samples, rate = _C.read_wav(path)
    ref, ref_rate = sf_read(path)
    assert rate == ref_rate == sr
    assert samples.dtype == np.float32 and samples.shape == ref.shape == (1234, channels)
    np.testing.assert_array_equal(samples, ref)


def test_read_wav_real_speech():
    files = speech_files()
    if not files:
        pytest.skip(f"no speech WAV files under {SPEECH_DIR}")
    samples, rate = _C.read_wav(str(files[0]))
    ref, ref_rate = sf_read(files[0])
    assert rate == ref_rate
    np.testing.assert_array_equal(samples, ref)


def wav_bytes(data_size: int | None = None, payload: bytes = b"", extra: bytes = b"",
              tag: int = 1, channels: int = 1, rate: int = 16000, bits: int = 16) -> bytes:
    block = channels * ((bits + 7) // 8)
    fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, bits)
    size = len(payload) if data_size is None else data_size
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + extra
    body += b"data" + struct.pack("<I", size) + payload
    return b"RIFF" + struct.pack("<I", len(body)) + body


def test_read_wav_chunks_and_streaming_sizes(tmp_path):
    pcm = (np.arange(-500, 500, dtype=np.int16) * 31).astype("<i2")
    expected = (pcm / 32768.0).astype(np.float32)[:, None]
    cases = {
        "plain": wav_bytes(payload=pcm.tobytes()),
        # An unknown chunk of odd size (padded to even) between fmt and data.
        "extra_chunk": wav_bytes(payload=pcm.tobytes(), extra=b"junk" + struct.pack("<I", 5)
                                 + b"abcde\0"),
        "size_ffffffff": wav_bytes(0xFFFFFFFF, pcm.tobytes()),
        "size_zero": wav_bytes(0, pcm.tobytes()),
        "partial_frame": wav_bytes(payload=pcm.tobytes() + b"\x01"),
    }
    for name, blob in cases.items():
        path = tmp_path / f"{name}.wav"
        path.write_bytes(blob)
        samples, rate = _C.read_wav(path)
        assert rate == 16000, name
        np.testing.assert_array_equal(samples, expected, err_msg=name)
    empty = tmp_path / "no_frames.wav"
    empty.write_bytes(wav_bytes(payload=b""))
    samples, _ = _C.read_wav(empty)
    assert samples.shape == (0, 1)
    with pytest.raises(AudioError, match="empty"):
        _C.prepare_audio(samples, 16000)


def test_read_wav_errors(tmp_path):
    with pytest.raises(NotFoundError, match="not found"):
        _C.read_wav(tmp_path / "missing.wav")
    with pytest.raises(AudioError, match="directory"):
        _C.read_wav(tmp_path)
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(AudioError, match="empty"):
        _C.read_wav(tmp_path / "empty.wav")
    (tmp_path / "text.wav").write_text("this is not audio, just a text file renamed to .wav\n")
    with pytest.raises(AudioError, match="not a WAV file"):
        _C.read_wav(tmp_path / "text.wav")

    good = write(tmp_path, "good.wav", np.zeros((1000, 2)), 16000, "PCM_16").read_bytes()
    (tmp_path / "short_header.wav").write_bytes(good[:30])
    with pytest.raises(AudioError, match="truncated"):
        _C.read_wav(tmp_path / "short_header.wav")
    (tmp_path / "riff_only.wav").write_bytes(good[:12])
    with pytest.raises(AudioError, match="no data chunk"):
        _C.read_wav(tmp_path / "riff_only.wav")
    (tmp_path / "short_data.wav").write_bytes(good[:-100])
    with pytest.raises(AudioError, match="truncated.*declares 4000 bytes"):
        _C.read_wav(tmp_path / "short_data.wav")

    bad = {
        "alaw": write(tmp_path, "alaw.wav", np.zeros(100), 8000, "ALAW").read_bytes(),
        "adpcm": write(tmp_path, "adpcm.wav", np.zeros(1000), 8000, "IMA_ADPCM").read_bytes(),
        "zero_channels": wav_bytes(payload=b"\0" * 8, channels=0),
        "zero_rate": wav_bytes(payload=b"\0" * 8, rate=0),
        "float16": wav_bytes(payload=b"\0" * 8, tag=3, bits=16),
        "data_first": b"RIFF" + struct.pack("<I", 20) + b"WAVE" + b"data" + struct.pack("<I", 0),
        "rifx": b"RIFX" + good[4:],
    }
    for name, blob in bad.items():
        path = tmp_path / f"{name}.wav"
        path.write_bytes(blob)
        with pytest.raises(AudioError) as info:
            _C.read_wav(path)
        assert str(path) in str(info.value), name


def test_errors_are_speechcore_errors():
    assert issubclass(AudioError, speechcore.SpeechcoreError)
    with pytest.raises(speechcore.SpeechcoreError):
        _C.prepare_audio(np.array([np.inf], np.float32), 16000)
