"""Decoding options of :meth:`speechcore.Model.transcribe`, validated before any native work."""

from __future__ import annotations

import difflib
import math
import numbers
import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Dict, Iterable, List, Optional, Union

import numpy as np

from ._languages import normalize_language, suggest_language
from .errors import InvalidArgumentError

TASKS = ("transcribe", "translate")

DEFAULT_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
"""faster-whisper's fallback temperatures, the default of ``temperature``."""


@dataclass
class TranscribeOptions:
    """Options of one transcription; every field has the default shown.

    Attributes:
        language: language code (``"en"``) or English name (``"english"``) of the audio;
            None (or ``"auto"``) detects it from the first 30 s. Default None.
        task: ``"transcribe"`` or ``"translate"`` (to English). Default ``"transcribe"``.
        beam_size: beams of the beam search used at temperature 0; 1 is greedy decoding.
            Default 5 (faster-whisper's).
        best_of: candidates sampled at a temperature above 0; the best (length-normalized
            log-probability) is kept. Default 5.
        patience: the beam search stops once ``round(beam_size * patience)`` hypotheses have
            finished (must be > 0). Default 1.0.
        length_penalty: hypotheses are ranked by ``sum(log-probs) / length**length_penalty``;
            0 ranks by the plain sum. Default 1.0.
        repetition_penalty: logits of tokens already generated in the window are divided by
            this (multiplied when negative); 1 disables it. Default 1.0.
        no_repeat_ngram_size: forbid repeating any n-gram of this size in a window; 0
            disables it. Default 0.
        temperature: a temperature or a list of them tried in turn for each 30 s window: 0
            decodes deterministically (greedy / beam search), above 0 samples `best_of`
            candidates. A window is decoded again at the next temperature when it fails the
            compression-ratio or log-probability check (and is not silence); 0.0 alone decodes
            without fallback. In the chunked mode only the first is used (as faster-whisper's
            ``BatchedInferencePipeline``). Default ``[0.0, 0.2, 0.4, 0.6, 0.8, 1.0]``
            (faster-whisper's).
        seed: seed of the sampling random generator; each window attempt draws its own
            stream from it, so sampled results are reproducible and independent of batching.
            Default 0.
        condition_on_previous_text: feed the previous window's text as a prompt. Default True.
        without_timestamps: decode text only, one segment per 30 s window. Default False.
        max_initial_timestamp: latest allowed first timestamp in seconds. Default 1.0.
        suppress_blank: suppress a blank first token. Default True.
        suppress_tokens: token ids never to emit; -1 stands for the model's default list,
            ``[]`` suppresses nothing. Default ``[-1]``.
        initial_prompt: text given as the previous context of the first window. Default None.
        prefix: text forced at the start of the first window's output (faster-whisper's
            ``prefix``); the model continues from it (CPU backend only). Default None.
        hotwords: hint phrases given to every window as previous context (faster-whisper's
            ``hotwords``), except the first window's when `prefix` is set. Default None.
        clip_timestamps: parts of the audio to transcribe, ``[start, end, start, end, ...]`` in
            seconds or faster-whisper's comma string ``"0,10.5,20"``; an odd count runs the last
            clip to the end. Clips are decoded in order, the previous-text prompt carrying over;
            windows never cross a clip's end. With it the VAD filter is not run (as
            faster-whisper). Default None (the whole audio).
        language_detection_threshold: language detection stops at the first 30 s window whose
            most likely language has a probability above this. Default 0.5.
        language_detection_segments: 30 s windows language detection may read (from the first
            clip's start); when none passes the threshold, the language ranked first in the most
            windows wins. Default 1.
        multilingual: detect the language of every 30 s window (on its encoder output) and
            decode the window in it, for audio that switches languages (faster-whisper's
            ``multilingual``); English-only models ignore it. CPU only for now. Default False.
        chunk_length: seconds of audio per window (faster-whisper's ``chunk_length``, 1..30):
            each window takes at most this much audio, zero-padded to the model's 30 s input;
            language detection reads windows of this length; with `chunked`, the longest
            merged speech chunk. Default None (30 s).
        max_new_tokens: most tokens decoded per window; None is the model limit. Default None.
        compression_ratio_threshold: a window whose text compresses more than this is
            decoded again at a higher temperature; None disables the check. Default 2.4.
        log_prob_threshold: a window whose average log probability is below this is decoded
            again; None disables the check. Default -1.0.
        no_speech_threshold: a window whose no-speech probability is above this (and whose
            log probability is below `log_prob_threshold`) is skipped as silence; None
            disables it. Default 0.6.
        prompt_reset_on_temperature: drop the previous-text prompt after a window decoded at
            a temperature above this (as faster-whisper). Default 0.5.
        word_timestamps: give every segment its words (``Segment.words``: start, end, word,
            probability) from the cross-attention of the model's alignment heads, as
            faster-whisper; segment boundaries and the next window's start then follow the
            words. CPU backend only. Default False.
        prepend_punctuations: with word_timestamps, punctuation merged into the following
            word. Default faster-whisper's ``"\"'“¿([{-"``.
        append_punctuations: with word_timestamps, punctuation merged into the previous word.
            Default faster-whisper's ``"\"'.。,，!！?？:：”)]}、"``.
        hallucination_silence_threshold: with word_timestamps, skip silent periods longer than
            this many seconds around a possible hallucination (faster-whisper's algorithm);
            None disables. Default None.
        vad_filter: transcribe only the speech Silero VAD finds (faster-whisper's
            ``vad_filter``): the speech is concatenated, transcribed, and segment times are
            mapped back to the input's timeline; audio without speech gives no segments.
            Default False.
        vad_parameters: VAD options, a :class:`speechcore.vad.VadOptions` (or
            faster-whisper's), or a dict of its fields; None: faster-whisper's defaults for
            the mode (``vad_filter``: ``VadOptions()``; ``chunked``:
            ``min_silence_duration_ms=160, max_speech_duration_s=30``). In chunked mode
            ``max_speech_duration_s`` is capped at 30. Default None.
        vad_model_path: a ``silero_vad_16k.safetensors`` file; None: the one of the installed
            ``silero-vad`` package (:func:`speechcore.vad.silero_vad_weights`). Default None.
        chunked: batched VAD-chunked mode (faster-whisper's ``BatchedInferencePipeline``): the
            speech is cut into groups of at most 30 s, each decoded as an independent window
            (no previous-text prompt), all together; implies the VAD. See
            :meth:`speechcore.Model.transcribe_chunked`. Default False.
    """

    language: Optional[str] = None
    task: str = "transcribe"
    beam_size: int = 5
    best_of: int = 5
    patience: float = 1.0
    length_penalty: float = 1.0
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    temperature: Union[float, List[float]] = field(default_factory=lambda: list(DEFAULT_TEMPERATURES))
    seed: int = 0
    condition_on_previous_text: bool = True
    without_timestamps: bool = False
    max_initial_timestamp: float = 1.0
    suppress_blank: bool = True
    suppress_tokens: List[int] = field(default_factory=lambda: [-1])
    initial_prompt: Optional[str] = None
    prefix: Optional[str] = None
    hotwords: Optional[str] = None
    clip_timestamps: Union[None, str, List[float]] = None
    language_detection_threshold: float = 0.5
    language_detection_segments: int = 1
    multilingual: bool = False
    chunk_length: Optional[int] = None
    max_new_tokens: Optional[int] = None
    compression_ratio_threshold: Optional[float] = 2.4
    log_prob_threshold: Optional[float] = -1.0
    no_speech_threshold: Optional[float] = 0.6
    prompt_reset_on_temperature: float = 0.5
    # word-level timestamps
    word_timestamps: bool = False
    prepend_punctuations: str = "\"'“¿([{-"
    append_punctuations: str = "\"'.。,，!！?？:：”)]}、"
    hallucination_silence_threshold: Optional[float] = None
    # voice activity detection
    vad_filter: bool = False
    vad_parameters: Any = None
    vad_model_path: Optional[str] = None
    chunked: bool = False

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> "TranscribeOptions":
        """Builds options from keywords; an unknown keyword raises InvalidArgumentError naming it."""
        known = {f.name for f in fields(cls)}
        unknown = [k for k in kwargs if k not in known]
        if unknown:
            name = unknown[0]
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; valid options: {', '.join(sorted(known))}"
            raise InvalidArgumentError(f"unknown transcribe option {name!r}{hint}")
        return cls(**kwargs)

    def validate(self) -> None:
        """Checks and normalizes every field; raises InvalidArgumentError naming the bad one."""
        if self.language is not None:
            if not isinstance(self.language, str):
                raise InvalidArgumentError(f"language must be a string or None, got {type(self.language).__name__}")
            if self.language.strip().lower() in ("", "auto"):
                self.language = None
            else:
                code = normalize_language(self.language)
                if code is None:
                    guess = suggest_language(self.language)
                    hint = f"; did you mean {guess!r}?" if guess else " (use a code such as 'en', 'de', 'zh')"
                    raise InvalidArgumentError(f"unknown language {self.language!r}{hint}")
                self.language = code
        if self.task not in TASKS:
            raise InvalidArgumentError(f"task must be 'transcribe' or 'translate', got {self.task!r}")
        self.beam_size = _int("beam_size", self.beam_size, minimum=1)
        self.best_of = _int("best_of", self.best_of, minimum=1)
        self.patience = _float("patience", self.patience)
        if self.patience <= 0:
            raise InvalidArgumentError(f"patience must be > 0, got {self.patience}")
        self.length_penalty = _float("length_penalty", self.length_penalty)
        self.repetition_penalty = _float("repetition_penalty", self.repetition_penalty)
        if self.repetition_penalty <= 0:
            raise InvalidArgumentError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")
        self.no_repeat_ngram_size = _int("no_repeat_ngram_size", self.no_repeat_ngram_size, minimum=0)
        self.seed = _int("seed", self.seed, minimum=0)
        if self.seed >= 2**64:
            raise InvalidArgumentError(f"seed must be < 2**64, got {self.seed}")
        if isinstance(self.temperature, (list, tuple, np.ndarray)):
            temps = [_float("temperature", t, minimum=0.0) for t in self.temperature]
            if not temps:
                raise InvalidArgumentError("temperature must be a number or a non-empty list of numbers")
            self.temperature = temps
        else:
            self.temperature = _float("temperature", self.temperature, minimum=0.0)
        self.max_initial_timestamp = _float("max_initial_timestamp", self.max_initial_timestamp, minimum=0.0)
        self.prompt_reset_on_temperature = _float("prompt_reset_on_temperature",
                                                  self.prompt_reset_on_temperature, minimum=0.0)
        for name in ("condition_on_previous_text", "without_timestamps", "suppress_blank", "multilingual"):
            setattr(self, name, _bool(name, getattr(self, name)))
        self.suppress_tokens = _token_list("suppress_tokens", self.suppress_tokens)
        if self.initial_prompt is not None and not isinstance(self.initial_prompt, str):
            raise InvalidArgumentError(
                f"initial_prompt must be a string or None, got {type(self.initial_prompt).__name__}")
        for name in ("prefix", "hotwords"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise InvalidArgumentError(f"{name} must be a string or None, got {type(value).__name__}")
        self.clip_timestamps = _clip_timestamps(self.clip_timestamps)
        self.language_detection_threshold = _float("language_detection_threshold",
                                                   self.language_detection_threshold)
        self.language_detection_segments = _int("language_detection_segments",
                                                self.language_detection_segments, minimum=1)
        if self.max_new_tokens is not None:
            self.max_new_tokens = _int("max_new_tokens", self.max_new_tokens, minimum=1)
        if self.chunk_length is not None:
            self.chunk_length = _int("chunk_length", self.chunk_length, minimum=1)
            if self.chunk_length > 30:
                raise InvalidArgumentError(
                    f"chunk_length must be at most 30 seconds (the model's window), got {self.chunk_length}")
        if self.compression_ratio_threshold is not None:
            self.compression_ratio_threshold = _float(
                "compression_ratio_threshold", self.compression_ratio_threshold, minimum=0.0)
        if self.log_prob_threshold is not None:
            self.log_prob_threshold = _float("log_prob_threshold", self.log_prob_threshold)
        if self.no_speech_threshold is not None:
            self.no_speech_threshold = _float("no_speech_threshold", self.no_speech_threshold,
                                              minimum=0.0, maximum=1.0)
        self.word_timestamps = _bool("word_timestamps", self.word_timestamps)
        for name in ("prepend_punctuations", "append_punctuations"):
            if not isinstance(getattr(self, name), str):
                raise InvalidArgumentError(f"{name} must be a string, got {type(getattr(self, name)).__name__}")
        if self.hallucination_silence_threshold is not None:
            self.hallucination_silence_threshold = _float(
                "hallucination_silence_threshold", self.hallucination_silence_threshold)
        for name in ("vad_filter", "chunked"):
            setattr(self, name, _bool(name, getattr(self, name)))
        if self.vad_parameters is not None:
            from .vad import VadOptions, _options_dict

            self.vad_parameters = VadOptions(**_options_dict(self.vad_parameters, {}))
        if self.vad_model_path is not None:
            if not isinstance(self.vad_model_path, (str, os.PathLike)):
                raise InvalidArgumentError(
                    f"vad_model_path must be a file path or None, got {type(self.vad_model_path).__name__}")
            self.vad_model_path = os.fspath(self.vad_model_path)

    def to_native(self) -> Dict[str, Any]:
        """The options dict of the native ``Model.transcribe``.

        None means "not set" for language/initial_prompt/prefix/hotwords/clip_timestamps/
        max_new_tokens/vad_parameters (the key is left out; vad_model_path becomes the silero-vad
        package's weights when the VAD is on), vad_filter/chunked are sent only when True, the
        word timestamp options only with word_timestamps, and the language detection options
        only when not at their defaults, and None means
        "disabled" for the three thresholds (sent as the infinity that never triggers).
        """
        out: Dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("suppress_tokens", "temperature") and isinstance(value, (list, tuple)):
                value = list(value)
            elif f.name in ("vad_filter", "chunked", "multilingual") and not value:
                continue  # off: the native default
            elif f.name in ("word_timestamps", "prepend_punctuations", "append_punctuations",
                            "hallucination_silence_threshold") and not self.word_timestamps:
                continue  # word timestamps off: the native default
            elif f.name in ("language_detection_threshold", "language_detection_segments") and value == f.default:
                continue  # the native default
            elif f.name == "vad_parameters" and value is not None:
                value = asdict(value)
            elif f.name == "vad_model_path" and value is None and (
                    (self.vad_filter and self.clip_timestamps is None) or self.chunked):
                from .vad import silero_vad_weights

                value = str(silero_vad_weights())  # NotFoundError (with the pip command) when missing
            if value is None:
                if f.name in ("compression_ratio_threshold", "no_speech_threshold"):
                    value = math.inf
                elif f.name == "log_prob_threshold":
                    value = -math.inf
                else:
                    continue
            out[f.name] = value
        return out


def _int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidArgumentError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise InvalidArgumentError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _float(name: str, value: Any, minimum: Optional[float] = None, maximum: Optional[float] = None) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidArgumentError(f"{name} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise InvalidArgumentError(f"{name} must be finite, got {number}")
    if minimum is not None and number < minimum:
        raise InvalidArgumentError(f"{name} must be >= {minimum}, got {number}")
    if maximum is not None and number > maximum:
        raise InvalidArgumentError(f"{name} must be <= {maximum}, got {number}")
    return number


def _bool(name: str, value: Any) -> bool:
    # numpy.bool_ is not a bool subclass; accept it, but not 0/1 or strings like "false".
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise InvalidArgumentError(f"{name} must be True or False, got {value!r}")


def _clip_timestamps(value: Any) -> Optional[List[float]]:
    """faster-whisper's clip_timestamps (a list of seconds or a comma string) as a checked list;
    None for the whole audio."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = [float(v) for v in value.split(",")] if value.strip() else []
        except ValueError:
            raise InvalidArgumentError(
                f"clip_timestamps must be numbers of seconds separated by commas, got {value!r}") from None
    elif isinstance(value, (bytes, dict)) or not isinstance(value, Iterable):
        raise InvalidArgumentError(f"clip_timestamps must be a list of seconds or a comma string, got {value!r}")
    out = [_float("clip_timestamps", v, minimum=0.0) for v in value]
    for i in range(1, len(out), 2):
        if out[i] <= out[i - 1]:
            raise InvalidArgumentError(
                f"clip_timestamps: clip {i // 2} ends ({out[i]} s) at or before its start ({out[i - 1]} s)")
    return out


def _token_list(name: str, value: Any) -> List[int]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise InvalidArgumentError(f"{name} must be a list of token ids, got {value!r}")
    out = []
    for token in value:
        if isinstance(token, bool) or not isinstance(token, numbers.Integral) or token < -1:
            raise InvalidArgumentError(f"{name} must hold token ids >= 0 (or -1 for the defaults), got {token!r}")
        out.append(int(token))
    return out


__all__ = ["TranscribeOptions", "TASKS", "DEFAULT_TEMPERATURES"]
