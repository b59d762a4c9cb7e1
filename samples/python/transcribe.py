"""Transcribe files with the embedded default model (Whisper tiny.en) and print segments.

    python samples/python/transcribe.py speech.wav [more.wav ...]
"""

import sys

import speechcore


def main(paths):
    model = speechcore.load("tiny.en")
    for path in paths:
        result = model.transcribe(path)
        print(f"# {path} ({result.duration:.1f} s, {result.language})")
        for seg in result.segments:
            print(f"[{seg.start:7.2f} --> {seg.end:7.2f}] {seg.text.strip()}")


if __name__ == "__main__":
    main(sys.argv[1:])
