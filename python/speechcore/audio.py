"""Audio input: files, encoded bytes, file objects and numpy arrays -> float32 samples + rate.

The native side mixes channels down and resamples to 16 kHz, so this module only decodes and
normalizes the sample format; it keeps the channels and the original rate.
"""

from __future__ import annotations

import io
import os
from typing import Any, Optional, Tuple, Union

import numpy as np

from .errors import AudioError, InvalidArgumentError, NotFoundError

DEFAULT_ARRAY_SAMPLE_RATE = 16000
"""Rate assumed for numpy arrays given without `sample_rate` (as faster-whisper assumes)."""

MAX_CHANNELS = 64
"""More columns than this in a 2-D array is taken as a mistake, not a microphone array."""

AudioInput = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, np.ndarray, Any]


def load_audio(audio: AudioInput, sample_rate: Optional[int] = None) -> Tuple[np.ndarray, int]:
    """Decodes or converts `audio` to float32 samples in [-1, 1] and returns them with their rate.

    Args:
        audio: one of
            - a path (``str`` or ``os.PathLike``) to a file soundfile/libsndfile can read
              (wav, flac, ogg/vorbis/opus, mp3, aiff, ...);
            - ``bytes`` / ``bytearray`` / ``memoryview`` holding such an encoded file;
            - a binary file-like object (``read``/``seek``) holding one;
            - a numpy array of samples: 1-D mono ``(frames,)`` or 2-D ``(frames, channels)``.
              int16 is scaled by 1/32768, int32 by 1/2**31, int8 by 1/128, uint8 (8-bit PCM,
              offset 128) by ``(x - 128)/128``; float16/32/64 are taken as already in [-1, 1].
              A 2-D array with at most 8 rows and more columns than rows is read as
              ``(channels, frames)`` (the librosa/torchaudio layout) and transposed: no real
              recording has more channels than frames.
        sample_rate: rate of a numpy array in Hz; None assumes 16000. For encoded audio the
            file's own rate is used; giving a different `sample_rate` raises InvalidArgumentError.

    Returns:
        ``(samples, rate)``: C-contiguous float32, shape ``(frames,)`` for mono or
        ``(frames, channels)``; `rate` in Hz.

    Raises:
        NotFoundError: the path does not exist.
        InvalidArgumentError: a directory, an unsupported type, dtype or shape, a bad rate.
        AudioError: the data cannot be decoded (with soundfile's reason), is empty, or holds
            NaN/inf samples.
    """
    if sample_rate is not None:
        sample_rate = _check_rate(sample_rate)

    if isinstance(audio, np.ndarray):
        samples = _from_array(audio)
        rate = DEFAULT_ARRAY_SAMPLE_RATE if sample_rate is None else sample_rate
    else:
        samples, rate = _decode(audio)
        if sample_rate is not None and sample_rate != rate:
            raise InvalidArgumentError(
                f"sample_rate={sample_rate} does not match the file's own rate of {rate} Hz; "
                "sample_rate applies only to numpy arrays (the model resamples files itself)")
    _check_samples(samples)
    return samples, rate


def _check_rate(rate: Any) -> int:
    if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)):
        raise InvalidArgumentError(f"sample_rate must be a positive integer in Hz, got {rate!r}")
    if rate <= 0:
        raise InvalidArgumentError(f"sample_rate must be a positive integer in Hz, got {rate}")
    return int(rate)


def _decode(audio: Any) -> Tuple[np.ndarray, int]:
    """Decodes encoded audio (path, bytes or file object) with soundfile."""
    import soundfile as sf

    name: str
    if isinstance(audio, (str, os.PathLike)):
        path = os.fspath(audio)
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        name = path
        try:
            is_dir, exists = os.path.isdir(path), os.path.exists(path)
        except ValueError as e:  # e.g. an embedded NUL character
            raise InvalidArgumentError(f"invalid audio path {path!r}: {e}") from None
        if is_dir:
            raise InvalidArgumentError(f"audio path is a directory, not a file: {path}")
        if not exists:
            raise NotFoundError(f"audio file not found: {path}")
        source: Any = path
    elif isinstance(audio, (bytes, bytearray, memoryview)):
        data = bytes(audio)
        if not data:
            raise AudioError("audio is empty (0 bytes)")
        name = f"<{len(data)} bytes>"
        source = io.BytesIO(data)
    elif isinstance(audio, io.TextIOBase):
        raise InvalidArgumentError("audio file object is in text mode: open it in binary mode ('rb')")
    elif hasattr(audio, "read"):
        name = str(getattr(audio, "name", "<file object>"))
        source = audio
    else:
        raise InvalidArgumentError(
            f"unsupported audio type {type(audio).__name__}: expected a path, bytes, a binary file "
            "object or a numpy array")

    try:
        samples, rate = sf.read(source, dtype="float32", always_2d=False)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        # soundfile reports unknown formats, truncated headers and text files as
        # LibsndfileError (a RuntimeError); a text-mode file object gives TypeError.
        reason = getattr(e, "error_string", None) or str(e)
        raise AudioError(f"cannot decode audio {name}: {reason}") from None
    except OSError as e:  # permission denied and friends
        raise AudioError(f"cannot read audio {name}: {e.strerror or e}") from None
    if samples.size == 0:
        raise AudioError(f"audio is empty: {name} has no samples")
    if samples.ndim == 2 and samples.shape[1] == 1:
        samples = samples[:, 0]
    return np.ascontiguousarray(samples, dtype=np.float32), int(rate)


def _from_array(a: np.ndarray) -> np.ndarray:
    """Converts a numpy array of samples to C-contiguous float32 (frames,) or (frames, channels)."""
    if a.ndim not in (1, 2):
        raise InvalidArgumentError(
            f"audio array must be 1-D (frames,) or 2-D (frames, channels), got shape {a.shape}")
    kind = a.dtype.kind
    if kind not in "iuf":
        raise InvalidArgumentError(
            f"audio array dtype {a.dtype} is not supported: use float32/float64 in [-1, 1] "
            "or int16/int32/int8/uint8 PCM")
    if a.size == 0:
        raise AudioError(f"audio is empty (array of shape {a.shape})")

    if a.ndim == 2:
        rows, cols = a.shape
        if rows <= 8 and cols > rows:
            a = a.T  # (channels, frames) -> (frames, channels)
        if a.shape[1] > MAX_CHANNELS:
            raise InvalidArgumentError(
                f"audio array of shape {a.shape} has {a.shape[1]} channels (at most {MAX_CHANNELS}); "
                "pass (frames, channels)")
        if a.shape[1] == 1:
            a = a[:, 0]

    if kind == "f":
        out = a.astype(np.float32, copy=False)
    elif a.dtype == np.int16:
        out = a.astype(np.float32) * np.float32(1.0 / 32768.0)
    elif a.dtype == np.int32:
        out = (a.astype(np.float64) * (1.0 / 2147483648.0)).astype(np.float32)
    elif a.dtype == np.int8:
        out = a.astype(np.float32) * np.float32(1.0 / 128.0)
    elif a.dtype == np.uint8:
        out = (a.astype(np.float32) - np.float32(128.0)) * np.float32(1.0 / 128.0)
    else:
        raise InvalidArgumentError(
            f"audio array dtype {a.dtype} is ambiguous: convert it to float32 in [-1, 1] "
            "or to int16/int32 PCM first")
    return np.ascontiguousarray(out, dtype=np.float32)


def _check_samples(samples: np.ndarray) -> None:
    if samples.size == 0:
        raise AudioError("audio is empty")
    finite = np.isfinite(samples)
    if not finite.all():
        frame = int(np.argmin(finite.all(axis=1) if samples.ndim == 2 else finite))
        raise AudioError(f"audio contains NaN or infinite samples (first at frame {frame})")


__all__ = ["load_audio", "DEFAULT_ARRAY_SAMPLE_RATE"]
