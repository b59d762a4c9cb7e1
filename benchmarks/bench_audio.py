"""Log-mel and resampling speed: speechcore vs faster-whisper's numpy FeatureExtractor.

    PYTHONPATH=python python3 benchmarks/bench_audio.py [--seconds 30] [--repeat 20]

Reports per-call process CPU time (robust on a shared machine) and wall time, best and
median of `repeat` calls, and the ratio to the baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def measure(fn, repeat: int) -> tuple[float, float, float]:
    fn()  # warm-up
    cpu, wall = [], []
    for _ in range(repeat):
        c0, w0 = time.process_time(), time.perf_counter()
        fn()
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    return min(cpu) * 1e3, float(np.median(cpu)) * 1e3, min(wall) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()

    from faster_whisper.feature_extractor import FeatureExtractor

    from speechcore import _C

    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal(int(16000 * args.seconds))).astype(np.float32)
    rows = []
    for n_mels in (80, 128):
        fe = FeatureExtractor(feature_size=n_mels)
        base = measure(lambda: fe(audio, padding=160), args.repeat)
        ours = measure(lambda: _C.log_mel_spectrogram(audio, n_mels=n_mels), args.repeat)
        rows.append((f"log-mel {n_mels} ({args.seconds:g} s)", base, ours))
    audio48 = (0.1 * rng.standard_normal(int(48000 * args.seconds))).astype(np.float32)
    audio441 = (0.1 * rng.standard_normal(int(44100 * args.seconds))).astype(np.float32)
    rows.append(("resample 48k->16k", None, measure(lambda: _C.resample(audio48, 48000, 16000), 5)))
    rows.append(("resample 44.1k->16k", None,
                 measure(lambda: _C.resample(audio441, 44100, 16000), 5)))

    print(f"{'case':28s} {'baseline cpu ms (min/med)':>26s} {'speechcore cpu ms (min/med)':>28s}"
          f" {'wall min ms':>12s} {'speed-up':>9s}")
    for name, base, ours in rows:
        b = f"{base[0]:8.1f} / {base[1]:8.1f}" if base else f"{'-':>19s}"
        ratio = f"{base[0] / ours[0]:8.1f}x" if base else f"{'-':>9s}"
        print(f"{name:28s} {b:>26s} {ours[0]:10.1f} / {ours[1]:8.1f}    {ours[2]:12.1f} {ratio}")


if __name__ == "__main__":
    main()
