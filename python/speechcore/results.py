"""Results of :meth:`speechcore.Model.transcribe`: plain dataclasses built from the native dict."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple


@dataclass
class Word:
    """One word of a segment (``word_timestamps=True``), as faster-whisper's ``Word``.

    Attributes:
        start: start time in seconds from the beginning of the audio.
        end: end time in seconds.
        word: the word with its leading space and the punctuation merged into it.
        probability: mean probability of the word's tokens.
    """

    start: float
    end: float
    word: str
    probability: float

    @classmethod
    def from_native(cls, d: Mapping[str, Any]) -> "Word":
        """Builds a word from the dict the native module returns."""
        return cls(start=float(d["start"]), end=float(d["end"]), word=str(d["word"]),
                   probability=float(d["probability"]))


@dataclass
class Segment:
    """One timed piece of a transcript.

    Attributes:
        id: index of the segment in the transcript, from 0.
        seek: start of the 30 s window that produced it, in mel frames (100 per second).
        start: start time in seconds from the beginning of the audio.
        end: end time in seconds.
        text: the segment text (Whisper keeps the leading space).
        tokens: the decoded token ids, timestamps excluded.
        avg_logprob: mean log probability of the tokens.
        compression_ratio: gzip compression ratio of the text (high means repetitive).
        no_speech_prob: probability of the no-speech token for the window.
        temperature: sampling temperature that produced the segment (0 = greedy/beam).
        words: the segment's words with ``word_timestamps=True``, else None.
    """

    id: int
    seek: int
    start: float
    end: float
    text: str
    tokens: List[int] = field(default_factory=list)
    avg_logprob: float = 0.0
    compression_ratio: float = 0.0
    no_speech_prob: float = 0.0
    temperature: float = 0.0
    words: Optional[List[Word]] = None

    @classmethod
    def from_native(cls, d: Mapping[str, Any]) -> "Segment":
        """Builds a segment from the dict the native module returns."""
        return cls(
            id=int(d["id"]),
            seek=int(d.get("seek", 0)),
            start=float(d["start"]),
            end=float(d["end"]),
            text=str(d["text"]),
            tokens=[int(t) for t in d.get("tokens", ())],
            avg_logprob=float(d.get("avg_logprob", 0.0)),
            compression_ratio=float(d.get("compression_ratio", 0.0)),
            no_speech_prob=float(d.get("no_speech_prob", 0.0)),
            temperature=float(d.get("temperature", 0.0)),
            words=[Word.from_native(w) for w in d["words"]] if d.get("words") else None,
        )


@dataclass
class Transcription:
    """A full transcript.

    Attributes:
        text: the whole transcript.
        segments: timed segments, in order.
        language: language code used for decoding (given or detected), e.g. ``"en"``.
        language_probability: probability of the detected language (1.0 when it was given).
        duration: length of the input audio in seconds.
        all_language_probs: ``[(code, probability), ...]`` of every language, most likely
            first, when the language was detected (faster-whisper's
            ``TranscriptionInfo.all_language_probs``); None when it was given.
    """

    text: str
    segments: List[Segment]
    language: str
    language_probability: float
    duration: float
    all_language_probs: Optional[List[Tuple[str, float]]] = None

    @classmethod
    def from_native(cls, d: Mapping[str, Any]) -> "Transcription":
        """Builds a transcription from the dict the native module returns."""
        return cls(
            text=str(d["text"]),
            segments=[Segment.from_native(s) for s in d.get("segments", ())],
            language=str(d.get("language", "")),
            language_probability=float(d.get("language_probability", 0.0)),
            duration=float(d.get("duration", 0.0)),
            all_language_probs=[(str(c), float(p)) for c, p in d["all_language_probs"]]
            if d.get("all_language_probs") else None,
        )

    def to_dict(self) -> Dict[str, Any]:
        """Returns plain Python types only (JSON-serializable), segments as dicts (a segment's
        ``words`` only when it has them: with ``word_timestamps=True``)."""
        d = asdict(self)
        for s in d["segments"]:
            if s["words"] is None:
                del s["words"]
        return d

    def __str__(self) -> str:
        return self.text


__all__ = ["Segment", "Transcription", "Word"]
