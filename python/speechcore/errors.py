"""Exceptions raised by speechcore. Every error is a :class:`SpeechcoreError`."""

from __future__ import annotations


class SpeechcoreError(Exception):
    """Base class of every error speechcore raises."""


class InvalidArgumentError(SpeechcoreError, ValueError):
    """An option or argument is not valid (unknown language, bad task, wrong array shape...)."""


class NotFoundError(SpeechcoreError, FileNotFoundError):
    """A file, directory or named model does not exist."""


class ModelError(SpeechcoreError):
    """A model directory is missing files, truncated, corrupt, or has unexpected weights."""


class AudioError(SpeechcoreError, ValueError):
    """Audio that cannot be decoded or used: empty, not audio, truncated, NaN/inf samples."""


class UnsupportedError(SpeechcoreError):
    """A valid request this build or device cannot serve (e.g. device="cuda" without CUDA)."""


class OutOfMemoryError(SpeechcoreError, MemoryError):
    """An allocation failed."""


class CancelledError(SpeechcoreError):
    """The request was aborted."""


class InternalError(SpeechcoreError):
    """A bug in speechcore: please report it with the input that caused it."""


__all__ = [
    "SpeechcoreError",
    "InvalidArgumentError",
    "NotFoundError",
    "ModelError",
    "AudioError",
    "UnsupportedError",
    "OutOfMemoryError",
    "CancelledError",
    "InternalError",
]
