"""Cost of beam search on the CPU: beam_size=5 against greedy decoding, for speechcore and for
faster-whisper (fp32, same CTranslate2 checkpoint, same thread count), interleaved in one run.

    python benchmarks/beam_cpu.py [--model tiny.en] [--threads 2] [--repeats 3] [--beam 5]

Prints, per system and clip set, the wall time of greedy and of beam search (median of
repeats, process CPU time next to it: more robust on a shared machine), and the ratio
beam / greedy. English, temperature 0 (no fallback), no VAD, condition_on_previous_text.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from asr_cpu import load_clips  # noqa: E402  (the same clip sets as the greedy benchmark)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny.en")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--beam", type=int, default=5)
    args = ap.parse_args()

    import faster_whisper

    import speechcore
    from speechcore import models

    model_dir = str(models.resolve_model(args.model))
    systems = {
        "speechcore": speechcore.load(model_dir, device="cpu", threads=args.threads),
        "faster-whisper": faster_whisper.WhisperModel(model_dir, device="cpu", compute_type="float32",
                                                      cpu_threads=args.threads),
    }

    def run(name, model, audio, beam):
        options = dict(language="en", beam_size=beam, temperature=0.0, condition_on_previous_text=True)
        if name == "speechcore":
            return model.transcribe(audio, sample_rate=16000, **options).segments
        segments, _ = model.transcribe(audio, vad_filter=False, **options)
        return list(segments)

    print(f"model {args.model} ({model_dir}), threads {args.threads}, repeats {args.repeats}, beam {args.beam}, "
          f"cpu count {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}")
    rows = []
    for set_name, clips in load_clips().items():
        for name, model in systems.items():  # warm-up
            for beam in (1, args.beam):
                run(name, model, clips[0][: 16000 * 5], beam)
        wall = {(n, b): [] for n in systems for b in (1, args.beam)}
        cpu = {k: [] for k in wall}
        same = True
        for _ in range(args.repeats):  # interleaved: each repeat runs every configuration once
            outputs = {}
            for name, model in systems.items():
                for beam in (1, args.beam):
                    w0, c0 = time.perf_counter(), time.process_time()
                    outputs[(name, beam)] = [[list(s.tokens) for s in run(name, model, c, beam)] for c in clips]
                    wall[(name, beam)].append(time.perf_counter() - w0)
                    cpu[(name, beam)].append(time.process_time() - c0)
            same = same and all(outputs[("speechcore", b)] == outputs[("faster-whisper", b)] for b in (1, args.beam))
        for name in systems:
            g, b = statistics.median(wall[(name, 1)]), statistics.median(wall[(name, args.beam)])
            gc, bc = statistics.median(cpu[(name, 1)]), statistics.median(cpu[(name, args.beam)])
            rows.append((set_name, name, g, b, b / g, gc, bc, bc / gc))
        print(f"{set_name}: tokens identical between the systems: {same}")

    print(f"\n{'clip set':<22} {'system':<16} {'greedy s':>9} {'beam s':>8} {'beam/greedy':>12}"
          f" {'greedy cpu s':>13} {'beam cpu s':>11} {'cpu ratio':>10}")
    for r in rows:
        print(f"{r[0]:<22} {r[1]:<16} {r[2]:9.3f} {r[3]:8.3f} {r[4]:11.2f}x {r[5]:13.3f} {r[6]:11.3f} {r[7]:9.2f}x")


if __name__ == "__main__":
    main()
