"""Command line: ``speechcore transcribe FILE|DIR...`` (also ``python -m speechcore``).

Inputs are decoded on a background thread and submitted to the model's engine (continuous
batching, :meth:`speechcore.Model.submit`), a bounded number of files at a time; each file's
outputs are written as soon as that file finishes, so an interrupted run resumes where it
stopped.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import queue
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, TextIO, Tuple

from ._progress import ProgressLine as _Progress
from ._progress import duration_text as _duration
from ._progress import isatty as _isatty
from .options import DEFAULT_TEMPERATURES
from .results import Transcription

OUTPUT_FORMATS = ("txt", "srt", "vtt", "json", "tsv")

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


# ---------------------------------------------------------------------------------------------
# Output formats (the layouts of openai-whisper's writers)


def format_timestamp(seconds: float, always_include_hours: bool = False, decimal_marker: str = ".") -> str:
    """``[HH:]MM:SS<marker>mmm``, rounded to the millisecond; hours always when asked or >= 1 h.

    Negative times are clamped to 0; NaN or infinity raise ValueError.
    """
    if not math.isfinite(seconds):
        raise ValueError(f"timestamp must be finite, got {seconds}")
    ms = max(0, int(round(seconds * 1000.0)))
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    prefix = f"{hours:02d}:" if always_include_hours or hours > 0 else ""
    return f"{prefix}{minutes:02d}:{secs:02d}{decimal_marker}{ms:03d}"


def _cue_text(text: str) -> str:
    # "-->" inside a cue would end its timing line in SRT/VTT parsers.
    return text.strip().replace("-->", "->")


def to_txt(t: Transcription) -> str:
    """One stripped segment text per line."""
    return "".join(s.text.strip() + "\n" for s in t.segments)


def to_srt(t: Transcription) -> str:
    """SubRip: numbered cues from 1, ``HH:MM:SS,mmm --> HH:MM:SS,mmm``."""
    cues = []
    for i, s in enumerate(t.segments, start=1):
        start = format_timestamp(s.start, always_include_hours=True, decimal_marker=",")
        end = format_timestamp(s.end, always_include_hours=True, decimal_marker=",")
        cues.append(f"{i}\n{start} --> {end}\n{_cue_text(s.text)}\n")
    return "\n".join(cues)


def to_vtt(t: Transcription) -> str:
    """WebVTT: a ``WEBVTT`` header, then ``[HH:]MM:SS.mmm --> [HH:]MM:SS.mmm`` cues."""
    out = ["WEBVTT\n"]
    for s in t.segments:
        out.append(f"{format_timestamp(s.start)} --> {format_timestamp(s.end)}\n{_cue_text(s.text)}\n")
    return "\n".join(out)


def to_tsv(t: Transcription) -> str:
    """``start<TAB>end<TAB>text`` with times in integer milliseconds, after a header line."""
    lines = ["start\tend\ttext\n"]
    for s in t.segments:
        text = s.text.strip().replace("\t", " ").replace("\n", " ")
        lines.append(f"{int(round(1000 * s.start))}\t{int(round(1000 * s.end))}\t{text}\n")
    return "".join(lines)


def to_json(t: Transcription) -> str:
    """``Transcription.to_dict()`` as JSON (UTF-8, not ASCII-escaped)."""
    return json.dumps(t.to_dict(), ensure_ascii=False) + "\n"


FORMATTERS: Dict[str, Callable[[Transcription], str]] = {
    "txt": to_txt, "srt": to_srt, "vtt": to_vtt, "json": to_json, "tsv": to_tsv,
}


# ---------------------------------------------------------------------------------------------
# Inputs: files, directories (searched recursively) and stdin

AUDIO_EXTENSIONS = ("aif", "aifc", "aiff", "au", "caf", "flac", "mp3", "oga", "ogg", "opus", "rf64",
                    "snd", "w64", "wav", "wave")
"""Extensions (any case) of the files taken from a directory: the formats the decoder
(libsndfile through soundfile) reads. Files named on the command line are read whatever
their extension."""

UNDECODABLE_EXTENSIONS = ("aac", "m4a", "mka", "mkv", "mov", "mp4", "webm", "wma")
"""Audio/video containers the decoder cannot read: a directory's files with these extensions
are not transcribed, and the run says how many were left out (convert them first, e.g. with
``ffmpeg -i in.m4a out.flac``)."""

DEFAULT_BATCH_SIZE = 16
"""30 s windows decoded together: the engine's ``max_batch`` (``--batch-size``)."""

IN_FLIGHT_PER_BATCH = 2
"""Files in the engine at once (submitted, not finished): this many times ``--batch-size``,
so that a file is always queued when one finishes; the others wait, decoded at most
``--batch-size`` ahead, or not yet read."""

MAX_IN_FLIGHT_BYTES = 2 << 30
"""Beyond the first file, files are also held back once the decoded samples of those in the
engine pass this many bytes (about 9 hours of 16 kHz mono float32), so that a directory of
long recordings does not exhaust memory."""


@dataclass
class _Input:
    path: str  # as given, or the directory argument joined with the file's relative path; "-" is stdin
    key: str   # output name without extension, relative to the output directory


def _stem(path: str) -> str:
    return "stdin" if path == "-" else os.path.splitext(os.path.basename(path))[0]


def _extension(name: str) -> str:
    return os.path.splitext(name)[1][1:].lower()


def find_audio_files(directory: str) -> Tuple[List[str], Dict[str, int], List[Tuple[str, str]]]:
    """Audio files under `directory`, recursively: ``(relative paths, undecodable, errors)``.

    Files and directories whose names start with ``.`` are skipped, symbolic links to
    directories are not followed, and only files with an extension in
    :data:`AUDIO_EXTENSIONS` are taken. The paths are sorted by their components, so the
    order does not depend on the file system. `undecodable` counts the files left out per
    extension of :data:`UNDECODABLE_EXTENSIONS`; `errors` lists ``(path, message)`` for
    directories that could not be read.
    """
    found: List[str] = []
    undecodable: Dict[str, int] = {}
    errors: List[Tuple[str, str]] = []

    def on_error(e: OSError) -> None:
        errors.append((e.filename or directory, f"cannot read directory: {e.strerror or e}"))

    for root, dirs, files in os.walk(directory, onerror=on_error):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            if name.startswith("."):
                continue
            ext = _extension(name)
            if ext in AUDIO_EXTENSIONS:
                found.append(os.path.relpath(os.path.join(root, name), directory))
            elif ext in UNDECODABLE_EXTENSIONS:
                undecodable[ext] = undecodable.get(ext, 0) + 1
    found.sort(key=lambda rel: rel.split(os.sep))
    return found, undecodable, errors


def _expand_inputs(paths: Sequence[str], err: TextIO) -> Tuple[List[_Input], List[Tuple[str, str]]]:
    """The command line's inputs in order, each directory replaced by its audio files;
    also returns ``(path, error)`` for directories that could not be read."""
    inputs: List[_Input] = []
    errors: List[Tuple[str, str]] = []
    for path in paths:
        if path == "-" or not os.path.isdir(path):
            inputs.append(_Input(path, _stem(path)))
            continue
        found, undecodable, walk_errors = find_audio_files(path)
        errors += walk_errors
        if undecodable:
            kinds = ", ".join(f".{ext}" for ext in sorted(undecodable))
            count = sum(undecodable.values())
            print(f"speechcore: {path}: left out {count} file{'s' if count != 1 else ''} the decoder cannot "
                  f"read ({kinds}); convert them first, e.g. ffmpeg -i in.m4a out.flac", file=err)
        if not found and not walk_errors:
            print(f"speechcore: {path}: no audio files found ({', '.join(AUDIO_EXTENSIONS)})", file=err)
        inputs += [_Input(os.path.join(path, rel), os.path.splitext(rel)[0]) for rel in found]
    return inputs, errors


# ---------------------------------------------------------------------------------------------
# Argument parsing


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _positive_int(text: str) -> int:
    value = _non_negative_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def _temperatures(text: str) -> List[float]:
    """``0`` or a comma-separated list (``0,0.2,0.4``): the temperatures tried in turn."""
    values = []
    for part in text.split(","):
        try:
            value = float(part)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a number or a comma-separated list of numbers, got {text!r}") from None
        if not math.isfinite(value) or value < 0:
            raise argparse.ArgumentTypeError(f"temperatures must be finite numbers >= 0, got {text}")
        values.append(value)
    return values


def build_parser() -> argparse.ArgumentParser:
    """The ``speechcore`` argument parser (exposed for tests and docs)."""
    parser = argparse.ArgumentParser(prog="speechcore", description="Speech recognition with speechcore.")
    from . import __version__

    parser.add_argument("--version", action="version", version=f"speechcore {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    t = sub.add_parser(
        "transcribe", help="transcribe audio files",
        description="Transcribe audio files and directories (searched recursively for "
                    f"{', '.join(AUDIO_EXTENSIONS)} files; hidden ones skipped) on the engine "
                    "(continuous batching, --batch-size windows decoded together). Prints each transcript "
                    "to stdout, or with --output-dir/--output-format writes <stem>.<ext> files as each "
                    "input finishes (a directory's sub-directories mirrored), skipping inputs whose "
                    "outputs exist unless --overwrite. Use - to read stdin. Exit status: 0 ok, "
                    "1 a file failed, 2 usage error, 130 interrupted (finished files are kept).")
    t.add_argument("files", nargs="+", metavar="FILE",
                   help="audio files (wav, flac, ogg, mp3, ...) or directories of them")
    t.add_argument("--model", default="tiny.en", help="short name (tiny.en, base) or model directory (default: tiny.en)")
    t.add_argument("--language", default=None, help="language code or name; default: detect")
    t.add_argument("--task", choices=("transcribe", "translate"), default="transcribe")
    t.add_argument("--output-format", "-f", choices=OUTPUT_FORMATS + ("all",), default=None,
                   help="write files in this format (default when --output-dir is given: all)")
    t.add_argument("--output-dir", "-o", default=None, help="directory for output files (default: .)")
    t.add_argument("--overwrite", action="store_true",
                   help="transcribe inputs again even when all their output files exist (default: skip them)")
    t.add_argument("--batch-size", "-b", type=_positive_int, default=DEFAULT_BATCH_SIZE,
                   help=f"30 s windows decoded together, the engine's max_batch; up to twice as many files "
                        f"are in the engine at once (default {DEFAULT_BATCH_SIZE})")
    t.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="show progress on stderr (default: when stderr is a terminal)")
    t.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    t.add_argument("--compute-type", choices=("auto", "float32", "float16", "bfloat16"), default="auto")
    t.add_argument("--threads", type=_non_negative_int, default=0, help="CPU threads (default 0: all cores)")
    t.add_argument("--beam-size", type=_positive_int, default=5,
                   help="beam width at temperature 0; 1 is greedy (default 5, faster-whisper's)")
    t.add_argument("--best-of", type=_positive_int, default=5,
                   help="candidates sampled at a temperature above 0, the best kept (default 5)")
    t.add_argument("--patience", type=_positive_float, default=1.0,
                   help="beam search stops after round(beam_size * patience) finished hypotheses (default 1)")
    t.add_argument("--temperature", type=_temperatures, default=list(DEFAULT_TEMPERATURES), metavar="T[,T...]",
                   help="temperatures tried in turn for a 30 s window that fails the compression-ratio or "
                        "log-probability check; 0 decodes deterministically, above 0 samples "
                        f"(default {','.join(f'{t:g}' for t in DEFAULT_TEMPERATURES)}; 0 for no fallback)")
    t.add_argument("--no-condition-on-previous-text", dest="condition_on_previous_text",
                   action="store_false", help="do not prompt each window with the previous text")
    t.add_argument("--without-timestamps", action="store_true", help="decode without timestamp tokens")
    t.add_argument("--multilingual", action="store_true",
                   help="detect the language of every 30 s window (audio that switches languages; CPU only)")
    t.add_argument("--chunk-length", "--chunk_length", dest="chunk_length", type=int, default=None, metavar="S",
                   help="seconds of audio per window, 1..30 (default 30)")
    t.add_argument("--word-timestamps", "--word_timestamps", dest="word_timestamps", action="store_true",
                   help="word-level timestamps (in the json output's segments' words; CPU only)")
    return parser


# ---------------------------------------------------------------------------------------------
# Running


def _describe(e: BaseException) -> str:
    from .errors import SpeechcoreError

    if isinstance(e, SpeechcoreError):
        return str(e)
    if isinstance(e, OSError) and e.strerror:
        return f"{e.strerror}" + (f": {e.filename}" if e.filename else "")
    return f"{type(e).__name__}: {e}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


class _Stats:
    def __init__(self, total: int, skipped: int):
        self.total = total  # inputs to transcribe (not skipped)
        self.skipped = skipped
        self.transcribed = 0
        self.failures: List[Tuple[str, str]] = []
        self._failure_index: List[int] = []  # input index of each failure (-1: before any input)
        self.audio_seconds = 0.0
        self.start = time.monotonic()

    def fail(self, path: str, error: str, index: int = -1) -> None:
        self.failures.append((path, error))
        self._failure_index.append(index)

    def failures_in_order(self) -> List[Tuple[str, str]]:
        """The failures in input order (files finish in any order on the engine)."""
        order = self._failure_index + [-1] * (len(self.failures) - len(self._failure_index))
        return [f for _, _, f in sorted(zip(order, range(len(order)), self.failures))]

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def rtfx(self) -> float:
        return self.audio_seconds / max(self.elapsed, 1e-9)

    def progress_line(self) -> str:
        done = self.transcribed + len(self.failures)
        failed = f" ({len(self.failures)} failed)" if self.failures else ""
        return (f"speechcore: {done}/{self.total} files{failed}, {_duration(self.audio_seconds)} of audio, "
                f"{_duration(self.elapsed)} elapsed, RTFx {self.rtfx():.1f}")

    def summary(self, write_files: bool) -> str:
        skipped = ""
        if write_files:
            skipped = f", {self.skipped} skipped" + (" (outputs exist; --overwrite redoes them)" if self.skipped else "")
        return (f"speechcore: {_plural(self.transcribed, 'file')} transcribed{skipped}, "
                f"{len(self.failures)} failed; {_duration(self.audio_seconds)} of audio in {_duration(self.elapsed)}, "
                f"RTFx {self.rtfx():.1f}")


class _Reader:
    """Decodes the inputs in order on a background thread, at most `ahead` files ahead of
    the consumer, so that decoding overlaps transcription (the engine runs on its own thread).
    :meth:`get` returns ``(index, input, samples, rate, error)`` (samples and rate, or the
    error), :data:`END` after the last input, or None when nothing is ready yet; `wake` is set
    whenever an entry becomes ready."""

    END = object()

    def __init__(self, inputs: Sequence[_Input], ahead: int, wake: threading.Event):
        self._inputs = list(inputs)
        self._queue: "queue.Queue[Any]" = queue.Queue(maxsize=max(1, ahead))
        self._wake = wake
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="speechcore-audio-reader", daemon=True)
        self._thread.start()

    def _put(self, entry: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(entry, timeout=0.1)
                self._wake.set()
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        from .audio import load_audio

        for index, item in enumerate(self._inputs):
            if self._stop.is_set():
                return
            entry: Tuple[int, _Input, Any, int, Optional[BaseException]]
            try:
                samples, rate = load_audio(sys.stdin.buffer.read() if item.path == "-" else item.path)
                entry = (index, item, samples, rate, None)
            except Exception as e:  # reported by the consumer, in input order
                entry = (index, item, None, 0, e)
            if not self._put(entry):
                return
        self._put(self.END)

    def get(self) -> Any:
        try:
            return self._queue.get_nowait()
        except queue.Empty:
            return None

    def close(self) -> None:
        self._stop.set()


def _output_path(out_dir: str, key: str, fmt: str) -> str:
    return os.path.join(out_dir, f"{key}.{fmt}")


def _write_atomically(path: str, text: str) -> None:
    """Writes through a temporary file renamed over `path`, so that an interrupted run never
    leaves a partial output that a resumed run would take as done."""
    directory, name = os.path.split(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


@dataclass
class _Job:
    """A file in the engine."""
    index: int
    item: _Input
    seconds: float
    nbytes: int


def _transcribe_command(args: argparse.Namespace, parser: argparse.ArgumentParser,
                        out: TextIO, err: TextIO) -> int:
    from . import api
    from .errors import InvalidArgumentError, SpeechcoreError
    from .options import TranscribeOptions

    options = dict(language=args.language, task=args.task, beam_size=args.beam_size, best_of=args.best_of,
                   patience=args.patience, temperature=args.temperature,
                   condition_on_previous_text=args.condition_on_previous_text,
                   without_timestamps=args.without_timestamps)
    if args.word_timestamps:
        options["word_timestamps"] = True
    if args.multilingual:
        options["multilingual"] = True
    if args.chunk_length is not None:
        options["chunk_length"] = args.chunk_length
    try:
        TranscribeOptions(**options)  # report bad options before loading the model
    except InvalidArgumentError as e:
        parser.error(str(e))

    inputs, walk_errors = _expand_inputs(args.files, err)
    given = len(inputs) + len(walk_errors)
    write_files = args.output_dir is not None or args.output_format is not None
    formats: List[str] = []
    out_dir = args.output_dir or "."
    skipped = 0
    if write_files:
        fmt = args.output_format or "all"
        formats = list(OUTPUT_FORMATS) if fmt == "all" else [fmt]
        owners: Dict[str, str] = {}
        for item in inputs:
            name = os.path.normcase(os.path.normpath(item.key))
            if name in owners:
                parser.error(f"{owners[name]} and {item.path} would both write {item.key}.*; "
                             "transcribe them separately")
            owners[name] = item.path
        if not args.overwrite:
            todo = [item for item in inputs if item.path == "-" or not all(
                os.path.exists(_output_path(out_dir, item.key, f)) for f in formats)]
            skipped = len(inputs) - len(todo)
            inputs = todo
        try:
            os.makedirs(out_dir, exist_ok=True)
        except OSError as e:
            print(f"speechcore: cannot create output directory {out_dir}: {e.strerror or e}", file=err)
            return EXIT_FAILED

    progress = _Progress(err, _isatty(err) if args.progress is None else args.progress)
    report = progress.enabled or given > 1 or skipped > 0  # the summary at the end
    stats = _Stats(len(inputs), skipped)

    def fail(path: str, error: str, index: int = -1) -> None:
        stats.fail(path, error, index)
        progress.message(f"speechcore: {path}: {error}")

    for path, error in walk_errors:
        fail(path, error)

    model = None
    if inputs:
        try:
            model = api.load(args.model, device=args.device, compute_type=args.compute_type, threads=args.threads)
            model.start_engine(max_batch=args.batch_size)
        except InvalidArgumentError as e:
            parser.error(str(e))
        except SpeechcoreError as e:
            print(f"speechcore: cannot load model {args.model}: {e}", file=err)
            return EXIT_FAILED

    # Standard output gets the transcripts in input order: a result waits in `ready` until
    # every earlier input is printed or has failed. Files are written as each one finishes.
    ready: Dict[int, Tuple[_Input, Optional[Transcription]]] = {}
    next_print = [0]
    printed = [False]

    def print_ready() -> None:
        while next_print[0] in ready:
            item, result = ready.pop(next_print[0])
            next_print[0] += 1
            if result is None:
                continue  # failed
            progress.clear()
            if len(inputs) > 1:
                print(("\n" if printed[0] else "") + f"==> {item.path} <==", file=out)
            print(result.text.strip(), file=out)
            out.flush()
            printed[0] = True

    def settle(index: int, item: _Input, result: Optional[Transcription]) -> None:
        if not write_files:
            ready[index] = (item, result)
            print_ready()

    def emit(job: _Job, result: Transcription) -> None:
        """Writes (or prints) one file's transcript as soon as it is known."""
        if write_files:
            try:
                for f in formats:
                    _write_atomically(_output_path(out_dir, job.item.key, f), FORMATTERS[f](result))
            except OSError as e:
                fail(job.item.path, f"cannot write output: {_describe(e)}", job.index)
                return
        stats.transcribed += 1
        stats.audio_seconds += job.seconds
        settle(job.index, job.item, result)

    # The engine holds at most IN_FLIGHT_PER_BATCH * --batch-size files (and, beyond the first,
    # MAX_IN_FLIGHT_BYTES of their samples); finished ones are written from this thread.
    wake = threading.Event()
    finished: "queue.Queue[Any]" = queue.Queue()
    pending: Dict[Any, _Job] = {}
    in_flight_bytes = [0]
    max_in_flight = IN_FLIGHT_PER_BATCH * args.batch_size

    def on_finished(future: Any) -> None:
        finished.put(future)
        wake.set()

    def complete(future: Any) -> None:
        job = pending.pop(future)
        in_flight_bytes[0] -= job.nbytes
        error = future.exception()
        if isinstance(error, KeyboardInterrupt):  # (raised inside a callback of a test double)
            raise KeyboardInterrupt
        if error is not None:
            fail(job.item.path, _describe(error), job.index)
            settle(job.index, job.item, None)
        else:
            emit(job, future.result())
        progress.show(stats.progress_line())

    def room() -> bool:
        return len(pending) < max_in_flight and (not pending or in_flight_bytes[0] < MAX_IN_FLIGHT_BYTES)

    reader: Optional[_Reader] = None
    try:
        if inputs:
            assert model is not None
            stats.start = time.monotonic()
            progress.show(stats.progress_line(), force=True)
            reader = _Reader(inputs, ahead=args.batch_size, wake=wake)
            reader_done = False
            while True:
                wake.clear()
                progressed = False
                while True:  # write what finished
                    try:
                        future = finished.get_nowait()
                    except queue.Empty:
                        break
                    complete(future)
                    progressed = True
                while not reader_done and room():  # submit what was decoded
                    entry = reader.get()
                    if entry is None:
                        break
                    progressed = True
                    if entry is _Reader.END:
                        reader_done = True
                        break
                    index, item, samples, rate, problem = entry
                    if problem is None:
                        try:
                            future = model.submit(samples, sample_rate=rate, **options)
                        except SpeechcoreError as e:
                            problem = e
                    if problem is not None:
                        fail(item.path, _describe(problem), index)
                        settle(index, item, None)
                        progress.show(stats.progress_line())
                        continue
                    pending[future] = _Job(index, item, samples.shape[0] / rate, samples.nbytes)
                    in_flight_bytes[0] += samples.nbytes
                    future.add_done_callback(on_finished)
                if reader_done and not pending:
                    break
                if not progressed:
                    wake.wait(0.5)
            if not progress.tty:
                progress.show(stats.progress_line(), force=True)  # the last figures (a terminal has them)
    except KeyboardInterrupt:
        # Abort what is still running and stop the engine (every request is settled then), write
        # every file that did finish, then stop.
        for future in list(pending):
            future.cancel()
        if model is not None:
            model.close(cancel=True)
        for future, job in list(pending.items()):
            if future.done() and not future.cancelled() and future.exception() is None:
                del pending[future]
                emit(job, future.result())
        if not write_files:
            for index in sorted(ready):
                next_print[0] = index
                print_ready()
        progress.clear()
        if write_files and stats.transcribed:
            print(f"speechcore: {_plural(stats.transcribed, 'file')} written before the interruption; "
                  "run the same command again to go on with the rest", file=err)
        raise
    finally:
        if reader is not None:
            reader.close()
        if model is not None:
            model.close(cancel=True)  # nothing is left on a normal end; on an interruption, aborts the rest

    progress.clear()
    if report:
        print(stats.summary(write_files), file=err)
        if stats.failures:
            print(f"speechcore: failed ({len(stats.failures)}):", file=err)
            for path, error in stats.failures_in_order():
                print(f"  {path}: {error}", file=err)
    return EXIT_FAILED if stats.failures else EXIT_OK


def main(argv: Optional[Sequence[str]] = None, out: Optional[TextIO] = None, err: Optional[TextIO] = None) -> int:
    """Runs the command line; returns the exit status (0 ok, 1 a file failed, 2 usage, 130 interrupted)."""
    out = out or sys.stdout
    err = err or sys.stderr
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command == "transcribe":
            return _transcribe_command(args, parser, out, err)
        parser.error(f"unknown command {args.command!r}")  # unreachable: argparse checks choices
    except SystemExit as e:  # argparse: --help (0) and usage errors (2)
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    except KeyboardInterrupt:
        print("speechcore: interrupted", file=err)
        return EXIT_INTERRUPTED
    return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
