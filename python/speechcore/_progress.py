"""The one-line progress display on stderr shared by the CLI (files, audio hours, real-time
factor) and ``Model.transcribe(log_progress=True)``: rewritten in place on a terminal, plain
lines at most every PROGRESS_INTERVAL seconds otherwise."""

from __future__ import annotations

import math
import shutil
import time
from typing import TextIO

PROGRESS_INTERVAL = 5.0  # seconds between plain (non-terminal) progress lines


def isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def duration_text(seconds: float) -> str:
    """``12.3 s`` under a minute, else ``H:MM:SS``."""
    seconds = max(0.0, seconds)
    if seconds < 59.95:
        return f"{seconds:.1f} s"
    s = int(seconds + 0.5)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class ProgressLine:
    """The progress line on stderr: rewritten in place (``\\r``) on a terminal, plain lines
    otherwise, nothing when disabled. Other stderr/stdout text goes through :meth:`message`
    / :meth:`clear` so that it never lands in the middle of the line."""

    def __init__(self, stream: TextIO, enabled: bool):
        self.stream = stream
        self.enabled = enabled
        self.tty = enabled and isatty(stream)
        self._shown = 0  # characters of the line now on the terminal
        self._line = ""
        self._last = -math.inf  # when a plain line was last written

    def show(self, line: str, force: bool = False) -> None:
        """Shows the line: always on a terminal; as a plain line at most every
        PROGRESS_INTERVAL seconds (or when forced: the first and the last)."""
        if not self.enabled:
            return
        self._line = line
        if not self.tty:
            now = time.monotonic()
            if not force and now - self._last < PROGRESS_INTERVAL:
                return
            self._last = now
        if self.tty:
            width = shutil.get_terminal_size().columns - 1
            line = line[:max(width, 20)]
            self.stream.write("\r" + line + " " * max(0, self._shown - len(line)))
            self._shown = len(line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def clear(self) -> None:
        """Erases the terminal line (until the next :meth:`show`)."""
        if self.tty and self._shown:
            self.stream.write("\r" + " " * self._shown + "\r")
            self.stream.flush()
            self._shown = 0

    def close(self) -> None:
        """Leaves the terminal line as it is and moves below it."""
        if self.tty and self._shown:
            self.stream.write("\n")
            self.stream.flush()
            self._shown = 0

    def message(self, text: str) -> None:
        """Prints a line to the progress stream, then puts the progress line back."""
        self.clear()
        print(text, file=self.stream)
        self.stream.flush()
        if self.tty and self._line:
            self.show(self._line)


class AudioProgress:
    """``Model.transcribe(log_progress=True)``: the callback of the native transcribe, called
    after each decoded window with the seconds of audio done and in all (as faster-whisper's
    progress bar, in seconds of audio); :meth:`finish` leaves the last line on the terminal."""

    def __init__(self, stream: TextIO):
        self.line = ProgressLine(stream, True)
        self.start = time.monotonic()
        self.calls = 0

    def __call__(self, done: float, total: float) -> None:
        self.calls += 1
        elapsed = time.monotonic() - self.start
        pct = 100.0 * done / total if total > 0 else 100.0
        text = f"speechcore: {pct:3.0f}% {duration_text(done)} of {duration_text(total)} of audio, " \
               f"{duration_text(elapsed)} elapsed"
        if 0 < done < total and elapsed > 0:
            text += f", {duration_text(elapsed * (total - done) / done)} left"
        self.line.show(text, force=self.calls == 1 or done >= total)

    def finish(self) -> None:
        self.line.close()
