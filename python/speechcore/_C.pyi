"""Type stubs of the native module speechcore._C (C++, pybind11). Use the `speechcore` package.

Errors raised here are the classes of speechcore.errors (ModelError, NotFoundError,
UnsupportedError, InvalidArgumentError, AudioError, OutOfMemoryError, ...).
"""

from typing import Any, Callable, Dict, List, Optional, Tuple, TypedDict

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
    decoder_step: str  # "cpu"; on CUDA "persistent", "fused" (+ "+self_qkv" / "+cross_query") or "unfused"
    cross_absorb_min_windows: int  # batches of >= this many windows use absorbed cross-attention (0: never)

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
        progress: Optional[Callable[[float, float], None]] = None,
    ) -> NativeTranscription:
        """audio: float32 C-contiguous, (frames,) or (frames, channels), any rate; options: the
        keys of speechcore.TranscribeOptions.to_native(). Mixes down, resamples to 16 kHz.
        progress(done_seconds, total_seconds): called after each window (and at the start);
        what it raises stops the transcription and is raised again."""
        ...
    def transcribe_batch(
        self,
        audios: List[npt.NDArray[np.float32]],
        sample_rates: List[int],
        options: Dict[str, Any],
        max_batch: int = 64,
    ) -> List[NativeTranscription]:
        """Like transcribe for each array (sample_rates[i] is the rate of audios[i]), with one set
        of options, on a temporary Engine decoding up to max_batch windows together. Results in
        input order; errors about one array start with "audio item <index>: "."""
        ...
    def transcribe_batch_on_engine(
        self,
        engine: "Engine",
        audios: List[npt.NDArray[np.float32]],
        sample_rates: List[int],
        options: Dict[str, Any],
        max_in_flight: int = 0,
        priority: int = 0,
    ) -> List[NativeTranscription]:
        """The same on a running engine of this model (shared with other submitters), at most
        max_in_flight arrays submitted at once (0 = all). A failure on the engine aborts the
        call's other requests and raises the lowest failing item's error ("audio item <i>: ...")."""
        ...
    def detect_language(self, audio: npt.NDArray[np.float32], sample_rate: int, segments: int = 1,
                        threshold: float = 0.5) -> Tuple[str, float, List[Tuple[str, float]]]:
        """Model::detect_language: (language, probability, [(language, probability), ...])."""
        ...
    def check_options(self, options: Dict[str, Any]) -> None:
        """Raises the error transcribe() would raise for these options."""
        ...
    def prompt_logits(self, mel: npt.NDArray[np.float32], prompt: List[int]) -> npt.NDArray[np.float32]:
        """Raw float32 logits [vocab] after `prompt` for one window of features mel [n_mels, 3000]."""
        ...
    def encoder_passes(self) -> int:
        """30 s windows encoded by this model so far (diagnostics)."""
        ...

class EngineStats(TypedDict):
    queued_requests: int
    active_requests: int
    waiting_windows: int
    running_windows: int
    kv_blocks_total: int
    kv_blocks_used: int
    kv_blocks_free: int
    steps: int
    tokens_generated: int
    tokens_per_second: float
    preemptions: int
    windows_discarded: int
    requests_finished: int
    requests_failed: int

class Engine:
    """speechcore::Engine: continuous batching over a Model on a background thread."""
    def __init__(self, model: Model, max_batch: int = 64, max_encode_batch: int = 8, kv_block_size: int = 16,
                 kv_blocks: int = 0, gpu_memory_fraction: float = 0.9, prepare_threads: int = 0) -> None: ...
    def submit(self, audio: npt.NDArray[np.float32], sample_rate: int, options: Dict[str, Any],
               on_done: Callable[[NativeTranscription], None], on_error: Callable[[BaseException], None],
               on_segment: Optional[Callable[[NativeSegment], None]] = None, priority: int = 0) -> int:
        """Queues a transcription; on_done(dict) or on_error(exception) is called once, on the
        engine thread (on_segment for each segment as it finishes). Returns the request id."""
        ...
    def abort(self, id: int) -> bool: ...
    def shutdown(self, cancel: bool = False) -> None: ...
    def stats(self) -> EngineStats: ...

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

def cuda_built() -> bool:
    """Whether this build has the CUDA backend."""
    ...

def cuda_available() -> bool:
    """Whether the CUDA backend is built and a GPU is usable."""
    ...

def cuda_memory_stats() -> HostMemoryStats:
    """Statistics of the CUDA caching allocator (only in CUDA builds)."""
    ...

def cuda_memory_reset_peak() -> None:
    """Sets the CUDA allocator's peak_bytes_in_use to the bytes in use now (CUDA builds only)."""
    ...

def cuda_memory_clear_cache() -> None:
    """Returns the CUDA allocator's cached blocks to the driver (CUDA builds only)."""
    ...


# ---- tokenizer (python/bindings/tokenizer.cc) ------------------------------------------------

class Tokenizer:
    """Whisper's byte-level BPE tokenizer, loaded from tokenizer.json."""

    @staticmethod
    def from_file(path: str) -> Tokenizer: ...
    def encode(self, text: str) -> List[int]: ...
    def decode(self, ids: List[int]) -> str: ...
    def decode_with_timestamps(self, ids: List[int]) -> str: ...
    def token_to_id(self, token: str) -> int: ...
    def id_to_token(self, id: int) -> str: ...
    @property
    def vocab_size(self) -> int: ...
    @property
    def model_vocab_size(self) -> int: ...
    @property
    def eot(self) -> int: ...
    @property
    def sot(self) -> int: ...
    @property
    def translate(self) -> int: ...
    @property
    def transcribe(self) -> int: ...
    @property
    def sot_lm(self) -> int: ...
    @property
    def sot_prev(self) -> int: ...
    @property
    def no_speech(self) -> int: ...
    @property
    def no_timestamps(self) -> int: ...
    @property
    def timestamp_begin(self) -> int: ...
    @property
    def multilingual(self) -> bool: ...
    def language_token(self, code: str) -> int: ...
    def language_codes(self) -> List[str]: ...
    def sot_sequence(self, language: str, task: str) -> List[int]: ...
    def non_speech_tokens(self) -> List[int]: ...
    @staticmethod
    def pre_tokenize(text: str) -> List[bytes]: ...


# ---- audio (python/bindings/audio.cc) --------------------------------------------------------

def log_mel_spectrogram(audio: np.ndarray, n_mels: int = 80, padding: int = 160, n_fft: int = 400,
                        hop_length: int = 160, sample_rate: int = 16000, num_threads: int = 1) -> np.ndarray: ...
def mel_filters(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray: ...
def resample(audio: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray: ...
def to_mono(audio: np.ndarray) -> np.ndarray: ...
def validate_audio(audio: np.ndarray) -> None: ...
def prepare_audio(audio: np.ndarray, sample_rate: int) -> np.ndarray: ...
def read_wav(path: str) -> Tuple[np.ndarray, int]: ...


# ---- checkpoints (python/bindings/checkpoint.cc) ---------------------------------------------

class CheckpointReader:
    @property
    def format(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def metadata(self) -> Dict[str, str]: ...
    def tensors(self) -> List[Tuple[str, Tuple[int, ...], str]]: ...
    def aliases(self) -> List[Tuple[str, str]]: ...
    def has(self, name: str) -> bool: ...
    def __contains__(self, name: str) -> bool: ...
    def __len__(self) -> int: ...
    def info(self, name: str) -> Tuple[str, Tuple[int, ...], str]: ...
    def get(self, name: str) -> np.ndarray: ...
    def get_float32(self, name: str) -> np.ndarray: ...
    def scalar_int(self, name: str) -> Optional[int]: ...
    def scalar_float(self, name: str) -> Optional[float]: ...

def open_checkpoint(path: str) -> CheckpointReader: ...


# ---- CPU kernels, test hooks (python/bindings/ops.cc): the submodule _C.ops ------------------

class _Ops:
    def linear(self, x: np.ndarray, w: np.ndarray, b: Optional[np.ndarray]) -> np.ndarray: ...
    def layer_norm(self, x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float = 1e-5) -> np.ndarray: ...
    def gelu(self, x: np.ndarray) -> np.ndarray: ...
    def softmax(self, x: np.ndarray) -> np.ndarray: ...
    def log_softmax(self, x: np.ndarray) -> np.ndarray: ...
    def attention(self, q: np.ndarray, k: np.ndarray, v: np.ndarray, heads: int,
                  causal_offset: int = -1) -> np.ndarray: ...
    def embedding(self, table: np.ndarray, ids: np.ndarray, pos: np.ndarray) -> np.ndarray: ...
    def conv1d(self, x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int, pad: int) -> np.ndarray: ...
    def whisper_logits_rules(self, logits: np.ndarray, generated: List[int], step: int, timestamps: bool, eot: int,
                             no_timestamps: int, timestamp_begin: int, timestamp_end: int, suppress: List[int],
                             suppress_begin: List[int], max_initial_timestamp_index: int = 50) -> np.ndarray: ...
    def sample_tokens(self, logits: np.ndarray, temperature: float, n: int, seed: int = 0) -> np.ndarray: ...
    def sample_uniforms(self, n: int, seed: int = 0) -> np.ndarray: ...

ops: _Ops
