"""CPU speed: speechcore against faster-whisper (fp32 and int8) on the same real clips and
the same CTranslate2 checkpoint, same thread count, interleaved in one run.

    python benchmarks/asr_cpu.py [--model tiny.en] [--threads 2] [--repeats 3]

Prints, per system, the wall time over the whole clip set (median of repeats), the
real-time factor RTFx = audio seconds / wall seconds, and the ratio to speechcore.
Greedy decoding (beam_size=1, temperature=0), English, no VAD, condition_on_previous_text.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def load_clips():
    import conftest  # the tests' data helpers: pocketsphinx-testdata, fetched once

    d = conftest._pocketsphinx_dir()
    if d is None:
        sys.exit("pocketsphinx-testdata is not available (apt-get download pocketsphinx-testdata)")
    import soundfile as sf

    paths = sorted((d / "librivox").glob("*.wav")) + sorted((d / "cards").glob("*.wav"))
    clips = [sf.read(str(p), dtype="float32")[0] for p in paths]
    gap = np.zeros(int(0.7 * 16000), np.float32)
    longform = np.concatenate([x for c in clips + clips[:5] for x in (c, gap)])
    return {"10 clips": clips, "long-form (%.0f s)" % (len(longform) / 16000): [longform]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny.en")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import faster_whisper

    import speechcore
    from speechcore import models

    model_dir = str(models.resolve_model(args.model))
    systems = {
        "speechcore fp32": speechcore.load(model_dir, device="cpu", threads=args.threads),
        "faster-whisper fp32": faster_whisper.WhisperModel(model_dir, device="cpu", compute_type="float32",
                                                           cpu_threads=args.threads),
        "faster-whisper int8": faster_whisper.WhisperModel(model_dir, device="cpu", compute_type="int8",
                                                           cpu_threads=args.threads),
    }

    def run(name, model, audio):
        if name.startswith("speechcore"):
            return model.transcribe(audio, language="en", beam_size=1, temperature=0.0).text
        segs, _ = model.transcribe(audio, language="en", beam_size=1, temperature=0.0,
                                   condition_on_previous_text=True, vad_filter=False)
        return "".join(s.text for s in segs)

    print(f"model {args.model} ({model_dir}), threads {args.threads}, repeats {args.repeats}, "
          f"cpu count {os.cpu_count()}")
    rows = []
    for set_name, clips in load_clips().items():
        audio_s = sum(len(c) for c in clips) / 16000
        for name, model in systems.items():  # warm-up
            run(name, model, clips[0][: 16000 * 5])
        times = {name: [] for name in systems}
        for _ in range(args.repeats):  # interleaved: each repeat runs every system once
            for name, model in systems.items():
                t0 = time.perf_counter()
                for c in clips:
                    run(name, model, c)
                times[name].append(time.perf_counter() - t0)
        base = statistics.median(times["speechcore fp32"])
        for name in systems:
            t = statistics.median(times[name])
            rows.append((set_name, name, audio_s, t, audio_s / t, t / base))

    print(f"\n{'clip set':<22} {'system':<22} {'audio s':>8} {'wall s':>8} {'RTFx':>7} {'time vs speechcore':>19}")
    for r in rows:
        print(f"{r[0]:<22} {r[1]:<22} {r[2]:8.1f} {r[3]:8.3f} {r[4]:7.1f} {r[5]:18.2f}x")


if __name__ == "__main__":
    main()
