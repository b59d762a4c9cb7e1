"""Decoder-step latency of speechcore on the GPU: seeded large-v3 weights, 30 s windows, exactly
100 generated tokens per window (as whisper_gpu.py), batches 1 and 2, the fused decode step
(the default; SPEECHCORE_DECODE_FUSION=1 at load) against the unfused kernel sequence (=0) in one
process. Programmatic dependent launch is per process: run again with SPEECHCORE_PDL=0 to
compare. With SPEECHCORE_PROFILE=1 the runner prints encoder / prefill / per-step times.

    python benchmarks/decode_step_gpu.py [--model large-v3] [--batches 1,2] [--ckpt DIR]

--ckpt keeps the seeded checkpoint between runs (made once, with transformers, on the GPU).
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

import numpy as np

import speechcore
from whisper_gpu import NEW_TOKENS, SHAPES, VOCAB


def make_checkpoint(path: Path, model: str, tok_json: Path) -> None:
    import torch
    import transformers

    torch.manual_seed(0)
    cfg = transformers.WhisperConfig(vocab_size=VOCAB, max_source_positions=1500, max_target_positions=448,
                                     **SHAPES[model])
    with torch.device("cuda"):
        m = transformers.WhisperForConditionalGeneration(cfg).eval()
    path.mkdir(parents=True, exist_ok=True)
    m.save_pretrained(str(path), safe_serialization=True)
    shutil.copy(tok_json, path / "tokenizer.json")
    del m
    torch.cuda.empty_cache()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="large-v3", choices=sorted(SHAPES))
    ap.add_argument("--batches", default="1,2")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--ckpt", default="/tmp/sc-decode-step-ckpt")
    ap.add_argument("--modes", default="fused,unfused")
    args = ap.parse_args()
    tok_json = Path(__file__).resolve().parent.parent / ".cache/tokenizer/tokenizer_multilingual.json"
    ckpt = Path(args.ckpt) / args.model
    if not (ckpt / "tokenizer.json").is_file():
        t0 = time.perf_counter()
        make_checkpoint(ckpt, args.model, tok_json)
        print(f"checkpoint made in {time.perf_counter() - t0:.1f} s", flush=True)
    tok = speechcore._C.Tokenizer.from_file(str(tok_json))
    opts = dict(language="en", without_timestamps=True, suppress_tokens=[tok.eot], suppress_blank=False,
                no_speech_threshold=None, condition_on_previous_text=False, max_new_tokens=2 * NEW_TOKENS - 4,
                beam_size=1, temperature=0.0)  # greedy decoding steps
    audio = (0.1 * np.random.default_rng(0).standard_normal(16000 * 30)).astype(np.float32)
    pdl = os.environ.get("SPEECHCORE_PDL", "1") != "0"
    results = {}
    for mode in args.modes.split(","):
        os.environ["SPEECHCORE_DECODE_FUSION"] = "1" if mode == "fused" else "0"
        sc = speechcore.load(str(ckpt), device="cuda", compute_type="bfloat16")
        os.environ.pop("SPEECHCORE_DECODE_FUSION")
        for b in [int(x) for x in args.batches.split(",")]:
            audios = [audio] * b
            res = sc.transcribe_batch(audios, sample_rate=16000, batch_size=b, **opts)  # warm-up + graphs
            toks = [[t for s in r.segments for t in s.tokens] for r in res]
            assert {len(t) for t in toks} == {NEW_TOKENS}, [len(t) for t in toks]
            walls = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                sc.transcribe_batch(audios, sample_rate=16000, batch_size=b, **opts)
                walls.append(time.perf_counter() - t0)
            results[(mode, b)] = (float(np.median(walls)), toks[0])
            print(f"[{mode}, pdl {'on' if pdl else 'off'}] batch {b}: median {np.median(walls) * 1e3:.1f} ms "
                  f"(min {min(walls) * 1e3:.1f}) per batch of 30 s windows, {NEW_TOKENS} tokens each", flush=True)
        del sc
    for b in [int(x) for x in args.batches.split(",")]:
        if ("fused", b) in results and ("unfused", b) in results:
            same = results[("fused", b)][1] == results[("unfused", b)][1]
            print(f"batch {b}: fused tokens == unfused tokens: {same}")


if __name__ == "__main__":
    main()
