"""Voice activity detection: the Silero VAD network run by speechcore's C++ core.

The weights are Silero VAD v6's ``silero_vad_16k.safetensors`` from the ``silero-vad`` package
(MIT). speechcore reads only that file: install the package without its PyTorch dependency,

    pip install --no-deps "silero-vad==6.2.3"

or pass the path of a ``silero_vad_16k.safetensors`` file to :class:`SileroVad`.

    from speechcore import vad
    chunks = vad.get_speech_timestamps("speech.wav", min_silence_duration_ms=500)
    # [{"start": 8192, "end": 51200}, ...]   (samples of the 16 kHz audio)

The speech-timestamp algorithm, :func:`collect_chunks` and :class:`SpeechTimestampsMap` follow
faster-whisper 1.2.1 (``faster_whisper.vad``): same option names, defaults and results, computed
in C++. The network takes 16 kHz audio; audio at any other rate (or with several channels) is
mixed down and resampled to 16 kHz first, and sample positions always refer to that 16 kHz audio.
"""

from __future__ import annotations

import functools
import importlib.metadata
import math
import os
from dataclasses import asdict, dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import _C
from .audio import AudioInput, load_audio
from .errors import InvalidArgumentError, NotFoundError

SAMPLE_RATE: int = _C.vad.SAMPLE_RATE
"""The rate the network works at (Hz)."""
WINDOW_SAMPLES: int = _C.vad.WINDOW_SAMPLES
"""One speech probability per this many samples (32 ms at 16 kHz)."""

SILERO_VAD_PACKAGE = "silero-vad==6.2.3"
_WEIGHTS_IN_PACKAGE = "silero_vad/data/silero_vad_16k.safetensors"

__all__ = [
    "VadOptions",
    "SileroVad",
    "VadStream",
    "get_speech_timestamps",
    "speech_timestamps_from_probs",
    "collect_chunks",
    "SpeechTimestampsMap",
    "silero_vad_weights",
    "SAMPLE_RATE",
    "WINDOW_SAMPLES",
]


@dataclass
class VadOptions:
    """VAD options: faster-whisper's ``VadOptions`` (same names and defaults) plus silero-vad's
    two options for splitting long chunks.

    Attributes:
        threshold: windows with a speech probability >= threshold are speech.
        neg_threshold: inside speech, only probabilities below this count as silence (values
            between the two keep the current state); None: ``max(threshold - 0.15, 0.01)``.
        min_speech_duration_ms: speech chunks not longer than this are dropped.
        max_speech_duration_s: chunks longer than this are split at a silence longer than
            ``min_silence_at_max_speech`` ms inside them if there is one, else just before the
            limit.
        min_silence_duration_ms: a chunk ends after this much silence.
        speech_pad_ms: chunks are padded by this much on each side (by half the gap when two
            chunks are closer than twice this).
        min_silence_at_max_speech: silences longer than this (ms) are the candidate split points
            at ``max_speech_duration_s`` (fixed at 98 in faster-whisper).
        use_max_poss_sil_at_max_speech: split at the longest candidate silence (silero-vad 6's
            default) rather than the last one (faster-whisper 1.2.1, the default here).
    """

    threshold: float = 0.5
    neg_threshold: Optional[float] = None
    min_speech_duration_ms: float = 0
    max_speech_duration_s: float = float("inf")
    min_silence_duration_ms: float = 2000
    speech_pad_ms: float = 400
    min_silence_at_max_speech: float = 98
    use_max_poss_sil_at_max_speech: bool = False


_OPTION_NAMES = tuple(f.name for f in fields(VadOptions))


def _options_dict(vad_options: Optional[VadOptions], kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """The option dict for the native side (validated there: InvalidArgumentError)."""
    if vad_options is not None:
        if not isinstance(vad_options, VadOptions):
            if isinstance(vad_options, dict):
                vad_options = VadOptions(**_known(vad_options))
            elif is_dataclass(vad_options) and not isinstance(vad_options, type):
                # e.g. faster_whisper.vad.VadOptions (its fields are a subset of ours)
                vad_options = VadOptions(**_known(asdict(vad_options)))
            else:
                raise InvalidArgumentError(
                    f"vad_options must be a VadOptions or a dict, got {type(vad_options).__name__}")
        if kwargs:
            raise InvalidArgumentError("give VAD options either as vad_options or as keywords, not both")
        return asdict(vad_options)
    return asdict(VadOptions(**_known(kwargs)))


def _known(options: Dict[str, Any]) -> Dict[str, Any]:
    unknown = sorted(set(options) - set(_OPTION_NAMES))
    if unknown:
        raise InvalidArgumentError(
            f"unknown VAD option(s) {', '.join(map(repr, unknown))}; known: {', '.join(_OPTION_NAMES)}")
    return options


def silero_vad_weights() -> Path:
    """Path of ``silero_vad_16k.safetensors`` in the installed ``silero-vad`` package.

    The package is located through its metadata, without importing it (its ``__init__``
    imports PyTorch, which speechcore does not need).

    Raises:
        NotFoundError: the package (or the file in it) is not installed; the message gives the
            pip command.
    """
    hint = (f'install it without its PyTorch dependency: pip install --no-deps "{SILERO_VAD_PACKAGE}", '
            "or pass the path of a silero_vad_16k.safetensors file")
    try:
        dist = importlib.metadata.distribution("silero-vad")
    except importlib.metadata.PackageNotFoundError:
        raise NotFoundError(f"Silero VAD weights not found: the silero-vad package is not installed; {hint}") from None
    path = Path(str(dist.locate_file(_WEIGHTS_IN_PACKAGE)))
    if not path.is_file():
        raise NotFoundError(
            f"Silero VAD weights not found: silero-vad {dist.version} has no {_WEIGHTS_IN_PACKAGE}; {hint}")
    return path


def _audio_16k(audio: AudioInput, sample_rate: Optional[int]) -> np.ndarray:
    """Mono float32 16 kHz samples of anything load_audio accepts."""
    samples, rate = load_audio(audio, sample_rate)
    if samples.ndim == 1 and rate == SAMPLE_RATE:
        return samples
    return _C.prepare_audio(samples, rate)


class SileroVad:
    """The Silero VAD network, loaded from a safetensors file.

    Args:
        path: a ``silero_vad_16k.safetensors`` file (or one with the same tensors); None finds
            the one in the installed ``silero-vad`` package (:func:`silero_vad_weights`).

    Raises:
        NotFoundError: the file (or the package) does not exist.
        ModelError: the file lacks a tensor of the network or has one of another shape.

    A SileroVad is immutable and may be shared between threads; streaming state lives in
    :class:`VadStream` objects (:meth:`stream`).
    """

    def __init__(self, path: Union[str, "os.PathLike[str]", None] = None):
        if path is None:
            path = silero_vad_weights()
        if not isinstance(path, (str, os.PathLike)):
            raise InvalidArgumentError(f"path must be a file path, got {type(path).__name__}")
        p = Path(os.fspath(path)).expanduser()
        if p.is_dir():
            raise InvalidArgumentError(f"Silero VAD weights path is a directory, not a file: {p}")
        if not p.exists():
            raise NotFoundError(f"Silero VAD weights file not found: {p}")
        self._native = _C.vad.SileroVad(str(p))

    @property
    def path(self) -> str:
        return self._native.path

    def __repr__(self) -> str:
        return f"SileroVad({self.path!r})"

    def speech_probs(self, audio: AudioInput, sample_rate: Optional[int] = None) -> np.ndarray:
        """Speech probability of each 512-sample window of the (16 kHz) audio, float32, one per
        window; the last window is zero-padded. ``audio`` is anything
        :func:`speechcore.load_audio` accepts."""
        return self._native.speech_probs(_audio_16k(audio, sample_rate))

    def get_speech_timestamps(self, audio: AudioInput, vad_options: Optional[VadOptions] = None, *,
                              sample_rate: Optional[int] = None, **options: Any) -> List[Dict[str, int]]:
        """See :func:`get_speech_timestamps`."""
        opts = _options_dict(vad_options, options)
        samples = _audio_16k(audio, sample_rate)
        return [{"start": s, "end": e} for s, e in self._native.speech_timestamps(samples, SAMPLE_RATE, opts)]

    def stream(self) -> "VadStream":
        """A new streaming session (fresh state) on this network."""
        return VadStream(self)


class VadStream:
    """Speech probabilities of a 16 kHz stream fed piece by piece.

    ``process(samples)`` returns the probabilities of the windows completed so far (samples
    that do not fill a window wait for the next call); ``flush()`` zero-pads and scores the
    incomplete window, if any. The probabilities equal :meth:`SileroVad.speech_probs` of the
    whole stream, however it is split (up to float rounding, ~1e-7).
    """

    def __init__(self, vad: SileroVad):
        self._vad = vad
        self._state = _C.vad.State()
        self._pending = np.zeros(0, np.float32)
        self.samples = 0
        """Samples fed so far."""

    def process(self, samples: np.ndarray) -> np.ndarray:
        x = np.asarray(samples)
        if x.ndim != 1 or x.dtype.kind != "f":
            raise InvalidArgumentError(
                f"VadStream.process expects 1-D float 16 kHz samples, got {x.dtype} of shape {x.shape}")
        self.samples += x.shape[0]
        data = np.concatenate([self._pending, x.astype(np.float32, copy=False)])
        whole = data.shape[0] - data.shape[0] % WINDOW_SAMPLES
        self._pending = data[whole:].copy()
        return self._vad._native.process(self._state, np.ascontiguousarray(data[:whole]))

    def flush(self) -> np.ndarray:
        """Scores the incomplete last window (zero-padded); the stream then continues from it."""
        if self._pending.shape[0] == 0:
            return np.zeros(0, np.float32)
        last = np.zeros(WINDOW_SAMPLES, np.float32)
        last[: self._pending.shape[0]] = self._pending
        self._pending = np.zeros(0, np.float32)
        return self._vad._native.process(self._state, last)

    def reset(self) -> None:
        """Starts a new stream (zero state, nothing pending)."""
        self._state.reset()
        self._pending = np.zeros(0, np.float32)
        self.samples = 0


@functools.lru_cache(maxsize=1)
def _default_vad() -> SileroVad:
    return SileroVad()


def get_speech_timestamps(audio: AudioInput, vad_options: Optional[VadOptions] = None, *,
                          sample_rate: Optional[int] = None, vad: Optional[SileroVad] = None,
                          **options: Any) -> List[Dict[str, int]]:
    """Speech chunks of ``audio`` found by Silero VAD, as faster-whisper's
    ``get_speech_timestamps`` returns them: ``[{"start": s, "end": e}, ...]`` in samples of the
    16 kHz audio (``e`` exclusive), padded by ``speech_pad_ms``.

    Args:
        audio: anything :func:`speechcore.load_audio` accepts (path, bytes, file object, numpy
            array); any rate and channel count (mixed down and resampled to 16 kHz first).
        vad_options: a :class:`VadOptions` (or a dict of its fields); or give the options as
            keywords (``threshold=0.6, min_silence_duration_ms=500``), not both.
        sample_rate: rate of a numpy array (default 16000), as in ``Model.transcribe``.
        vad: the network to use (default: the ``silero-vad`` package's weights, loaded once).

    Raises:
        InvalidArgumentError: an unknown or invalid option, a bad sample rate.
        AudioError, NotFoundError: unreadable audio; weights not installed.
    """
    opts = _options_dict(vad_options, options)
    return (vad if vad is not None else _default_vad()).get_speech_timestamps(
        audio, sample_rate=sample_rate, vad_options=VadOptions(**opts))


def speech_timestamps_from_probs(probs: Sequence[float], audio_length_samples: Optional[int] = None,
                                 vad_options: Optional[VadOptions] = None, **options: Any) -> List[Dict[str, int]]:
    """The speech-timestamp algorithm alone, over per-window probabilities (window ``i`` covers
    16 kHz samples ``[512 i, 512 (i + 1))``); ``audio_length_samples`` defaults to
    ``512 * len(probs)``."""
    opts = _options_dict(vad_options, options)
    p = np.ascontiguousarray(probs, dtype=np.float32)
    if p.ndim != 1:
        raise InvalidArgumentError(f"probs must be 1-D, got shape {p.shape}")
    n = WINDOW_SAMPLES * p.shape[0] if audio_length_samples is None else int(audio_length_samples)
    return [{"start": s, "end": e} for s, e in _C.vad.speech_timestamps_from_probs(p, n, opts)]


def _chunk_pairs(chunks: Iterable[Dict[str, int]]) -> List[Tuple[int, int]]:
    try:
        return [(int(c["start"]), int(c["end"])) for c in chunks]
    except (KeyError, TypeError, ValueError):
        raise InvalidArgumentError('chunks must be dicts with integer "start" and "end" samples') from None


def collect_chunks(audio: np.ndarray, chunks: List[Dict[str, int]], sampling_rate: int = SAMPLE_RATE,
                   max_duration: float = float("inf")) -> Tuple[List[np.ndarray], List[Dict[str, Any]]]:
    """faster-whisper's ``collect_chunks``: the speech chunks of ``audio`` (1-D float samples)
    concatenated into groups of at most ``max_duration`` seconds (a longer single chunk forms a
    group of its own). Returns ``(audios, metadata)`` with one ``{"offset": s, "duration": s,
    "segments": [chunk, ...]}`` per group, ``offset`` counting seconds of speech before the group.
    No chunks give one empty group. Unlike faster-whisper 1.2.1, every chunk is listed in its
    group's ``segments`` (it leaves out the first chunk of every group after the first) and no
    empty group is emitted before a first chunk longer than ``max_duration``."""
    x = np.asarray(audio)
    if x.ndim != 1 or x.dtype.kind != "f":
        raise InvalidArgumentError(f"audio must be 1-D float samples, got {x.dtype} of shape {x.shape}")
    if isinstance(max_duration, bool) or not isinstance(max_duration, (int, float)) or math.isnan(max_duration):
        raise InvalidArgumentError(f"max_duration must be a number of seconds, got {max_duration!r}")
    groups = _C.vad.collect_chunks(x, _chunk_pairs(chunks), float(max_duration), int(sampling_rate))
    audios = [g[0] for g in groups]
    meta = [{"offset": off, "duration": dur, "segments": [{"start": s, "end": e} for s, e in segs]}
            for _, off, dur, segs in groups]
    return audios, meta


class SpeechTimestampsMap:
    """faster-whisper's ``SpeechTimestampsMap``: maps times (seconds) in the speech-only audio
    (the chunks concatenated) back to the original timeline, rounded to ``time_precision``
    decimals. Without chunks, times map to themselves."""

    def __init__(self, chunks: List[Dict[str, int]], sampling_rate: int = SAMPLE_RATE, time_precision: int = 2):
        self._native = _C.vad.SpeechTimestampsMap(_chunk_pairs(chunks), int(sampling_rate), int(time_precision))

    def get_original_time(self, time: float, chunk_index: Optional[int] = None, is_end: bool = False) -> float:
        return self._native.original_time(float(time), -1 if chunk_index is None else int(chunk_index), bool(is_end))

    def get_chunk_index(self, time: float, is_end: bool = False) -> int:
        return self._native.chunk_index(float(time), bool(is_end))
