"""CLI batch transcription on the engine: directory inputs, mirrored outputs, resuming, files
in flight bounded and written as they finish, bad files, interruption, progress and summary
output, exit statuses. The native model and engine are the fakes of test_cli.py except in the
last tests, which run the real tiny.en on real speech through the real engine."""

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

from speechcore import _progress, cli
from speechcore.cli import find_audio_files
from test_cli import SR, FakeEngine, FakeNativeModel, install_fake, run

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
    # submitted in sorted order, the directory's files first, then the file after it, to an
    # engine decoding --batch-size (default 16) windows together
    (e,) = FakeEngine.instances
    assert [(shape, rate) for _, shape, rate in e.submitted] == [
        ((8000,), 8000), ((2 * SR,), SR), ((2 * SR,), SR), ((2 * SR,), SR), ((3 * SR,), SR)]
    assert e.options["max_batch"] == 16 and e.shut_down is not None  # closed at the end
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
    assert [shape for _, shape, _ in FakeEngine.instances[-1].submitted] == [(2 * SR,)]
    assert (out / "a" / "x.srt").exists() and (out / "b.txt").read_text() == "edited\n"

    code, _, err = run(argv + ["-f", "txt"], capsys)  # only the txt files are asked for: all there
    assert code == 0 and "4 skipped" in err

    code, _, err = run(argv + ["--overwrite"], capsys)
    assert code == 0 and "4 files transcribed, 0 skipped, 0 failed" in err
    assert (out / "b.txt").read_text() == "2.0 seconds.\n"


def test_interrupt_keeps_finished_files_and_the_rerun_resumes(fake, tmp_path, monkeypatch, capsys):
    files = [wav(tmp_path / "in" / f"f{i}.wav") for i in range(5)]
    calls, original = [], FakeNativeModel.transcribe

    def interrupt_from_the_third(self, audio, rate, options):
        calls.append(audio.shape)
        if len(calls) >= 3:  # Ctrl-C while the third file is decoded (and every later one)
            raise KeyboardInterrupt
        return original(self, audio, rate, options)

    monkeypatch.setattr(FakeNativeModel, "transcribe", interrupt_from_the_third)
    out = tmp_path / "out"
    code, _, err = run(["transcribe", *files, "-o", str(out), "-f", "txt", "--batch-size", "2"], capsys)
    assert code == 130
    assert tree(out) == ["f0.txt", "f1.txt"]  # what finished is written, nothing partial
    assert err == ("speechcore: 2 files written before the interruption; run the same command again to go on "
                   "with the rest\nspeechcore: interrupted\n")
    (e,) = FakeEngine.instances
    assert e.shut_down is True  # the engine was stopped, cancelling what was in flight
    assert len(e.submitted) <= 4 + 1  # 2 x --batch-size in flight, one more after a file finished

    monkeypatch.setattr(FakeNativeModel, "transcribe", original)  # (undo() would drop the fake too)
    code, _, err = run(["transcribe", *files, "-o", str(out), "-f", "txt", "--batch-size", "2"], capsys)
    assert code == 0 and "3 files transcribed, 2 skipped" in err and len(tree(out)) == 5
    assert [shape for _, shape, _ in FakeEngine.instances[-1].submitted] == [(SR,)] * 3
    assert (out / "f4.txt").read_text() == "1.0 seconds.\n"


def test_many_files_bounded_in_flight_and_written_as_they_finish(fake, tmp_path, monkeypatch, capsys):
    """40 files, --batch-size 3: at most 6 files in the engine, and a file's outputs are on disk
    while later files are still being transcribed (not at the end of the run)."""
    n, batch = 40, 3
    files = [wav(tmp_path / "in" / f"f{i:02d}.wav", 1.0 + i / 10) for i in range(n)]
    out = tmp_path / "out"
    seen, original = [], FakeNativeModel.transcribe

    def check_progress(self, audio, rate, options):
        # when file j is decoded it was submitted, so at most 2 x batch - 1 earlier files were
        # still unwritten: files 0 .. j - 2 x batch must have their outputs already
        j = int(round((audio.shape[0] / rate - 1.0) * 10))
        seen.append(sorted(os.listdir(out)) if out.exists() else [])
        expected = {f"f{i:02d}.{f}" for i in range(max(0, j - 2 * batch + 1)) for f in ("txt", "json")}
        assert expected <= set(seen[-1]), (j, seen[-1])
        return original(self, audio, rate, options)

    monkeypatch.setattr(FakeNativeModel, "transcribe", check_progress)
    code, _, err = run(["transcribe", str(tmp_path / "in"), "-o", str(out), "-f", "all", "-b", str(batch)], capsys)
    assert code == 0, err
    assert f"{n} files transcribed, 0 skipped, 0 failed" in err
    (e,) = FakeEngine.instances
    assert e.options["max_batch"] == batch and e.max_outstanding <= 2 * batch
    assert len(e.submitted) == n and len(tree(out)) == 5 * n
    assert len(seen[-1]) >= 5 * (n - 2 * batch)  # most outputs existed before the last file was decoded
    assert (out / "f39.txt").read_text() == "4.9 seconds.\n"


def test_in_flight_files_are_bounded_by_their_bytes(fake, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "MAX_IN_FLIGHT_BYTES", 3 * SR * 4)  # three seconds of samples
    files = [wav(tmp_path / f"f{i}.wav", 2.0) for i in range(6)]
    original = FakeNativeModel.transcribe

    def hold_the_first(self, audio, rate, options):
        if not self.calls:  # the first file stays in the engine while the CLI could submit more
            (e,) = FakeEngine.instances
            deadline = time.monotonic() + 5
            while len(e.submitted) < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.2)
        return original(self, audio, rate, options)

    monkeypatch.setattr(FakeNativeModel, "transcribe", hold_the_first)
    code, out, _ = run(["transcribe", *files, "-b", "8"], capsys)
    assert code == 0 and out.count("2.0 seconds.") == 6
    # 16 files could be in flight by count; the second one passes the byte bound
    assert FakeEngine.instances[0].max_outstanding == 2


# ---------------------------------------------------------------------------------------------
# Files in flight, bad files


def test_stdout_keeps_input_order_and_batch_size_is_max_batch(fake, tmp_path, capsys):
    files = [wav(tmp_path / f"f{i}.wav", 1.0 + i) for i in range(5)]
    code, out, _ = run(["transcribe", *files, "--batch-size", "2"], capsys)
    assert code == 0 and [line for line in out.splitlines() if "seconds" in line] == [
        "1.0 seconds.", "2.0 seconds.", "3.0 seconds.", "4.0 seconds.", "5.0 seconds."]
    (e,) = FakeEngine.instances
    assert e.options["max_batch"] == 2 and e.max_outstanding <= 4 and len(e.submitted) == 5


def test_bad_file_in_a_batch_is_reported_and_the_others_written(fake, tmp_path, capsys):
    files = [wav(tmp_path / "a.wav"), str(tmp_path / "junk.wav"), wav(tmp_path / "b.wav", 2.0),
             str(tmp_path / "missing.wav"), wav(tmp_path / "c.wav", 3.0)]
    (tmp_path / "junk.wav").write_text("not audio\n" * 20)
    out = tmp_path / "out"
    code, _, err = run(["transcribe", *files, "-o", str(out), "-f", "txt", "--batch-size", "5"], capsys)
    assert code == 1
    assert tree(out) == ["a.txt", "b.txt", "c.txt"]
    (e,) = FakeEngine.instances
    assert [shape for _, shape, _ in e.submitted] == [(SR,), (2 * SR,), (3 * SR,)]  # the good ones
    assert "3 files transcribed, 0 skipped, 2 failed; 6.0 s of audio" in err
    failed = err[err.index("speechcore: failed (2):"):].splitlines()
    assert failed[1].startswith(f"  {files[1]}: cannot decode audio")
    assert failed[2] == f"  {files[3]}: audio file not found: {files[3]}"


def test_a_file_failing_on_the_engine_is_reported_and_the_others_written(fake, tmp_path, capsys):
    files = [wav(tmp_path / "a.wav"), wav(tmp_path / "bad.wav", 1.0, 8000), wav(tmp_path / "c.wav", 2.0)]
    fake.fail_on_rate = 8000  # the engine fails this request only
    out = tmp_path / "out"
    code, _, err = run(["transcribe", *files, "-o", str(out), "-f", "txt"], capsys)
    assert code == 1
    assert tree(out) == ["a.txt", "c.txt"] and (out / "c.txt").read_text() == "2.0 seconds.\n"
    assert f"speechcore: {files[1]}: RuntimeError: cannot transcribe audio at 8000 Hz\n" in err
    assert err.endswith(f"speechcore: failed (1):\n  {files[1]}: RuntimeError: cannot transcribe audio at 8000 Hz\n")
    assert "2 files transcribed, 0 skipped, 1 failed" in err
    assert len(FakeEngine.instances[0].submitted) == 3  # each file submitted once, no retries


def test_a_single_failed_file_reports_once(fake, tmp_path, capsys):
    f = wav(tmp_path / "a.wav")
    fake.fail_on_rate = SR
    code, _, err = run(["transcribe", f, "-o", str(tmp_path / "out")], capsys)
    assert code == 1 and err == f"speechcore: {f}: RuntimeError: cannot transcribe audio at {SR} Hz\n"
    assert len(FakeEngine.instances[0].submitted) == 1 and fake.instances[0].calls == []


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


def test_progress_lines(fake, tmp_path, monkeypatch, capsys):
    files = [wav(tmp_path / f"f{i}.wav") for i in range(3)] + [str(tmp_path / "missing.wav")]
    code, _, err = run(["transcribe", *files, "-o", str(tmp_path / "out"), "--progress", "-b", "2"], capsys)
    assert code == 1
    lines = err.splitlines()
    progress = [m for m in map(PROGRESS.match, lines) if m]
    # not a terminal: a line at the start, at most one per PROGRESS_INTERVAL (5 s), one at the end
    assert [(int(m[1]), int(m[2])) for m in progress] == [(0, 4), (4, 4)]
    assert progress[-1][3] == " (1 failed)"
    assert lines[-3].startswith("speechcore: 3 files transcribed, 0 skipped, 1 failed; 3.0 s of audio in ")
    assert "\r" not in err  # plain lines

    monkeypatch.setattr(_progress, "PROGRESS_INTERVAL", 0.0)  # a line after every file
    code, _, err = run(["transcribe", *files, "-o", str(tmp_path / "o1"), "--progress", "-b", "2"], capsys)
    counts = [int(m[1]) for m in map(PROGRESS.match, err.splitlines()) if m]
    assert code == 1 and counts[0] == 0 and counts[-1] == 4 and len(counts) == 6 and counts == sorted(counts)

    code, _, err = run(["transcribe", *files[:3], "-o", str(tmp_path / "o2"), "--no-progress"], capsys)
    assert code == 0 and not any(map(PROGRESS.match, err.splitlines()))


def test_progress_on_a_terminal_rewrites_one_line(fake, tmp_path, capsys):
    files = [wav(tmp_path / f"f{i}.wav") for i in range(3)]
    err = TTY()
    code = cli.main(["transcribe", *files, "-o", str(tmp_path / "out"), "-b", "2"], err=err)  # default: on for a TTY
    text = err.getvalue()
    assert code == 0 and text.count("\n") == 1 and text.endswith("\n")  # progress is rewritten with \r
    parts = text.split("\r")
    assert parts[0] == "" and [PROGRESS.match(p.rstrip())[1] for p in parts[1:-2]] == ["0", "1", "2", "3"]
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


def test_engine_path_writes_what_single_transcription_gives(tiny_dir, speech_clips, longform_audio, tmp_path,
                                                           monkeypatch, capsys):
    """A 40 s recording (two windows) first, then two clips, through the real engine: every
    output equals transcribing that file alone, and the clips' outputs are written while the
    long recording (first in input order) is still being decoded."""
    import speechcore

    clips = [speech_clips[1], speech_clips[6]]
    src = tmp_path / "in"
    targets = [src / "a_long.wav", src / "sub" / clips[0].name, src / clips[1].name]
    src.mkdir()
    sf.write(targets[0], longform_audio[:40 * SR], SR)
    for clip, target in zip(clips, targets[1:]):
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(clip, target)
    written, write = [], cli._write_atomically
    monkeypatch.setattr(cli, "_write_atomically", lambda path, text: (written.append(path), write(path, text)))
    out = tmp_path / "out"
    code, _, err = run(["transcribe", str(src), "-o", str(out), "--model", str(tiny_dir), "--device", "cpu",
                        "--batch-size", "2", "--language", "en"], capsys)
    assert code == 0, err
    assert "3 files transcribed, 0 skipped, 0 failed" in err
    assert [os.path.basename(p).startswith("a_long.") for p in written] == [False] * 10 + [True] * 5  # written last
    assert len(written) == 3 * 5

    model = speechcore.load(str(tiny_dir), device="cpu")
    for target in targets:
        alone = model.transcribe(str(target), language="en")
        assert alone.text.strip()
        stem = out / os.path.splitext(os.path.relpath(target, src))[0]
        for fmt in ("txt", "srt", "vtt", "tsv", "json"):
            assert Path(f"{stem}.{fmt}").read_text(encoding="utf-8") == cli.FORMATTERS[fmt](alone), (target, fmt)


def test_interrupt_on_the_real_engine_aborts_in_flight_and_resumes(tiny_dir, speech_clips, tmp_path, monkeypatch,
                                                                    capsys):
    """Ctrl-C while the second file's outputs are written: the first file's outputs stay, the
    engine is shut down with no request left in it, and the rerun finishes the rest."""
    from speechcore import _C, api

    src = tmp_path / "in"
    src.mkdir()
    for clip in speech_clips[5:8]:  # three card readings (1-2 s)
        shutil.copy(clip, src / clip.name)
    names = sorted(p.stem for p in src.iterdir())
    engines = []

    def make_engine(native, **kw):
        engines.append(_C.Engine(native, **kw))
        return engines[-1]

    monkeypatch.setattr(api, "_native_engine_class", lambda: make_engine)
    written, write, interrupted = [], cli._write_atomically, []

    def interrupt_second_file(path, text):
        stem = os.path.splitext(os.path.basename(path))[0]
        if not interrupted and written and stem != written[0]:
            interrupted.append(stem)
            raise KeyboardInterrupt
        written.append(stem)
        write(path, text)

    monkeypatch.setattr(cli, "_write_atomically", interrupt_second_file)
    out = tmp_path / "out"
    argv = ["transcribe", str(src), "-o", str(out), "--model", str(tiny_dir), "--device", "cpu", "-b", "1"]
    code, _, err = run(argv, capsys)
    assert code == 130, err
    done = sorted(set(written))
    assert written[0] == names[0] and interrupted[0] not in done
    m = re.match(r"speechcore: (\d+) files? written before the interruption", err)
    assert m and int(m[1]) == len(done)
    assert tree(out) == sorted(f"{stem}.{f}" for stem in done for f in cli.OUTPUT_FORMATS)  # complete files only
    (engine,) = engines
    st = engine.stats()
    assert st["active_requests"] == 0 and st["running_windows"] == 0 and st["kv_blocks_used"] == 0
    assert st["requests_finished"] + st["requests_failed"] >= len(done) + 1

    monkeypatch.setattr(cli, "_write_atomically", write)
    code, _, err = run(argv, capsys)
    assert code == 0, err
    assert f"{3 - len(done)} file{'s' if 3 - len(done) != 1 else ''} transcribed, {len(done)} skipped" in err
    import speechcore

    model = speechcore.load(str(tiny_dir), device="cpu")
    for name in names:
        alone = model.transcribe(str(src / f"{name}.wav"))
        assert (out / f"{name}.json").read_text(encoding="utf-8") == cli.to_json(alone)
