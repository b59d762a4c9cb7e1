"""speechcore: an inference engine for speech foundation models.

    import speechcore
    model = speechcore.load("tiny.en")
    print(model.transcribe("speech.wav").text)
"""

from __future__ import annotations


def _preload_openblas() -> None:
    # The native module links OpenBLAS from the scipy-openblas32 wheel; load it by absolute
    # path first so the extension resolves it wherever site-packages lives.
    import ctypes
    import os

    try:
        import scipy_openblas32
    except ImportError:  # pragma: no cover - a dependency; the import of _C will explain
        return
    lib = os.path.join(scipy_openblas32.get_lib_dir(), "libscipy_openblas.so")
    if os.path.exists(lib):
        ctypes.CDLL(lib, mode=ctypes.RTLD_GLOBAL)


_preload_openblas()

from . import _C  # noqa: E402
from .errors import (  # noqa: E402
    AudioError,
    CancelledError,
    InternalError,
    InvalidArgumentError,
    ModelError,
    NotFoundError,
    OutOfMemoryError,
    SpeechcoreError,
    UnsupportedError,
)

from .api import Model, load  # noqa: E402
from .audio import load_audio  # noqa: E402
from .options import TranscribeOptions  # noqa: E402
from .results import Segment, Transcription, Word  # noqa: E402

__version__ = _C.__version__

__all__ = [
    "load",
    "Model",
    "Transcription",
    "Segment",
    "Word",
    "TranscribeOptions",
    "load_audio",
    "AudioError",
    "CancelledError",
    "InternalError",
    "InvalidArgumentError",
    "ModelError",
    "NotFoundError",
    "OutOfMemoryError",
    "SpeechcoreError",
    "UnsupportedError",
    "__version__",
]
