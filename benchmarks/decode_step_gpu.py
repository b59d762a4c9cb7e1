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


def by_position(spans, label: str) -> None:
    """What each kernel of a decode step adds to the step: steps start at the embedding kernel;
    a kernel's cost is the time from the previous kernel's end to its own end (with programmatic
    dependent launch a kernel starts early, so its duration would count waiting). Printed per
    position in the step, the decoder layers folded: position p >= 1 of the step is layer
    (p - 1) // per_layer, part (p - 1) % per_layer."""
    steps, cur = [], None
    for s, e, n in spans:
        if "embedding" in n:
            cur = []
            steps.append(cur)
        if cur is not None:
            cur.append((s, e, n))
    lens = {}
    for st in steps:
        lens[len(st)] = lens.get(len(st), 0) + 1
    if not steps:
        return
    size = max(lens, key=lens.get)
    steps = [st for st in steps if len(st) == size]
    cost = np.zeros(size)
    for st in steps:
        prev_end = st[0][0]
        for i, (s, e, n) in enumerate(st):
            cost[i] += max(e, prev_end) - prev_end
            prev_end = max(e, prev_end)
    cost /= len(steps)
    names = [n for _, _, n in steps[0]]
    per_layer = 0
    for cand in range(2, 17):  # the decoder layers repeat the same kernel names (4 times at least)
        if size > 1 + 4 * cand and all(names[1 + i] == names[1 + i + cand] for i in range(3 * cand)):
            per_layer = cand
            break
    if per_layer:  # layers: as long as the pattern repeats
        n_rep = 1
        while 1 + (n_rep + 1) * per_layer <= size and all(
                names[1 + n_rep * per_layer + i] == names[1 + i] for i in range(per_layer)):
            n_rep += 1
    print(f"[trace {label}] {len(steps)} steps of {size} kernels: {cost.sum():.1f} us a step; "
          f"per layer {per_layer} kernels")
    if per_layer:
        layers = n_rep
        body = cost[1:1 + layers * per_layer].reshape(layers, per_layer).mean(axis=0)
        print(f"  layer: {body.sum():.2f} us over {layers} layers")
        for j in range(per_layer):
            print(f"    part {j}: {body[j]:7.2f} us  {names[1 + j][:90]}")
        rest = list(range(1 + layers * per_layer, size))
    else:
        rest = list(range(1, size))
    print(f"    embedding: {cost[0]:7.2f} us")
    for i in rest:
        print(f"    after the layers {i}: {cost[i]:7.2f} us  {names[i][:90]}")


def kernel_profile(fn, label: str) -> None:
    """Run fn once under torch.profiler and print where the GPU time goes: per kernel name the
    count, total and mean duration, and over the whole run the GPU busy time against the span
    from the first to the last kernel (the rest is launch gaps and host work). With
    programmatic dependent launch, kernels overlap: the per-kernel durations include waiting on
    the previous kernel, the busy time (a union of intervals) does not."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    if not kernels:
        print(f"[trace {label}] no kernels recorded")
        return
    spans = sorted((e.time_range.start, e.time_range.end, e.name) for e in kernels)
    busy = 0.0
    cur_s, cur_e = spans[0][0], spans[0][1]
    for s, e, _ in spans[1:]:
        if s > cur_e:
            busy += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    busy += cur_e - cur_s
    span = spans[-1][1] - spans[0][0]
    by = {}
    for s, e, n in spans:
        c = by.setdefault(n, [0, 0.0])
        c[0] += 1
        c[1] += e - s
    print(f"[trace {label}] {len(spans)} kernels, GPU busy {busy / 1e3:.2f} ms of a {span / 1e3:.2f} ms span "
          f"({100 * busy / span:.0f}%)")
    for n, (c, t) in sorted(by.items(), key=lambda kv: -kv[1][1])[:25]:
        print(f"  {t / 1e3:9.3f} ms {c:6d}x {t / c:8.2f} us  {n[:110]}")
    by_position(spans, label)
    # Idle gaps between kernels (no kernel running), by the kernel that ran last before each:
    # where the GPU waits on the host (step inputs, token bookkeeping) or on a synchronization.
    gaps = {}
    end = spans[0][1]
    last = spans[0][2]
    for s, e, n in spans[1:]:
        if s > end:
            g = gaps.setdefault(last, [0, 0.0, 0.0])
            g[0] += 1
            g[1] += s - end
            g[2] = max(g[2], s - end)
        if e >= end:
            end, last = e, n
    total = sum(g[1] for g in gaps.values())
    print(f"[trace {label}] idle {total / 1e3:.2f} ms in {sum(g[0] for g in gaps.values())} gaps; by the kernel before:")
    for n, (c, t, mx) in sorted(gaps.items(), key=lambda kv: -kv[1][1])[:8]:
        print(f"  {t / 1e3:9.3f} ms {c:6d}x {t / c:8.2f} us (max {mx / 1e3:.2f} ms)  {n[:100]}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="large-v3", choices=sorted(SHAPES))
    ap.add_argument("--batches", default="1,2")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--ckpt", default="/tmp/sc-decode-step-ckpt")
    ap.add_argument("--modes", default="fused,unfused")
    ap.add_argument("--trace", action="store_true",
                    help="also profile one batch with torch.profiler (CUPTI sees our kernels) and print "
                         "per-kernel GPU time and the idle time between kernels")
    ap.add_argument("--direct", action="store_true",
                    help="batch 1 through transcribe() (the direct window path, as whisper_gpu.py's latency) "
                         "instead of the engine")
    ap.add_argument("--prepare-threads", default="0",
                    help="the engine's prepare_threads, a comma list to compare in one process (0 = automatic)")
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
        for b, pt in [(int(x), int(p)) for x in args.batches.split(",") for p in args.prepare_threads.split(",")]:
            audios = [audio] * b
            if args.direct:
                assert b == 1, "--direct times batch 1 only"
                run = lambda: [sc.transcribe(audio, sample_rate=16000, **opts)]  # noqa: E731
            else:
                # An engine sized for this batch (transcribe_batch would keep the first call's max_batch).
                sc.start_engine(max_batch=b, max_encode_batch=b, kv_blocks=b * 8, prepare_threads=pt)
                run = lambda: sc.transcribe_batch(audios, sample_rate=16000, batch_size=b, **opts)  # noqa: E731
            res = run()  # warm-up + graphs
            toks = [[t for s in r.segments for t in s.tokens] for r in res]
            assert {len(t) for t in toks} == {NEW_TOKENS}, [len(t) for t in toks]
            walls = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                run()
                walls.append(time.perf_counter() - t0)
            results[(mode, b)] = (float(np.median(walls)), toks[0])
            if args.trace:
                kernel_profile(run, f"{mode}, batch {b}")
            env = " ".join(f"{k[11:]}={v}" for k, v in sorted(os.environ.items())
                           if k.startswith("SPEECHCORE_") and k != "SPEECHCORE_DECODE_FUSION")
            pts = f", prepare_threads {pt}" if not args.direct else ""
            print(f"[{mode}, pdl {'on' if pdl else 'off'}{', direct' if args.direct else ''}{pts}{', ' + env if env else ''}] "
                  f"batch {b}: median {np.median(walls) * 1e3:.1f} ms "
                  f"(min {min(walls) * 1e3:.1f}) per batch of 30 s windows, {NEW_TOKENS} tokens each", flush=True)
        del sc
    for b in [int(x) for x in args.batches.split(",")]:
        if ("fused", b) in results and ("unfused", b) in results:
            same = results[("fused", b)][1] == results[("unfused", b)][1]
            print(f"batch {b}: fused tokens == unfused tokens: {same}")


if __name__ == "__main__":
    main()
