"""Command line: ``speechcore transcribe FILE...`` (also ``python -m speechcore``)."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Callable, Dict, List, Optional, Sequence, TextIO

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


def _temperature(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The ``speechcore`` argument parser (exposed for tests and docs)."""
    parser = argparse.ArgumentParser(prog="speechcore", description="Speech recognition with speechcore.")
    from . import __version__

    parser.add_argument("--version", action="version", version=f"speechcore {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    t = sub.add_parser(
        "transcribe", help="transcribe audio files",
        description="Transcribe audio files. Prints each transcript to stdout, or with "
                    "--output-dir/--output-format writes <stem>.<ext> files. Use - to read stdin.")
    t.add_argument("files", nargs="+", metavar="FILE", help="audio files (wav, flac, ogg, mp3, ...)")
    t.add_argument("--model", default="tiny.en", help="short name (tiny.en, base) or model directory (default: tiny.en)")
    t.add_argument("--language", default=None, help="language code or name; default: detect")
    t.add_argument("--task", choices=("transcribe", "translate"), default="transcribe")
    t.add_argument("--output-format", "-f", choices=OUTPUT_FORMATS + ("all",), default=None,
                   help="write files in this format (default when --output-dir is given: all)")
    t.add_argument("--output-dir", "-o", default=None, help="directory for output files (default: .)")
    t.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    t.add_argument("--compute-type", choices=("auto", "float32", "float16", "bfloat16"), default="auto")
    t.add_argument("--threads", type=_non_negative_int, default=0, help="CPU threads (default 0: all cores)")
    t.add_argument("--beam-size", type=_positive_int, default=1, help="beam width (default 1: greedy)")
    t.add_argument("--temperature", type=_temperature, default=0.0, help="sampling temperature (default 0)")
    t.add_argument("--no-condition-on-previous-text", dest="condition_on_previous_text",
                   action="store_false", help="do not prompt each window with the previous text")
    t.add_argument("--without-timestamps", action="store_true", help="decode without timestamp tokens")
    return parser


# ---------------------------------------------------------------------------------------------
# Running


def _stem(path: str) -> str:
    return "stdin" if path == "-" else os.path.splitext(os.path.basename(path))[0]


def _describe(e: BaseException) -> str:
    from .errors import SpeechcoreError

    if isinstance(e, SpeechcoreError):
        return str(e)
    if isinstance(e, OSError) and e.strerror:
        return f"{e.strerror}" + (f": {e.filename}" if e.filename else "")
    return f"{type(e).__name__}: {e}"


def _transcribe_command(args: argparse.Namespace, parser: argparse.ArgumentParser,
                        out: TextIO, err: TextIO) -> int:
    from . import api
    from .errors import InvalidArgumentError, SpeechcoreError
    from .options import TranscribeOptions

    options = dict(language=args.language, task=args.task, beam_size=args.beam_size,
                   temperature=args.temperature, condition_on_previous_text=args.condition_on_previous_text,
                   without_timestamps=args.without_timestamps)
    try:
        TranscribeOptions(**options)  # report bad options before loading the model
    except InvalidArgumentError as e:
        parser.error(str(e))

    write_files = args.output_dir is not None or args.output_format is not None
    formats: List[str] = []
    if write_files:
        fmt = args.output_format or "all"
        formats = list(OUTPUT_FORMATS) if fmt == "all" else [fmt]
        stems: Dict[str, str] = {}
        for f in args.files:
            if _stem(f) in stems:
                parser.error(f"{stems[_stem(f)]} and {f} would both write {_stem(f)}.*; transcribe them separately")
            stems[_stem(f)] = f
        out_dir = args.output_dir or "."
        try:
            os.makedirs(out_dir, exist_ok=True)
        except OSError as e:
            print(f"speechcore: cannot create output directory {out_dir}: {e.strerror or e}", file=err)
            return EXIT_FAILED

    try:
        model = api.load(args.model, device=args.device, compute_type=args.compute_type, threads=args.threads)
    except InvalidArgumentError as e:
        parser.error(str(e))
    except SpeechcoreError as e:
        print(f"speechcore: cannot load model {args.model}: {e}", file=err)
        return EXIT_FAILED

    failed = 0
    for i, path in enumerate(args.files):
        try:
            audio = sys.stdin.buffer.read() if path == "-" else path
            result = model.transcribe(audio, **options)
            if write_files:
                for fmt in formats:
                    target = os.path.join(out_dir, f"{_stem(path)}.{fmt}")
                    with open(target, "w", encoding="utf-8", newline="\n") as f:
                        f.write(FORMATTERS[fmt](result))
            else:
                if len(args.files) > 1:
                    print(("\n" if i else "") + f"==> {path} <==", file=out)
                print(result.text.strip(), file=out)
                out.flush()
        except KeyboardInterrupt:
            raise
        except Exception as e:  # report, then go on with the other files
            failed += 1
            print(f"speechcore: {path}: {_describe(e)}", file=err)
    return EXIT_FAILED if failed else EXIT_OK


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
