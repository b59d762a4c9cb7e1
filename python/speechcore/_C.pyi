"""Type stubs of the native module speechcore._C (C++, pybind11). Use the `speechcore` package.

Errors raised here are the classes of speechcore.errors (ModelError, NotFoundError,
UnsupportedError, InvalidArgumentError, AudioError, OutOfMemoryError, ...).
"""

from typing import Any, Dict, List, TypedDict

import numpy as np
import numpy.typing as npt

__version__: str

class ModelInfo(TypedDict):
    architecture: str
    format: str
    path: str
    multilingual: bool
    n_mels: int
    d_model: int
    encoder_layers: int
    decoder_layers: int
    vocab_size: int
    device: str
    compute_type: str
    weight_bytes: int

class NativeSegment(TypedDict):
    id: int
    seek: int
    start: float
    end: float
    text: str
    tokens: List[int]
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float
    temperature: float

class NativeTranscription(TypedDict):
    text: str
    language: str
    language_probability: float
    duration: float
    segments: List[NativeSegment]

class Model:
    """A model loaded from a directory (CTranslate2 layout: model.bin, config.json, tokenizer.json)."""

    def __init__(self, path: str, device: str = "auto", compute_type: str = "auto", threads: int = 0) -> None: ...
    @property
    def info(self) -> ModelInfo: ...
    def transcribe(
        self,
        audio: npt.NDArray[np.float32],
        sample_rate: int,
        options: Dict[str, Any],
    ) -> NativeTranscription:
        """audio: float32 C-contiguous, (frames,) or (frames, channels), any rate; options: the
        keys of speechcore.TranscribeOptions.to_native(). Mixes down, resamples to 16 kHz."""
        ...

class HostMemoryStats(TypedDict):
    bytes_in_use: int
    peak_bytes_in_use: int
    bytes_cached: int
    num_allocs: int
    num_cache_hits: int
    num_system_allocs: int

def host_memory_stats() -> HostMemoryStats:
    """Statistics of the host caching allocator."""
    ...

def host_memory_clear_cache() -> None:
    """Returns cached host blocks to the system."""
    ...

def hardware_threads() -> int:
    """Number of hardware threads of this machine."""
    ...
