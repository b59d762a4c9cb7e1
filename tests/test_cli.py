"""CLI tests: timestamp/subtitle formatting, argument parsing, output files, failure handling.
The native model is replaced by a fake that follows the binding contract."""

from __future__ import annotations

import io
import json
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechcore import api, cli
from speechcore.cli import format_timestamp, to_json, to_srt, to_tsv, to_txt, to_vtt
from speechcore.results import Segment, Transcription

SR = 16000


def make_result(segments=None) -> Transcription:
    segments = segments if segments is not None else [
        Segment(id=0, seek=0, start=0.0, end=2.5, text=" Hello there.", tokens=[1, 2]),
        Segment(id=1, seek=3000, start=59.9996, end=3661.0015, text=" A --> B\twith tab.", tokens=[3]),
    ]
    return Transcription(text="".join(s.text for s in segments), segments=segments, language="en",
                         language_probability=1.0, duration=3662.0)


class FakeNativeModel:
    """speechcore._C.Model stand-in: returns a fixed transcript derived from the audio length.

    `fail_on_rate`: audio at this sample rate makes the native call raise (one bad item fails a
    whole transcribe_batch call, as in the native batch loop); `batch_error`: every
    transcribe_batch call raises it; `interrupt`: every call raises KeyboardInterrupt."""

    instances: list = []
    fail_on_rate: int = -1
    batch_error = None
    interrupt = False

    def __init__(self, path, device="auto", compute_type="auto", threads=0):
        self.args = (path, device, compute_type, threads)
        self.calls = []
        self.batch_calls = []
        FakeNativeModel.instances.append(self)

    @property
    def info(self):
        return {"architecture": "whisper", "path": self.args[0], "device": "cpu", "compute_type": "float32"}

    def transcribe(self, audio, sample_rate, options):
        if FakeNativeModel.interrupt:
            raise KeyboardInterrupt
        if sample_rate == FakeNativeModel.fail_on_rate:
            raise RuntimeError(f"cannot transcribe audio at {sample_rate} Hz")
        self.calls.append((audio.shape, sample_rate, options))
        seconds = audio.shape[0] / sample_rate
        return {"text": f" {seconds:.1f} seconds.", "language": "en", "language_probability": 1.0,
                "duration": seconds,
                "segments": [{"id": 0, "seek": 0, "start": 0.0, "end": seconds, "text": f" {seconds:.1f} seconds.",
                              "tokens": [1], "avg_logprob": -0.1, "compression_ratio": 1.0,
                              "no_speech_prob": 0.0, "temperature": 0.0}]}

    def transcribe_batch(self, audios, sample_rates, options, max_batch):
        if FakeNativeModel.interrupt:
            raise KeyboardInterrupt
        self.batch_calls.append(([a.shape for a in audios], list(sample_rates), max_batch))
        if FakeNativeModel.batch_error is not None:
            raise FakeNativeModel.batch_error
        return [self.transcribe(a, r, options) for a, r in zip(audios, sample_rates)]


    def check_options(self, options):
        pass


class FakeEngine:
    """speechcore._C.Engine stand-in over a FakeNativeModel: one worker thread takes the requests
    in submission order and calls on_done(model.transcribe(...)) or on_error(exception), like the
    engine thread (a KeyboardInterrupt of the fake model goes to on_error too). `submitted` lists
    (id, audio shape, rate); `max_outstanding` is the most requests submitted and not finished."""

    instances: list = []

    def __init__(self, model, max_batch=64, max_encode_batch=8, kv_block_size=16, kv_blocks=0, prepare_threads=0,
                 gpu_memory_fraction=0.9):
        self.model = model
        self.options = dict(max_batch=max_batch, max_encode_batch=max_encode_batch, kv_block_size=kv_block_size,
                            kv_blocks=kv_blocks, gpu_memory_fraction=gpu_memory_fraction)
        self.submitted = []
        self.max_outstanding = 0
        self.shut_down = None  # the cancel flag of shutdown()
        self._lock = threading.Lock()
        self._queue = queue.Queue()
        self._live, self._aborted = set(), set()
        self._next = 1
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        FakeEngine.instances.append(self)

    def submit(self, audio, sample_rate, options, on_done, on_error, on_segment=None, priority=0):
        from speechcore.errors import CancelledError

        with self._lock:
            if self.shut_down is not None:
                raise CancelledError("the engine is shut down")
            rid, self._next = self._next, self._next + 1
            self._live.add(rid)
            self.max_outstanding = max(self.max_outstanding, len(self._live))
            self.submitted.append((rid, audio.shape, sample_rate))
        self._queue.put((rid, audio, sample_rate, options, on_done, on_error))
        return rid

    def _run(self):
        from speechcore.errors import CancelledError

        while True:
            request = self._queue.get()
            if request is None:
                return
            rid, audio, rate, options, on_done, on_error = request
            with self._lock:
                cancelled = rid in self._aborted or self.shut_down is True
            if cancelled:
                result, error = None, CancelledError("the request was aborted")
            else:
                try:
                    result, error = self.model.transcribe(audio, rate, options), None
                except BaseException as e:  # noqa: BLE001 - handed to the caller, as the engine does
                    result, error = None, e
            with self._lock:
                self._live.discard(rid)
            if error is None:
                on_done(result)
            else:
                on_error(error)

    def abort(self, rid):
        with self._lock:
            if rid not in self._live:
                return False
            self._aborted.add(rid)
            return True

    def shutdown(self, cancel=False):
        with self._lock:
            if self.shut_down is None:
                self.shut_down = bool(cancel)
                self._queue.put(None)
        self._thread.join()

    def stats(self):
        with self._lock:
            return {"active_requests": len(self._live)}


def install_fake(monkeypatch):
    """Makes speechcore.load build a FakeNativeModel (reset), and its engine a FakeEngine, for the
    rest of the test."""
    FakeNativeModel.instances = []
    FakeNativeModel.interrupt = False
    FakeNativeModel.fail_on_rate = -1
    FakeNativeModel.batch_error = None
    FakeEngine.instances = []
    monkeypatch.setattr(api, "_native_model_class", lambda: FakeNativeModel)
    monkeypatch.setattr(api, "_native_engine_class", lambda: FakeEngine)
    return FakeNativeModel


@pytest.fixture
def fake(monkeypatch):
    return install_fake(monkeypatch)


@pytest.fixture
def wavs(tmp_path):
    paths = []
    for name, seconds in (("one", 1.0), ("two", 2.0)):
        p = tmp_path / f"{name}.wav"
        sf.write(p, np.zeros(int(seconds * SR), np.float32), SR)
        paths.append(str(p))
    return paths


def run(argv, capsys):
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ---------------------------------------------------------------------------------------------
# Formatting


@pytest.mark.parametrize("seconds,hours,marker,expected", [
    (0, False, ".", "00:00.000"),
    (0, True, ",", "00:00:00,000"),
    (59.999, False, ".", "00:59.999"),
    (59.9996, False, ".", "01:00.000"),  # rounds up across the minute
    (59.9994, True, ",", "00:00:59,999"),
    (1.0006, False, ".", "00:01.001"),
    (3599.9999, False, ".", "01:00:00.000"),  # hours appear once they are non-zero
    (3600, False, ".", "01:00:00.000"),
    (3661.5, True, ",", "01:01:01,500"),
    (360000.25, False, ".", "100:00:00.250"),
    (-0.4, True, ",", "00:00:00,000"),  # clamped
])
def test_format_timestamp(seconds, hours, marker, expected):
    assert format_timestamp(seconds, always_include_hours=hours, decimal_marker=marker) == expected


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_format_timestamp_rejects_non_finite(bad):
    with pytest.raises(ValueError):
        format_timestamp(bad)


def test_srt():
    assert to_srt(make_result()) == (
        "1\n00:00:00,000 --> 00:00:02,500\nHello there.\n\n"
        "2\n00:01:00,000 --> 01:01:01,002\nA -> B\twith tab.\n")


def test_vtt():
    assert to_vtt(make_result()) == (
        "WEBVTT\n\n"
        "00:00.000 --> 00:02.500\nHello there.\n\n"
        "01:00.000 --> 01:01:01.002\nA -> B\twith tab.\n")


def test_tsv_txt_json():
    r = make_result()
    assert to_tsv(r) == "start\tend\ttext\n0\t2500\tHello there.\n60000\t3661002\tA --> B with tab.\n"
    assert to_txt(r) == "Hello there.\nA --> B\twith tab.\n"
    assert json.loads(to_json(r)) == r.to_dict()
    assert json.loads(to_json(r))["segments"][1]["seek"] == 3000


def test_empty_transcripts_format_cleanly():
    r = make_result(segments=[])
    assert to_srt(r) == "" and to_txt(r) == "" and to_vtt(r) == "WEBVTT\n"
    assert to_tsv(r) == "start\tend\ttext\n"


def test_non_ascii_text_is_written_as_is():
    r = make_result([Segment(id=0, seek=0, start=0, end=1, text=" Grüße, 你好")])
    assert "Grüße, 你好" in to_json(r) and "Grüße, 你好" in to_srt(r)


# ---------------------------------------------------------------------------------------------
# Argument parsing


def test_parser_defaults_and_flags():
    p = cli.build_parser()
    a = p.parse_args(["transcribe", "x.wav"])
    assert (a.model, a.language, a.task, a.output_format, a.output_dir) == ("tiny.en", None, "transcribe", None, None)
    # decoding defaults: faster-whisper's WhisperModel.transcribe
    assert (a.device, a.compute_type, a.threads, a.beam_size, a.best_of, a.patience) == ("auto", "auto", 0, 5, 5, 1.0)
    assert a.temperature == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert a.condition_on_previous_text is True and a.without_timestamps is False
    a = p.parse_args(["transcribe", "a.wav", "b.flac", "--model", "base", "--language", "de", "--task", "translate",
                      "-f", "srt", "-o", "out", "--device", "cpu", "--compute-type", "bfloat16", "--threads", "2",
                      "--beam-size", "1", "--temperature", "0.4", "--no-condition-on-previous-text",
                      "--without-timestamps", "--best-of", "3", "--patience", "1.5"])
    assert a.files == ["a.wav", "b.flac"] and a.model == "base" and a.task == "translate"
    assert (a.output_format, a.output_dir, a.compute_type, a.threads, a.beam_size) == ("srt", "out", "bfloat16", 2, 1)
    assert a.temperature == [0.4] and a.condition_on_previous_text is False and a.without_timestamps is True
    assert (a.best_of, a.patience) == (3, 1.5)
    assert p.parse_args(["transcribe", "x.wav", "--chunk_length", "15"]).chunk_length == 15
    assert p.parse_args(["transcribe", "x.wav", "--temperature", "0,0.5, 1"]).temperature == [0.0, 0.5, 1.0]


@pytest.mark.parametrize("argv", [
    [], ["transcribe"], ["frobnicate", "x.wav"], ["transcribe", "x.wav", "--beam-size", "0"],
    ["transcribe", "x.wav", "--beam-size", "two"], ["transcribe", "x.wav", "--temperature", "-1"],
    ["transcribe", "x.wav", "--temperature", "nan"], ["transcribe", "x.wav", "--temperature", "0,-0.2"],
    ["transcribe", "x.wav", "--temperature", "0,,1"], ["transcribe", "x.wav", "--temperature", ""],
    ["transcribe", "x.wav", "--best-of", "0"], ["transcribe", "x.wav", "--patience", "0"],
    ["transcribe", "x.wav", "--patience", "inf"], ["transcribe", "x.wav", "--threads", "-2"],
    ["transcribe", "x.wav", "--device", "gpu"], ["transcribe", "x.wav", "--output-format", "docx"],
    ["transcribe", "x.wav", "--bogus"], ["transcribe", "x.wav", "--chunk-length", "40"],
    ["transcribe", "x.wav", "--chunk_length", "ten"], ["transcribe", "x.wav", "--chunk-length", "0"],
])
def test_usage_errors_exit_2(argv, capsys, fake):
    code, out, err = run(argv, capsys)
    assert code == 2 and "usage:" in err
    assert fake.instances == []


def test_help(capsys):
    code, out, _ = run(["--help"], capsys)
    assert code == 0 and "transcribe" in out
    code, out, _ = run(["transcribe", "--help"], capsys)
    assert code == 0 and "--output-format" in out and "--no-condition-on-previous-text" in out


def test_python_dash_m(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(Path(cli.__file__).resolve().parents[1]))
    proc = subprocess.run([sys.executable, "-m", "speechcore", "transcribe", "--help"], capture_output=True,
                          text=True, env=env, timeout=60)
    assert proc.returncode == 0 and "usage: speechcore transcribe" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "speechcore"], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


# ---------------------------------------------------------------------------------------------
# Running over the fake model


def test_prints_to_stdout(fake, wavs, capsys):
    code, out, err = run(["transcribe", wavs[0]], capsys)
    assert (code, out, err) == (0, "1.0 seconds.\n", "")
    code, out, _ = run(["transcribe", *wavs], capsys)
    assert code == 0
    assert out == f"==> {wavs[0]} <==\n1.0 seconds.\n\n==> {wavs[1]} <==\n2.0 seconds.\n"


def test_options_reach_the_model(fake, wavs, capsys):
    code, _, _ = run(["transcribe", wavs[0], "--language", "German", "--task", "translate", "--beam-size", "3",
                      "--temperature", "0.2", "--no-condition-on-previous-text", "--without-timestamps",
                      "--device", "cpu", "--compute-type", "float32", "--threads", "2", "--best-of", "2",
                      "--patience", "2"], capsys)
    assert code == 0
    (m,) = fake.instances
    assert m.args[1:] == ("cpu", "float32", 2)
    shape, rate, options = m.calls[0]
    assert shape == (SR,) and rate == SR
    assert (options["language"], options["task"], options["beam_size"], options["temperature"]) == ("de", "translate", 3, [0.2])
    assert (options["best_of"], options["patience"]) == (2, 2.0)
    assert options["condition_on_previous_text"] is False and options["without_timestamps"] is True



def test_default_options_are_faster_whispers(fake, wavs, capsys):
    code, _, _ = run(["transcribe", wavs[0]], capsys)
    assert code == 0
    (m,) = fake.instances
    options = m.calls[0][2]
    assert (options["beam_size"], options["best_of"], options["patience"]) == (5, 5, 1.0)
    assert options["temperature"] == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]

def test_writes_all_formats(fake, wavs, tmp_path, capsys):
    out_dir = tmp_path / "out" / "nested"
    code, out, err = run(["transcribe", *wavs, "--output-dir", str(out_dir)], capsys)
    assert code == 0 and out == ""
    assert err.startswith("speechcore: 2 files transcribed, 0 skipped, 0 failed; 3.0 s of audio in ")
    assert len(err.splitlines()) == 1  # the summary only
    names = sorted(p.name for p in out_dir.iterdir())
    assert names == sorted(f"{stem}.{ext}" for stem in ("one", "two") for ext in ("txt", "srt", "vtt", "json", "tsv"))
    assert (out_dir / "two.srt").read_text() == "1\n00:00:00,000 --> 00:00:02,000\n2.0 seconds.\n"
    assert (out_dir / "two.vtt").read_text() == "WEBVTT\n\n00:00.000 --> 00:02.000\n2.0 seconds.\n"
    assert (out_dir / "one.tsv").read_text() == "start\tend\ttext\n0\t1000\t1.0 seconds.\n"
    assert (out_dir / "one.txt").read_text() == "1.0 seconds.\n"
    d = json.loads((out_dir / "one.json").read_text())
    assert d["text"] == " 1.0 seconds." and d["duration"] == 1.0 and d["segments"][0]["end"] == 1.0


def test_output_format_alone_writes_to_the_current_directory(fake, wavs, tmp_path, monkeypatch, capsys):
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    code, _, _ = run(["transcribe", wavs[1], "-f", "vtt"], capsys)
    assert code == 0 and sorted(os.listdir(work)) == ["two.vtt"]


def test_bad_files_are_reported_and_the_rest_processed(fake, wavs, tmp_path, capsys):
    (tmp_path / "junk.wav").write_text("not audio at all\n" * 10)
    missing = str(tmp_path / "missing.wav")
    junk = str(tmp_path / "junk.wav")
    code, out, err = run(["transcribe", missing, wavs[0], junk, wavs[1]], capsys)
    assert code == 1
    assert "1.0 seconds." in out and "2.0 seconds." in out
    lines = err.strip().splitlines()
    assert "Traceback" not in err
    # each failure when it happens, then the summary and the list of failures
    assert lines[0].startswith(f"speechcore: {missing}: audio file not found")
    assert lines[1].startswith(f"speechcore: {junk}: cannot decode")
    assert lines[2].startswith("speechcore: 2 files transcribed, 2 failed; 3.0 s of audio in ")
    assert lines[3:] == ["speechcore: failed (2):", f"  {lines[0][len('speechcore: '):]}",
                         f"  {lines[1][len('speechcore: '):]}"]
    assert len(fake.instances[0].calls) == 2


def test_single_failed_file_reports_once(fake, tmp_path, capsys):
    missing = str(tmp_path / "missing.wav")
    code, out, err = run(["transcribe", missing], capsys)
    assert code == 1 and out == ""
    assert err == f"speechcore: {missing}: audio file not found: {missing}\n"


def test_bad_option_values_are_usage_errors_before_loading(fake, wavs, capsys):
    code, _, err = run(["transcribe", wavs[0], "--language", "klingon"], capsys)
    assert code == 2 and "unknown language 'klingon'" in err
    assert fake.instances == []


def test_model_load_failure(fake, wavs, capsys):
    code, out, err = run(["transcribe", wavs[0], "--model", "huge-v9"], capsys)
    assert code == 1 and out == "" and "cannot load model huge-v9" in err and "tiny.en" in err


def test_colliding_output_names_are_refused(fake, wavs, tmp_path, capsys):
    other = tmp_path / "sub"
    other.mkdir()
    sf.write(other / "one.wav", np.zeros(SR, np.float32), SR)
    code, _, err = run(["transcribe", wavs[0], str(other / "one.wav"), "-o", str(tmp_path / "o")], capsys)
    assert code == 2 and "one.*" in err and fake.instances == []


def test_unwritable_output_dir(fake, wavs, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    code, _, err = run(["transcribe", wavs[0], "-o", str(tmp_path / "afile" / "sub")], capsys)
    assert code == 1 and "cannot create output directory" in err


def test_keyboard_interrupt_exits_130_quietly(fake, wavs, capsys):
    fake.interrupt = True
    code, out, err = run(["transcribe", *wavs], capsys)
    assert code == 130 and err == "speechcore: interrupted\n" and out == ""


def test_stdin_input(fake, monkeypatch, capsys):
    buf = io.BytesIO()
    sf.write(buf, np.zeros(SR // 2, np.float32), 8000, format="FLAC")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(buf.getvalue())))
    code, out, _ = run(["transcribe", "-"], capsys)
    assert code == 0 and out == "1.0 seconds.\n"
