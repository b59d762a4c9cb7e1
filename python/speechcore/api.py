"""The SDK entry points: :func:`load` and :class:`Model`."""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import numbers
import os
import queue
import sys
import threading
import weakref
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import _C
from .audio import AudioInput, load_audio
from .errors import CancelledError, InvalidArgumentError, SpeechcoreError, UnsupportedError
from .models import resolve_model
from .options import DEFAULT_TEMPERATURES, TranscribeOptions
from .results import Segment, Transcription

DEVICES = ("auto", "cpu", "cuda")
COMPUTE_TYPES = ("auto", "float32", "float16", "bfloat16")
DEFAULT_BATCH_SIZE = 64  # Model.transcribe_batch: recordings in the engine at once (= the engine's default max_batch)


def _native_model_class() -> Any:
    """The native model class (``speechcore._C.Model``); tests replace this hook with a fake."""
    cls = getattr(_C, "Model", None)
    if cls is None:
        raise UnsupportedError("this build of speechcore has no native Model (speechcore._C.Model is missing)")
    return cls


def _native_engine_class() -> Any:
    """The native engine class (``speechcore._C.Engine``); tests replace this hook with a fake."""
    cls = getattr(_C, "Engine", None)
    if cls is None:
        raise UnsupportedError("this build of speechcore has no native Engine (speechcore._C.Engine is missing)")
    return cls


def _choice(name: str, value: Any, allowed: Iterable[str]) -> str:
    allowed = tuple(allowed)
    if not isinstance(value, str) or value.strip().lower() not in allowed:
        raise InvalidArgumentError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
    return value.strip().lower()


class Model:
    """A loaded speech model; create it with :func:`speechcore.load` (same arguments)."""

    def __init__(
        self,
        model: Union[str, "os.PathLike[str]"] = "tiny.en",
        device: str = "auto",
        compute_type: str = "auto",
        threads: Optional[int] = None,
    ) -> None:
        device = _choice("device", device, DEVICES)
        compute_type = _choice("compute_type", compute_type, COMPUTE_TYPES)
        if threads is None:
            threads = 0
        elif isinstance(threads, bool) or not isinstance(threads, numbers.Integral) or threads < 0:
            raise InvalidArgumentError(f"threads must be None (all cores) or an integer >= 0, got {threads!r}")
        directory = resolve_model(model)
        self._native = _native_model_class()(str(directory), device, compute_type, int(threads))
        self._engine_lock = threading.Lock()
        self._engine: Any = None
        self._engine_options: Dict[str, Any] = {}  # set by start_engine
        self._engine_max_batch = DEFAULT_BATCH_SIZE

    @property
    def info(self) -> Dict[str, Any]:
        """What was loaded: architecture, format, path, multilingual, n_mels, d_model,
        encoder_layers, decoder_layers, vocab_size, device, compute_type, weight_bytes, and
        decoder_step (how a one-row decoder step runs: "cpu"; on CUDA "persistent", "fused"
        (+ "+self_qkv" / "+cross_query" when an attention sub-layer's products run inside its
        attention kernel: the default in float16/bfloat16 on compute capability 9,
        SPEECHCORE_SELF_QKV_FUSED=0 / SPEECHCORE_CROSS_QUERY_FUSED=0 at load turn them off)
        or "unfused"), and cross_absorb_min_windows (CUDA half precision: batches of at least this
        many windows run the cross-attention over the encoder output with K/V absorbed into the
        query and output products; 0: never)."""
        return dict(self._native.info)

    def __repr__(self) -> str:
        try:
            i = self._native.info
            return (f"speechcore.Model(architecture={i.get('architecture')!r}, path={i.get('path')!r}, "
                    f"device={i.get('device')!r}, compute_type={i.get('compute_type')!r})")
        except Exception:  # never fail in repr
            return "speechcore.Model(<unavailable>)"

    def transcribe(
        self,
        audio: AudioInput,
        *,
        sample_rate: Optional[int] = None,
        language: Optional[str] = None,
        task: str = "transcribe",
        beam_size: int = 5,
        best_of: int = 5,
        patience: float = 1.0,
        length_penalty: float = 1.0,
        repetition_penalty: float = 1.0,
        no_repeat_ngram_size: int = 0,
        temperature: Union[float, Sequence[float]] = DEFAULT_TEMPERATURES,
        seed: int = 0,
        compression_ratio_threshold: Optional[float] = 2.4,
        log_prob_threshold: Optional[float] = -1.0,
        no_speech_threshold: Optional[float] = 0.6,
        condition_on_previous_text: bool = True,
        prompt_reset_on_temperature: float = 0.5,
        initial_prompt: Optional[str] = None,
        prefix: Optional[str] = None,
        hotwords: Optional[str] = None,
        suppress_blank: bool = True,
        suppress_tokens: Optional[Iterable[int]] = None,
        without_timestamps: bool = False,
        max_initial_timestamp: float = 1.0,
        word_timestamps: bool = False,
        prepend_punctuations: str = "\"'“¿([{-",
        append_punctuations: str = "\"'.。,，!！?？:：”)]}、",
        hallucination_silence_threshold: Optional[float] = None,
        max_new_tokens: Optional[int] = None,
        clip_timestamps: Union[None, str, Sequence[float]] = None,
        language_detection_threshold: float = 0.5,
        language_detection_segments: int = 1,
        multilingual: bool = False,
        chunk_length: Optional[int] = None,
        vad_filter: bool = False,
        vad_parameters: Union[None, Dict[str, Any], Any] = None,
        vad_model_path: Union[None, str, "os.PathLike[str]"] = None,
        chunked: bool = False,
        log_progress: bool = False,
        **kwargs: Any,
    ) -> Transcription:
        """Transcribes (or translates to English) speech of any length.

        The decoding options and their defaults are faster-whisper 1.2.1's
        ``WhisperModel.transcribe``: beam search with 5 beams, falling back to sampling at the
        temperatures ``0.2 ... 1.0`` for a window that fails the compression-ratio or
        log-probability check. Pass ``beam_size=1, temperature=0.0`` for plain greedy decoding.

        Args:
            audio: a path, encoded bytes, a binary file object, or a numpy array of samples
                ``(frames,)`` / ``(frames, channels)``; see :func:`speechcore.load_audio`.
                Any rate and channel count: the model mixes down and resamples to 16 kHz.
            sample_rate: rate of a numpy array in Hz. Default None = 16000. Not used for files.
            language: language code (``"en"``) or name (``"english"``); None detects it
                (multilingual models; English-only ones take ``"en"``) as faster-whisper does,
                from the first 30 s window (see `language_detection_threshold`); the result's
                ``language_probability`` and ``all_language_probs`` report it. Default None.
            task: ``"transcribe"`` or ``"translate"`` (into English; multilingual models).
                Default ``"transcribe"``.
            beam_size: beam search width at temperature 0; 1 is greedy decoding. Default 5.
            best_of: candidates sampled at a temperature above 0; the one with the best
                length-normalized log probability is kept. Default 5.
            patience: the beam search stops once ``round(beam_size * patience)`` hypotheses
                have finished (must be > 0). Default 1.0.
            length_penalty: hypotheses (beams, and the `best_of` samples) are ranked by
                ``sum(log-probs) / length**length_penalty``; 0 ranks by the plain sum.
                Default 1.0.
            repetition_penalty: logits of tokens already generated in the window are divided
                by this (multiplied when negative); must be > 0. Default 1.0 (off).
            no_repeat_ngram_size: forbids repeating any n-gram of this many tokens within a
                window. Default 0 (off).
            temperature: a temperature, or a list tried in turn for each 30 s window: 0
                decodes deterministically (greedy / beam search), above 0 samples `best_of`
                candidates. A window that fails the compression-ratio or log-probability check
                (and is not silence) is decoded again at the next one; when all fail, the best
                attempt is kept. ``0.0`` alone decodes without fallback. With `chunked` only
                the first is used. Default ``[0.0, 0.2, 0.4, 0.6, 0.8, 1.0]``.
            seed: seed of the sampling random generator; each window attempt draws its own
                stream, so sampled results are reproducible and the same on the engine.
                Default 0.
            compression_ratio_threshold: a window whose text's gzip compression ratio is above
                this fails (is decoded again at the next temperature); None disables.
                Default 2.4.
            log_prob_threshold: a window whose average log probability is below this fails;
                None disables. Default -1.0.
            no_speech_threshold: a window whose no-speech probability is above this and whose
                average log probability is below `log_prob_threshold` is skipped as silence;
                None disables. Default 0.6.
            condition_on_previous_text: prompt each 30 s window with the previous window's
                text. Default True.
            prompt_reset_on_temperature: the previous-text prompt is dropped after a window
                decoded at a temperature above this. Default 0.5.
            initial_prompt: text used as the previous context of the first window.
                Default None.
            prefix: text forced at the start of the first window's output; decoding continues
                from it (faster-whisper's ``prefix``; CPU backend only, CUDA raises
                UnsupportedError). Default None.
            hotwords: hint phrases given to every window as previous context (faster-whisper's
                ``hotwords``: after ``<|startofprev|>``, before the previous text); not in the
                first window when `prefix` is set. Default None.
            suppress_blank: suppress a blank (and end-of-text) first token. Default True.
            suppress_tokens: token ids never emitted; ``-1`` is the model's default list,
                ``[]`` nothing. Default None = ``[-1]``.
            without_timestamps: text only, no timestamp tokens (one segment per 30 s window).
                Default False.
            max_initial_timestamp: latest allowed first timestamp in seconds. Default 1.0.
            word_timestamps: give every segment its words (``Segment.words``: start, end, word,
                probability) from the cross-attention of the model's alignment heads, as
                faster-whisper; segment boundaries and the next window's start then follow the
                words. CPU backend only (CUDA raises UnsupportedError). Default False.
            prepend_punctuations: with `word_timestamps`, punctuation merged into the following
                word. Default ``"\\"'“¿([{-"`` (faster-whisper's).
            append_punctuations: with `word_timestamps`, punctuation merged into the previous
                word. Default ``"\\"'.。,，!！?？:：”)]}、"`` (faster-whisper's).
            hallucination_silence_threshold: with `word_timestamps`, skip silent periods longer
                than this many seconds around a likely hallucination (faster-whisper's
                algorithm); None disables. Default None.
            max_new_tokens: most tokens decoded per window; None is the model's limit.
                Default None.
            clip_timestamps: parts of the audio to transcribe, ``[start, end, start, end, ...]``
                in seconds, or faster-whisper's comma string (``"0,10.5,20"``); an odd count
                runs the last clip to the end of the audio. Clips are decoded in order with the
                long-form algorithm (a window never crosses a clip's end; the previous-text
                prompt carries over); segment times stay on the input's timeline. With clips
                the VAD filter is skipped (as faster-whisper); not with `chunked`. Default
                None (the whole audio).
            language_detection_threshold: detection stops at the first 30 s window whose most
                likely language is more probable than this. Default 0.5.
            language_detection_segments: 30 s windows detection may read, from the start of the
                first clip; when none passes the threshold, the language ranked first in the most
                windows wins, with its highest probability. Default 1.
            multilingual: detect the language of every 30 s window (from its encoder output)
                and decode the window in it, for audio that switches languages, as
                faster-whisper's ``multilingual=True``; the result's `language` stays the first
                one. English-only models ignore it. CPU only for now (UnsupportedError on
                CUDA). Default False.
            chunk_length: seconds of audio per window, 1..30 (faster-whisper's
                ``chunk_length``): each window takes at most this much audio, zero-padded to the
                model's 30 s input, and language detection reads windows of this length; with
                `chunked`, the longest merged speech chunk. Default None (30 s).
            vad_filter: transcribe only the speech that Silero VAD finds, as faster-whisper's
                ``vad_filter=True``: the speech chunks are concatenated and transcribed with
                the options above, and segment times are mapped back to the input's timeline
                (``Transcription.duration`` stays the input's). Audio without speech gives no
                segments and decodes nothing. The VAD runs in the C++ core (about 700x real
                time on one core). Default False.
            vad_parameters: VAD options: a :class:`speechcore.vad.VadOptions` (or
                faster-whisper's ``VadOptions``) or a dict of its fields (``threshold``,
                ``neg_threshold``, ``min_speech_duration_ms``, ``max_speech_duration_s``,
                ``min_silence_duration_ms``, ``speech_pad_ms``, ...); fields left out take
                VadOptions' defaults. None: faster-whisper's defaults of the mode (vad_filter:
                ``VadOptions()``, i.e. 2 s of silence ends a chunk, 400 ms padding; chunked:
                ``min_silence_duration_ms=160, max_speech_duration_s=30``). Default None.
            vad_model_path: the Silero VAD weights (``silero_vad_16k.safetensors``); None
                uses the installed ``silero-vad`` package's (``pip install --no-deps
                "silero-vad==6.2.3"``; NotFoundError when missing). Default None.
            chunked: batched VAD-chunked mode (faster-whisper's ``BatchedInferencePipeline``):
                the speech chunks are merged into groups of at most 30 s, each decoded as an
                independent window, and the segments come back in time order on the input's
                timeline; implies the VAD. As in that pipeline, only the first temperature of a
                list is used (no fallback). :meth:`transcribe_chunked` runs this mode on the
                engine with that pipeline's defaults (``without_timestamps=True``); here the
                groups are decoded together by this call alone. Default False.
            log_progress: show the progress on stderr (seconds of audio transcribed, elapsed and
                remaining time), updated after each window, as faster-whisper's
                ``log_progress=True``. Ctrl-C in a progress update stops the transcription
                (KeyboardInterrupt). Default False.
            **kwargs: nothing else is accepted: an unknown keyword (e.g. a misspelled option)
                raises InvalidArgumentError naming it and the closest option.

        Returns:
            a :class:`Transcription` (``.text``, ``.segments``, ``.language``,
            ``.language_probability``, ``.duration``).

        Raises:
            InvalidArgumentError: a bad option or argument. NotFoundError: a missing audio file
                (or, with the VAD, missing Silero weights). AudioError: audio that cannot be
                decoded, is empty, or holds NaN/inf. ModelError: a VAD weights file without
                the Silero tensors.
        """
        options = _transcribe_options(
            language=language,
            task=task,
            beam_size=beam_size,
            best_of=best_of,
            patience=patience,
            length_penalty=length_penalty,
            repetition_penalty=repetition_penalty,
            no_repeat_ngram_size=no_repeat_ngram_size,
            temperature=temperature,
            seed=seed,
            compression_ratio_threshold=compression_ratio_threshold,
            log_prob_threshold=log_prob_threshold,
            no_speech_threshold=no_speech_threshold,
            condition_on_previous_text=condition_on_previous_text,
            prompt_reset_on_temperature=prompt_reset_on_temperature,
            initial_prompt=initial_prompt,
            prefix=prefix,
            hotwords=hotwords,
            suppress_blank=suppress_blank,
            suppress_tokens=suppress_tokens,
            without_timestamps=without_timestamps,
            max_initial_timestamp=max_initial_timestamp,
            word_timestamps=word_timestamps,
            prepend_punctuations=prepend_punctuations,
            append_punctuations=append_punctuations,
            hallucination_silence_threshold=hallucination_silence_threshold,
            max_new_tokens=max_new_tokens,
            clip_timestamps=clip_timestamps,
            language_detection_threshold=language_detection_threshold,
            language_detection_segments=language_detection_segments,
            multilingual=multilingual,
            chunk_length=chunk_length,
            vad_filter=vad_filter,
            vad_parameters=vad_parameters,
            vad_model_path=vad_model_path,
            chunked=chunked,
            **kwargs,  # only unknown names: InvalidArgumentError
        )
        if not isinstance(log_progress, bool):
            raise InvalidArgumentError(f"log_progress must be a bool, got {log_progress!r}")
        samples, rate = load_audio(audio, sample_rate)
        if log_progress:
            from ._progress import AudioProgress

            progress = AudioProgress(sys.stderr)
            try:
                result = self._native.transcribe(samples, rate, options.to_native(), progress)
            finally:
                progress.finish()
        else:
            result = self._native.transcribe(samples, rate, options.to_native())
        return Transcription.from_native(result)

    def detect_language(
        self,
        audio: AudioInput,
        *,
        sample_rate: Optional[int] = None,
        language_detection_segments: int = 1,
        language_detection_threshold: float = 0.5,
    ) -> Tuple[str, float, List[Tuple[str, float]]]:
        """Detects the spoken language, as faster-whisper's ``WhisperModel.detect_language``.

        The decoder reads ``<|startoftranscript|>`` over the first 30 s window and the softmax of
        the language tokens' logits gives each language's probability; with
        `language_detection_segments` > 1, later windows are read until one's most likely
        language is more probable than `language_detection_threshold` (else the language
        ranked first in the most windows wins, with its highest probability).

        Args:
            audio, sample_rate: as :meth:`transcribe`.
            language_detection_segments: 30 s windows read at most. Default 1.
            language_detection_threshold: probability that ends the search. Default 0.5.

        Returns:
            ``(language, probability, all_language_probs)``: the code (``"fr"``), its
            probability, and ``[(code, probability), ...]`` of every language, most likely
            first (of the last window read).

        Raises:
            InvalidArgumentError: an English-only model, or a bad argument. NotFoundError /
                AudioError: as :meth:`transcribe`.
        """
        segments = _option_value(TranscribeOptions, "language_detection_segments", language_detection_segments)
        threshold = _option_value(TranscribeOptions, "language_detection_threshold", language_detection_threshold)
        samples, rate = load_audio(audio, sample_rate)
        language, probability, probs = self._native.detect_language(samples, rate, segments, threshold)
        return str(language), float(probability), [(str(c), float(p)) for c, p in probs]

    def transcribe_batch(
        self,
        audios: Sequence[AudioInput],
        *,
        sample_rate: Union[None, int, Sequence[Optional[int]]] = None,
        batch_size: Optional[int] = None,
        **options: Any,
    ) -> List[Transcription]:
        """Transcribes many recordings with the same options on the engine (continuous batching).

        The recordings go through this model's engine, the one behind :meth:`submit` (started
        here if it is not running), so other threads may submit or run batches at the same time:
        their windows are decoded together. They are submitted in input order, at most
        `batch_size` at once (the next when one finishes). Each result equals :meth:`transcribe`
        of that recording alone.

        Args:
            audios: a list (or other sequence) of audio inputs, each anything :meth:`transcribe`
                accepts: a path, encoded bytes, a binary file object, or a numpy array of
                samples ``(frames,)`` / ``(frames, channels)``, of any rate and channel count.
            sample_rate: rate in Hz of the numpy arrays: one value for all items, or a sequence
                with one entry (int or None) per item. Default None = 16000. Not used for files.
            batch_size: most of these recordings in the engine at once (so at most that many of
                their 30 s windows are decoded together; the engine's ``max_batch`` bounds the
                windows of all requests). When this call starts the engine and
                :meth:`start_engine` was never called, the engine starts with
                ``max_batch=batch_size``. Default None = the engine's ``max_batch`` (64 unless
                set with :meth:`start_engine`).
            **options: the decoding options of :meth:`transcribe` (``language``, ``task``,
                ``beam_size``, ``best_of``, ``patience``, ``temperature``, ...; every keyword
                of :meth:`transcribe` but `sample_rate`), same meanings and defaults
                (faster-whisper's: ``beam_size=5``, ``temperature=[0.0, 0.2, ..., 1.0]``),
                applied to every item (with ``chunked=True`` the speech groups of all items
                are decoded together; pass ``without_timestamps=True`` for faster-whisper's
                batched mode). An unknown keyword raises InvalidArgumentError naming it.

        Returns:
            a list of :class:`Transcription`, one per item, in input order (``[]`` for an empty
            list).

        Raises:
            InvalidArgumentError: a bad option, `batch_size` or `sample_rate`, or an item of an
                unsupported type. NotFoundError: a missing audio file. AudioError: an item that
                cannot be decoded, is empty, or holds NaN/inf. An error about one item starts
                with ``audio item <index>`` (and the path, for paths). Options are checked
                before any audio is read, and every item is read before any is submitted.
                When an item fails on the engine (e.g. its prompt plus `max_new_tokens` outgrows
                the model), the call aborts its other requests and raises the failure of the
                lowest index; the engine keeps serving other requests. CancelledError: the
                engine was shut down (:meth:`close`, :meth:`start_engine`) during the call.
                KeyboardInterrupt (or any exception) while waiting aborts the call's requests.
        """
        native_options = _transcribe_options(**options).to_native()
        if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral)
                                       or batch_size < 1):
            raise InvalidArgumentError(f"batch_size must be None or an integer >= 1, got {batch_size!r}")
        if (isinstance(audios, (str, bytes, bytearray, memoryview, os.PathLike, np.ndarray))
                or hasattr(audios, "read") or not isinstance(audios, Iterable)):
            raise InvalidArgumentError(
                f"audios must be a list of audio inputs (paths, bytes, file objects or numpy arrays), "
                f"got {type(audios).__name__}; use transcribe() for one recording")
        items = list(audios)
        if isinstance(sample_rate, (list, tuple)):
            if len(sample_rate) != len(items):
                raise InvalidArgumentError(
                    f"sample_rate has {len(sample_rate)} entries for {len(items)} audio items")
            rates = list(sample_rate)
        else:
            rates = [sample_rate] * len(items)
        if not items:
            return []
        self._native.check_options(native_options)  # what only the model knows (e.g. translate, English-only)

        def name(i: int) -> str:
            item = items[i]
            return f" ({os.fsdecode(os.fspath(item))})" if isinstance(item, (str, os.PathLike)) else ""

        loaded: List[Any] = []  # (samples, rate), then None once submitted
        for i, (item, rate) in enumerate(zip(items, rates)):
            try:
                loaded.append(load_audio(item, rate))
            except SpeechcoreError as e:
                raise type(e)(f"audio item {i}{name(i)}: {e}") from None

        engine = self._get_engine(None if batch_size is None else int(batch_size))
        cap = int(batch_size) if batch_size is not None else self._engine_max_batch
        n = len(loaded)
        futures: List[Any] = [None] * n
        aborted = [False] * n
        finished: "queue.Queue[int]" = queue.Queue()
        results: List[Optional[Transcription]] = [None] * n
        failure: Optional[Tuple[int, BaseException]] = None
        next_item = outstanding = 0

        def abort_rest() -> None:
            for j, f in enumerate(futures):
                if f is not None and not f.done() and not aborted[j]:
                    aborted[j] = True
                    engine.abort(f.request_id)

        try:
            while True:
                while failure is None and next_item < n and outstanding < cap:
                    i = next_item
                    samples, rate = loaded[i]
                    loaded[i] = None  # the engine holds its own copy
                    try:
                        futures[i] = self._submit_loaded(engine, samples, rate, native_options, 0, None)
                    except SpeechcoreError as e:  # e.g. the engine was shut down meanwhile
                        failure = (i, e)
                        abort_rest()
                        break
                    futures[i].add_done_callback(lambda _, i=i: finished.put(i))
                    next_item += 1
                    outstanding += 1
                if outstanding == 0 and (failure is not None or next_item == n):
                    break
                try:
                    i = finished.get(timeout=0.5)  # a timeout keeps Ctrl-C responsive
                except queue.Empty:
                    continue
                outstanding -= 1
                error = futures[i].exception()
                if error is None:
                    results[i] = futures[i].result()
                elif not (aborted[i] and isinstance(error, CancelledError)):
                    if failure is None or i < failure[0]:
                        failure = (i, error)
                    abort_rest()
        except BaseException:
            abort_rest()
            raise
        if failure is not None:
            i, error = failure
            raise _renamed(error, f"audio item {i}{name(i)}: {error}") from None
        return results  # type: ignore[return-value]  # every item succeeded

    def transcribe_chunked(
        self,
        audio: AudioInput,
        *,
        sample_rate: Optional[int] = None,
        batch_size: Optional[int] = None,
        without_timestamps: bool = True,
        vad_parameters: Union[None, Dict[str, Any], Any] = None,
        priority: int = 0,
        **options: Any,
    ) -> Transcription:
        """Batched VAD-chunked transcription, the fast path for long recordings (faster-whisper's
        ``BatchedInferencePipeline.transcribe``).

        Silero VAD (run by the C++ core) finds the speech; its chunks are merged into groups of
        at most 30 s (faster-whisper's ``collect_chunks``); each group is decoded as an
        independent 30 s window (no previous-text prompt; ``initial_prompt``, if given,
        prompts every group), and all groups of the recording go to this model's engine
        together (up to 32 in flight), so they are decoded as one batch with whatever else the
        engine runs. The segments come back in time order with times on the input's timeline
        (each group's times offset by the speech before it, then mapped back through the
        removed silence as faster-whisper's ``restore_speech_timestamps`` does). Without
        timestamps (the default), each group gives one segment spanning it. Audio without
        speech gives no segments.

        Same as ``transcribe(audio, chunked=True, without_timestamps=True, ...)`` except that it
        runs on the engine (shared with :meth:`submit` and :meth:`transcribe_batch` callers).
        The decoding defaults are the pipeline's (``beam_size=5``; of the default temperature
        list only the first, 0, is used: no fallback). Differences from faster-whisper's
        pipeline: a group the model judges silent (``no_speech_threshold``, as in
        :meth:`transcribe`) gives no segment, segments with empty text are dropped, and with
        ``without_timestamps=False`` text after a group's last timestamp is decoded again from
        there instead of dropped.

        Args:
            audio, sample_rate: as :meth:`transcribe`.
            batch_size: when this call starts the engine and :meth:`start_engine` was never
                called, the engine's ``max_batch`` (windows decoded together). Default None (64).
            without_timestamps: one segment per group, no timestamp tokens (the pipeline's
                default). Default True.
            vad_parameters: VAD options (:class:`speechcore.vad.VadOptions` or a dict); None:
                the pipeline's ``min_silence_duration_ms=160, max_speech_duration_s=30``;
                ``max_speech_duration_s`` is capped at 30. Default None.
            priority: engine priority, as in :meth:`submit`. Default 0.
            **options: the other options of :meth:`transcribe` (``language``,
                ``initial_prompt``, ``vad_model_path``, ...).

        Returns:
            a :class:`Transcription` (``duration``: the input's length).

        Raises:
            as :meth:`transcribe`; CancelledError when the engine is shut down meanwhile.
            KeyboardInterrupt (or any exception) while waiting aborts the request.
        """
        if "chunked" in options:
            raise InvalidArgumentError("transcribe_chunked always runs the chunked mode; do not pass chunked=")
        native_options = _transcribe_options(without_timestamps=without_timestamps, vad_parameters=vad_parameters,
                                             chunked=True, **options).to_native()
        if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral)
                                       or batch_size < 1):
            raise InvalidArgumentError(f"batch_size must be None or an integer >= 1, got {batch_size!r}")
        if isinstance(priority, bool) or not isinstance(priority, numbers.Integral):
            raise InvalidArgumentError(f"priority must be an integer, got {priority!r}")
        self._native.check_options(native_options)  # what only the model knows (and the VAD weights)
        samples, rate = load_audio(audio, sample_rate)
        engine = self._get_engine(None if batch_size is None else int(batch_size))
        future = self._submit_loaded(engine, samples, rate, native_options, int(priority), None)
        try:
            while True:
                try:
                    return future.result(timeout=0.5)  # a timeout keeps Ctrl-C responsive
                except concurrent.futures.TimeoutError:
                    continue
        except BaseException:
            if not future.done():
                engine.abort(future.request_id)
            raise

    # ---- the engine: many transcriptions at once ------------------------------------------

    def start_engine(self, *, max_batch: int = 64, max_encode_batch: int = 8, kv_block_size: int = 16,
                     kv_blocks: int = 0, gpu_memory_fraction: float = 0.9, prepare_threads: int = 0) -> None:
        """(Re)starts the engine behind :meth:`submit`, :meth:`atranscribe` and
        :meth:`transcribe_stream` with these limits (it starts with the defaults on first use).

        Args:
            max_batch: most 30 s windows decoded together (the decoder batch). Default 64.
            max_encode_batch: most windows admitted (encoded) per engine step. Default 8.
            kv_block_size: token positions per KV-cache block. Default 16.
            kv_blocks: KV-cache blocks; 0 = enough for `max_batch` windows of full length.
                Fewer bound memory: windows then wait, or restart when preempted (same results).
                On a GPU, 0 sizes the pool from memory instead (see `gpu_memory_fraction`).
            gpu_memory_fraction: on a GPU with kv_blocks=0, the KV pool takes what keeps this
                process within this share of the device's memory after a warm-up (capped at
                `max_batch` windows of full length). Default 0.9. Too little room raises
                OutOfMemoryError.
            prepare_threads: threads preparing submitted recordings (audio conversion, VAD,
                log-mel) while the engine decodes; 0 = a quarter of the CPU's threads, 1 to 4.

        A running engine is shut down first, cancelling its unfinished requests.
        """
        opts = dict(max_batch=max_batch, max_encode_batch=max_encode_batch, kv_block_size=kv_block_size,
                    kv_blocks=kv_blocks, prepare_threads=prepare_threads)
        for k, v in opts.items():
            low = 0 if k in ("kv_blocks", "prepare_threads") else 1
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < low:
                raise InvalidArgumentError(f"{k} must be an integer >= {low}, got {v!r}")
        if isinstance(gpu_memory_fraction, bool) or not isinstance(gpu_memory_fraction, numbers.Real) or \
                not 0.0 < float(gpu_memory_fraction) <= 1.0:
            raise InvalidArgumentError(f"gpu_memory_fraction must be a number in (0, 1], got {gpu_memory_fraction!r}")
        with self._engine_lock:
            old, self._engine = self._engine, None
            if old is not None:
                old.shutdown(True)
            self._engine_options = {k: int(v) for k, v in opts.items()}
            self._engine_options["gpu_memory_fraction"] = float(gpu_memory_fraction)
            self._engine = _native_engine_class()(self._native, **self._engine_options)
            self._engine_max_batch = self._engine_options["max_batch"]
            _track(self)

    def _get_engine(self, max_batch: Optional[int] = None) -> Any:
        """The running engine, started if needed: with the options of :meth:`start_engine`, or
        (never called) the defaults and `max_batch` when given (its max_batch is then kept in
        ``_engine_max_batch``)."""
        with self._engine_lock:
            if self._engine is None:
                opts = dict(self._engine_options)
                if not opts and max_batch is not None:
                    opts["max_batch"] = max_batch
                self._engine = _native_engine_class()(self._native, **opts)
                self._engine_max_batch = opts.get("max_batch", DEFAULT_BATCH_SIZE)
                _track(self)
            return self._engine

    def submit(self, audio: AudioInput, *, sample_rate: Optional[int] = None, priority: int = 0,
               on_segment: Optional[Callable[[Segment], None]] = None,
               **options: Any) -> "concurrent.futures.Future[Transcription]":
        """Queues a transcription on the engine and returns at once.

        Many submissions (from any number of threads) are decoded together with continuous
        batching; each result equals :meth:`transcribe` of that audio alone.

        Args:
            audio, sample_rate, **options: as :meth:`transcribe`, same defaults
                (``beam_size=5``, ``temperature=[0.0, 0.2, ..., 1.0]``; options are checked
                and the audio is read here, so those errors raise immediately).
            priority: higher runs first; equal priorities are served in submission order. Default 0.
            on_segment: called with each :class:`Segment` as soon as it is decoded (on the
                engine's thread; keep it short). Default None.

        Returns:
            a :class:`concurrent.futures.Future` resolving to the :class:`Transcription`, or to
            the typed error (e.g. :class:`AudioError`); ``cancel()`` on it (or :meth:`abort`)
            aborts the request, which then fails with :class:`speechcore.CancelledError`.
        """
        native_options = _transcribe_options(**options).to_native()
        if isinstance(priority, bool) or not isinstance(priority, numbers.Integral):
            raise InvalidArgumentError(f"priority must be an integer, got {priority!r}")
        samples, rate = load_audio(audio, sample_rate)
        engine = self._get_engine()
        return self._submit_loaded(engine, samples, rate, native_options, int(priority), on_segment)

    @staticmethod
    def _submit_loaded(engine: Any, samples: np.ndarray, rate: int, native_options: Dict[str, Any], priority: int,
                       on_segment: Optional[Callable[[Segment], None]]) -> "_EngineFuture":
        """Queues decoded audio on `engine` (options already checked); the Future of submit()."""
        future = _EngineFuture(engine)

        def done(d: Dict[str, Any]) -> None:
            if not future.done():
                future.set_result(Transcription.from_native(d))

        def failed(e: BaseException) -> None:
            if not future.done():
                future.set_exception(e)

        seg = None
        if on_segment is not None:
            seg = lambda d: on_segment(Segment.from_native(d))  # noqa: E731
        future.set_running_or_notify_cancel()
        future.request_id = engine.submit(samples, rate, native_options, done, failed, seg, priority)
        return future

    def abort(self, future: "concurrent.futures.Future[Transcription]") -> bool:
        """Aborts a request made by :meth:`submit`; False when it already finished."""
        rid = getattr(future, "request_id", None)
        engine = self._engine
        return bool(rid is not None and engine is not None and engine.abort(rid))

    async def atranscribe(self, audio: AudioInput, **kwargs: Any) -> Transcription:
        """``await model.atranscribe(audio, **options)``: :meth:`submit` for asyncio (the options
        and defaults of :meth:`transcribe`); cancelling the awaiting task aborts the request."""
        future = self.submit(audio, **kwargs)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            self.abort(future)
            raise

    def transcribe_stream(self, audio: AudioInput, **kwargs: Any) -> Iterator[Segment]:
        """Yields the segments of a transcription as they are decoded (through the engine);
        `kwargs` are :meth:`submit`'s (the options and defaults of :meth:`transcribe`).

        Errors raise from the iteration; closing the iterator early aborts the request.
        """
        q: "queue.Queue[Any]" = queue.Queue()
        end = object()
        future = self.submit(audio, on_segment=q.put, **kwargs)
        future.add_done_callback(lambda _: q.put(end))
        finished = False
        try:
            while True:
                item = q.get()
                if item is end:
                    break
                yield item
            finished = True
            future.result()  # raise the request's error, if any
        finally:
            if not finished:
                self.abort(future)

    def engine_stats(self) -> Dict[str, Any]:
        """Engine statistics: queued_requests, active_requests, waiting_windows, running_windows,
        kv_blocks_total/used/free, steps, tokens_generated, tokens_per_second, preemptions,
        requests_finished, requests_failed (zeros before the engine starts)."""
        engine = self._engine
        if engine is None:
            return dict(queued_requests=0, active_requests=0, waiting_windows=0, running_windows=0,
                        kv_blocks_total=0, kv_blocks_used=0, kv_blocks_free=0, steps=0, tokens_generated=0,
                        tokens_per_second=0.0, preemptions=0, requests_finished=0, requests_failed=0)
        return dict(engine.stats())

    def close(self, cancel: bool = True) -> None:
        """Stops the engine (if started): with cancel, unfinished requests fail with
        CancelledError; without, they complete first. The model stays usable."""
        with self._engine_lock:
            engine, self._engine = self._engine, None
        if engine is not None:
            engine.shutdown(bool(cancel))

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close(cancel=True)


# Models whose engine runs, and every native engine still alive (one may outlive its model while
# its requests hold it): stopped (unfinished requests cancelled) before the interpreter
# finalizes, so no engine thread calls back into a half-torn-down Python.
_LIVE_ENGINES: "weakref.WeakSet[Model]" = weakref.WeakSet()
_LIVE_NATIVE_ENGINES: "weakref.WeakSet[Any]" = weakref.WeakSet()


def _track(model: "Model") -> None:
    _LIVE_ENGINES.add(model)
    try:
        _LIVE_NATIVE_ENGINES.add(model._engine)
    except TypeError:  # a test double without weak references
        pass


@atexit.register
def _stop_engines() -> None:
    for model in list(_LIVE_ENGINES):
        try:
            model.close(cancel=True)
        except Exception:  # noqa: BLE001 - best effort at exit
            pass
    for engine in list(_LIVE_NATIVE_ENGINES):
        try:
            engine.shutdown(True)
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


class _EngineFuture(concurrent.futures.Future):
    """A Future whose cancel() aborts the engine request."""

    def __init__(self, engine: Any) -> None:
        super().__init__()
        self._engine = engine
        self.request_id: Optional[int] = None

    def cancel(self) -> bool:
        if self.done():
            return False
        if self.request_id is not None:
            return bool(self._engine.abort(self.request_id))
        return False


def _renamed(error: BaseException, message: str) -> BaseException:
    """`error` with another message, same type (itself when its type cannot be built that way)."""
    try:
        return type(error)(message)
    except Exception:  # noqa: BLE001 - an exception type with another constructor
        return error


def _option_value(cls: Any, name: str, value: Any) -> Any:
    """One option checked (and normalized) as TranscribeOptions checks it."""
    return getattr(cls(**{name: value}), name)


def _transcribe_options(suppress_tokens: Optional[Iterable[int]] = None, **kwargs: Any) -> TranscribeOptions:
    """The checked options of a transcription from :meth:`Model.transcribe`'s keywords
    (shared by transcribe and transcribe_batch); suppress_tokens=None means ``[-1]``."""
    return TranscribeOptions.from_kwargs(
        suppress_tokens=[-1] if suppress_tokens is None else suppress_tokens, **kwargs)


def load(
    model: Union[str, "os.PathLike[str]"] = "tiny.en",
    device: str = "auto",
    compute_type: str = "auto",
    threads: Optional[int] = None,
) -> Model:
    """Loads a speech model.

    Args:
        model: a short name (``"tiny.en"``, ``"base"``; see :func:`speechcore.models.known_models`)
            or a model directory (CTranslate2 layout: model.bin, config.json, tokenizer.json).
            Default ``"tiny.en"``.
        device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"`` or ``"cuda"``. Default "auto".
        compute_type: ``"auto"``, ``"float32"``, ``"float16"`` or ``"bfloat16"``. Default "auto".
        threads: CPU threads; None or 0 uses all cores. Default None.

    Raises:
        InvalidArgumentError: a bad device, compute type or thread count.
        NotFoundError: an unknown name, missing directory, or model package not installed.
        ModelError: missing or damaged model files. UnsupportedError: e.g. CUDA not available.
    """
    return Model(model, device=device, compute_type=compute_type, threads=threads)


__all__ = ["load", "Model", "DEVICES", "COMPUTE_TYPES", "DEFAULT_BATCH_SIZE"]
