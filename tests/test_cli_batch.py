"""CLI batch transcription: directory inputs, mirrored outputs, resuming, batches and their
fallback, progress and summary output, exit statuses. The native model is the fake of
test_cli.py except in the last test, which runs the real tiny.en on real speech."""

from __future__ import annotations

import io
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechcore import cli
from speechcore.cli import find_audio_files
from test_cli import SR, FakeNativeModel, install_fake, run

PROGRESS = re.compile(r"speechcore: (\d+)/(\d+) files( \(\d+ failed\))?, [0-9.:]+( s)? of audio, "
                      r"[0-9.:]+( s)? elapsed, RTFx \d+\.\d$")


@pytest.fixture
def fake(monkeypatch):
    return install_fake(monkeypatch)


def wav(path, seconds=1.0, rate=SR):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.zeros(int(seconds * rate), np.float32), rate)
    return str(path)


def tree(root):
    """Relative paths of every file under `root`, sorted."""
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


class TTY(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture
def corpus(tmp_path):
    """in/ with audio at several depths, hidden entries, other files; two seconds each except y."""
    d = tmp_path / "in"
    wav(d / "b.wav", 2.0)
    wav(d / "a" / "x.wav", 2.0)
    wav(d / "a" / "deep" / "y.flac", 1.0, 8000)
    wav(d / "c.WAV", 2.0)
    wav(d / ".hidden" / "h.wav")
    wav(d / ".h.wav")
    (d / "notes.txt").write_text("not audio")
    (d / "v.m4a").write_bytes(b"\0" * 64)
    return d


# ---------------------------------------------------------------------------------------------
# Inputs and output paths


def test_find_audio_files(corpus):
    found, undecodable, errors = find_audio_files(str(corpus))
    assert found == [os.path.join("a", "deep", "y.flac"), os.path.join("a", "x.wav"), "b.wav", "c.WAV"]
    assert undecodable == {"m4a": 1} and errors == []


def test_directory_recursion_mirrors_sub_directories(fake, corpus, tmp_path, capsys):
    z = wav(tmp_path / "other" / "z.wav", 3.0)
    out = tmp_path / "out"
    code, stdout, err = run(["transcribe", str(corpus), z, "-o", str(out), "-f", "txt"], capsys)
    assert code == 0 and stdout == ""
    assert tree(out) == [os.path.join("a", "deep", "y.txt"), os.path.join("a", "x.txt"), "b.txt", "c.txt", "z.txt"]
    assert (out / "a" / "deep" / "y.txt").read_text() == "1.0 seconds.\n"
    assert (out / "z.txt").read_text() == "3.0 seconds.\n"
    # one batch, in sorted order, the directory's files first, then the file after it
    (m,) = fake.instances
    assert m.batch_calls == [([(8000,), (2 * SR,), (2 * SR,), (2 * SR,), (3 * SR,)], [8000, SR, SR, SR, SR], 16)]
    assert "left out 1 file the decoder cannot read (.m4a)" in err
    assert "speechcore: 5 files transcribed, 0 skipped, 0 failed; 10.0 s of audio in " in err


def test_directory_to_stdout_names_each_file(fake, corpus, capsys):
    code, out, _ = run(["transcribe", str(corpus / "a")], capsys)
    assert code == 0
    assert out == (f"==> {os.path.join(str(corpus / 'a'), 'deep', 'y.flac')} <==\n1.0 seconds.\n\n"
                   f"==> {os.path.join(str(corpus / 'a'), 'x.wav')} <==\n2.0 seconds.\n")


def test_empty_directory_is_a_warning(fake, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, out, err = run(["transcribe", str(tmp_path / "empty"), "-o", str(tmp_path / "out")], capsys)
    assert code == 0 and out == "" and "no audio files found" in err
    assert fake.instances == []  # nothing to do: the model is not even loaded


def test_unreadable_directory_fails_the_run(fake, corpus, tmp_path, monkeypatch, capsys):
    real_walk = os.walk

    def walk(top, onerror=None, **kw):
        onerror(PermissionError(13, "Permission denied", os.path.join(top, "locked")))
        yield from real_walk(top, onerror=onerror, **kw)

    monkeypatch.setattr(os, "walk", walk)
    code, _, err = run(["transcribe", str(corpus), "-o", str(tmp_path / "out")], capsys)
    assert code == 1
    assert "locked: cannot read directory: Permission denied" in err
    assert "4 files transcribed, 0 skipped, 1 failed" in err


@pytest.mark.parametrize("layout", ["same stem in one directory", "file and directory", "two directories"])
def test_colliding_outputs_are_usage_errors(fake, tmp_path, capsys, layout):
    if layout == "same stem in one directory":
        wav(tmp_path / "in" / "s" / "x.wav")
        wav(tmp_path / "in" / "s" / "x.flac")
        argv, clash = [str(tmp_path / "in")], os.path.join("s", "x") + ".*"
    elif layout == "file and directory":
        argv, clash = [wav(tmp_path / "x.wav"), str(tmp_path / "in")], "x.*"
        wav(tmp_path / "in" / "x.wav")
    else:
        wav(tmp_path / "in1" / "s" / "x.wav")
        wav(tmp_path / "in2" / "s" / "x.wav")
        argv, clash = [str(tmp_path / "in1"), str(tmp_path / "in2")], os.path.join("s", "x") + ".*"
    code, _, err = run(["transcribe", *argv, "-o", str(tmp_path / "out")], capsys)
    assert code == 2 and f"would both write {clash}" in err and fake.instances == []


# ---------------------------------------------------------------------------------------------
# Resuming


def test_resume_skips_finished_inputs_and_overwrite_redoes_them(fake, corpus, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["transcribe", str(corpus), "-o", str(out)]
    assert run(argv, capsys)[0] == 0
    assert len(tree(out)) == 4 * 5 and not any(name.endswith(".tmp") for name in tree(out))

    code, _, err = run(argv, capsys)  # everything done: nothing loaded, nothing transcribed
    assert code == 0 and len(fake.instances) == 1
    assert "0 files transcribed, 4 skipped (outputs exist; --overwrite redoes them), 0 failed" in err

    (out / "a" / "x.srt").unlink()  # an input is done only when every requested format exists
    (out / "b.txt").write_text("edited\n")
    code, _, err = run(argv, capsys)
    assert code == 0 and "1 file transcribed, 3 skipped" in err
    assert fake.instances[-1].batch_calls[0][0] == [(2 * SR,)]
    assert (out / "a" / "x.srt").exists() and (out / "b.txt").read_text() == "edited\n"

    code, _, err = run(argv + ["-f", "txt"], capsys)  # only the txt files are asked for: all there
    assert code == 0 and "4 skipped" in err

    code, _, err = run(argv + ["--overwrite"], capsys)
    assert code == 0 and "4 files transcribed, 0 skipped, 0 failed" in err
    assert (out / "b.txt").read_text() == "2.0 seconds.\n"


def test_outputs_are_written_batch_by_batch(fake, tmp_path, monkeypatch, capsys):
    files = [wav(tmp_path / "in" / f"f{i}.wav") for i in range(5)]
    calls, original = [], FakeNativeModel.transcribe_batch

    def interrupt_second_batch(self, audios, rates, options, max_batch):
        calls.append(len(audios))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return [self.transcribe(a, r, options) for a, r in zip(audios, rates)]

    monkeypatch.setattr(FakeNativeModel, "transcribe_batch", interrupt_second_batch)
    out = tmp_path / "out"
    code, _, err = run(["transcribe", *files, "-o", str(out), "-f", "txt", "--batch-size", "2"], capsys)
    assert code == 130 and calls == [2, 2]
    assert tree(out) == ["f0.txt", "f1.txt"]
    assert err == ("speechcore: 2 files written before the interruption; run the same command again to go on "
                   "with the rest\nspeechcore: interrupted\n")
    monkeypatch.setattr(FakeNativeModel, "transcribe_batch", original)  # (undo() would drop the fake too)
    code, _, err = run(["transcribe", *files, "-o", str(out), "-f", "txt", "--batch-size", "2"], capsys)
    assert code == 0 and "3 files transcribed, 2 skipped" in err and len(tree(out)) == 5
    assert [len(shapes) for shapes, _, _ in fake.instances[-1].batch_calls] == [2, 1]


# ---------------------------------------------------------------------------------------------
# Batches, bad files and the one-at-a-time fallback


def test_batches_of_batch_size(fake, tmp_path, capsys):
    files = [wav(tmp_path / f"f{i}.wav", 1.0 + i) for i in range(5)]
    code, out, _ = run(["transcribe", *files, "--batch-size", "2"], capsys)
    assert code == 0 and [line for line in out.splitlines() if "seconds" in line] == [
        "1.0 seconds.", "2.0 seconds.", "3.0 seconds.", "4.0 seconds.", "5.0 seconds."]
    (m,) = fake.instances
    assert [len(shapes) for shapes, _, _ in m.batch_calls] == [2, 2, 1]
    assert {max_batch for _, _, max_batch in m.batch_calls} == {2}


def test_bad_file_in_a_batch_is_reported_and_the_others_written(fake, tmp_path, capsys):
    files = [wav(tmp_path / "a.wav"), str(tmp_path / "junk.wav"), wav(tmp_path / "b.wav", 2.0),
             str(tmp_path / "missing.wav"), wav(tmp_path / "c.wav", 3.0)]
    (tmp_path / "junk.wav").write_text("not audio\n" * 20)
    out = tmp_path / "out"
    code, _, err = run(["transcribe", *files, "-o", str(out), "-f", "txt", "--batch-size", "5"], capsys)
    assert code == 1
    assert tree(out) == ["a.txt", "b.txt", "c.txt"]
    (m,) = fake.instances
    assert m.batch_calls == [([(SR,), (2 * SR,), (3 * SR,)], [SR] * 3, 5)]  # the good ones, one batch
    assert "3 files transcribed, 0 skipped, 2 failed; 6.0 s of audio" in err
    failed = err[err.index("speechcore: failed (2):"):].splitlines()
    assert failed[1].startswith(f"  {files[1]}: cannot decode audio")
    assert failed[2] == f"  {files[3]}: audio file not found: {files[3]}"


def test_failed_batch_falls_back_to_one_at_a_time(fake, tmp_path, capsys):
    files = [wav(tmp_path / "a.wav"), wav(tmp_path / "bad.wav", 1.0, 8000), wav(tmp_path / "c.wav", 2.0)]
    fake.fail_on_rate = 8000  # the native batch fails as a whole because of one recording
    out = tmp_path / "out"
    code, _, err = run(["transcribe", *files, "-o", str(out), "-f", "txt"], capsys)
    assert code == 1
    assert tree(out) == ["a.txt", "c.txt"] and (out / "c.txt").read_text() == "2.0 seconds.\n"
    assert "a batch of 3 files failed (RuntimeError: cannot transcribe audio at 8000 Hz); " \
           "transcribing them one at a time" in err
    assert f"  {files[1]}: RuntimeError: cannot transcribe audio at 8000 Hz" in err
    assert "2 files transcribed, 0 skipped, 1 failed" in err

    fake.fail_on_rate = -1
    fake.batch_error = MemoryError("batch too large")  # every batch fails, every file alone works
    code, _, err = run(["transcribe", *files, "-o", str(out), "-f", "txt", "--overwrite"], capsys)
    assert code == 0 and tree(out) == ["a.txt", "bad.txt", "c.txt"]
    assert "3 files transcribed, 0 skipped, 0 failed" in err


def test_failed_batch_of_one_is_not_retried(fake, tmp_path, capsys):
    f = wav(tmp_path / "a.wav")
    fake.batch_error = RuntimeError("boom")
    code, _, err = run(["transcribe", f, "-o", str(tmp_path / "out")], capsys)
    assert code == 1 and err == f"speechcore: {f}: RuntimeError: boom\n"
    assert fake.instances[0].calls == []


def test_stdin_among_files(fake, tmp_path, monkeypatch, capsys):
    buf = io.BytesIO()
    sf.write(buf, np.zeros(SR * 3, np.float32), SR, format="WAV")
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(buf.getvalue())))
    out = tmp_path / "out"
    code, _, _ = run(["transcribe", wav(tmp_path / "a.wav"), "-", "-o", str(out), "-f", "txt"], capsys)
    assert code == 0 and (out / "stdin.txt").read_text() == "3.0 seconds.\n"
    # stdin is a stream: never skipped as done
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(buf.getvalue())))
    code, _, err = run(["transcribe", str(tmp_path / "a.wav"), "-", "-o", str(out), "-f", "txt"], capsys)
    assert code == 0 and "1 file transcribed, 1 skipped" in err


# ---------------------------------------------------------------------------------------------
# Progress and summary


def test_progress_lines(fake, tmp_path, capsys):
    files = [wav(tmp_path / f"f{i}.wav") for i in range(3)] + [str(tmp_path / "missing.wav")]
    code, _, err = run(["transcribe", *files, "-o", str(tmp_path / "out"), "--progress", "-b", "2"], capsys)
    assert code == 1
    lines = err.splitlines()
    progress = [m for m in map(PROGRESS.match, lines) if m]
    # at the start, after each batch, after the failure
    assert [(int(m[1]), int(m[2])) for m in progress] == [(0, 4), (2, 4), (3, 4), (4, 4)]
    assert progress[-1][3] == " (1 failed)"
    assert lines[-3].startswith("speechcore: 3 files transcribed, 0 skipped, 1 failed; 3.0 s of audio in ")
    assert "\r" not in err  # not a terminal: plain lines

    code, _, err = run(["transcribe", *files[:3], "-o", str(tmp_path / "o2"), "--no-progress"], capsys)
    assert code == 0 and not any(map(PROGRESS.match, err.splitlines()))


def test_progress_on_a_terminal_rewrites_one_line(fake, tmp_path, capsys):
    files = [wav(tmp_path / f"f{i}.wav") for i in range(3)]
    err = TTY()
    code = cli.main(["transcribe", *files, "-o", str(tmp_path / "out"), "-b", "2"], err=err)  # default: on for a TTY
    text = err.getvalue()
    assert code == 0 and text.count("\n") == 1 and text.endswith("\n")  # progress is rewritten with \r
    parts = text.split("\r")
    assert parts[0] == "" and [PROGRESS.match(p.rstrip())[1] for p in parts[1:-2]] == ["0", "2", "3"]
    assert parts[-2].strip() == ""  # the line is erased before the summary
    assert parts[-1].startswith("speechcore: 3 files transcribed, 0 skipped, 0 failed")

    err = TTY()
    assert cli.main(["transcribe", *files, "-o", str(tmp_path / "o2"), "--no-progress"], err=err) == 0
    assert "\r" not in err.getvalue()


def test_progress_figures():
    stats = cli._Stats(total=100, skipped=7)
    stats.start = time.monotonic() - 10.0
    stats.transcribed, stats.audio_seconds = 12, 352.0
    assert re.fullmatch(r"speechcore: 12/100 files, 0:05:52 of audio, 10\.0 s elapsed, RTFx 35\.2",
                        stats.progress_line())
    stats.failures.append(("x.wav", "bad"))
    assert stats.progress_line().startswith("speechcore: 13/100 files (1 failed), ")
    assert re.fullmatch(r"speechcore: 12 files transcribed, 7 skipped \(outputs exist; --overwrite redoes them\), "
                        r"1 failed; 0:05:52 of audio in 10\.0 s, RTFx 35\.2", stats.summary(write_files=True))
    assert [cli._duration(s) for s in (0, 59.9, 60, 3725.4, 360000)] == [
        "0.0 s", "59.9 s", "0:01:00", "1:02:05", "100:00:00"]


# ---------------------------------------------------------------------------------------------
# Exit statuses


@pytest.mark.parametrize("argv", [["--batch-size", "0"], ["-b", "x"], ["--progress=yes"]])
def test_batch_usage_errors_exit_2(fake, tmp_path, capsys, argv):
    code, _, err = run(["transcribe", wav(tmp_path / "a.wav"), *argv], capsys)
    assert code == 2 and "usage:" in err and fake.instances == []


def test_parser_batch_defaults():
    a = cli.build_parser().parse_args(["transcribe", "d"])
    assert (a.batch_size, a.progress, a.overwrite) == (16, None, False)


# ---------------------------------------------------------------------------------------------
# The real model


def test_batch_path_writes_what_single_transcription_gives(tiny_dir, speech_clips, tmp_path, capsys):
    import speechcore

    clips = [speech_clips[0], speech_clips[2], speech_clips[6]]
    src = tmp_path / "in"
    targets = [src / "sub" / clips[0].name, src / clips[1].name, src / clips[2].name]
    for clip, target in zip(clips, targets):
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(clip, target)
    out = tmp_path / "out"
    code, _, err = run(["transcribe", str(src), "-o", str(out), "--model", str(tiny_dir), "--device", "cpu",
                        "--batch-size", "2", "--language", "en"], capsys)
    assert code == 0, err
    assert "3 files transcribed, 0 skipped, 0 failed" in err

    model = speechcore.load(str(tiny_dir), device="cpu")
    for clip, target in zip(clips, targets):
        alone = model.transcribe(str(clip), language="en")
        assert alone.text.strip()
        stem = out / os.path.splitext(os.path.relpath(target, src))[0]
        for fmt in ("txt", "srt", "vtt", "tsv"):
            assert Path(f"{stem}.{fmt}").read_text(encoding="utf-8") == cli.FORMATTERS[fmt](alone), (clip, fmt)
