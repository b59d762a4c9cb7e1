"""The engine on the GPU (issue 4): offline throughput on a clip set and on long files, and serving
latency under load, speechcore vs Hugging Face transformers' ASR pipeline, same seeded weights,
same audio files, same number of generated tokens per 30 s window, in one script.

    python benchmarks/engine_gpu.py [--model large-v3|large-v3-turbo|tiny-test] [--device cuda|cpu]
        [--clips 1000] [--long-files 20] [--long-minutes 5-10] [--hf-batches 16,64,128]
        [--serve-requests 200] [--loads 0.25,0.5,0.75,1.0] [--skip-transformers] [--skip-serving]

CPU smoke test (a 2 + 2 layer model, minutes on two cores):

    PYTHONPATH=python python3 benchmarks/engine_gpu.py --model tiny-test --device cpu --clips 8 \\
        --long-files 1 --long-minutes 1 --hf-batches 4 --serve-requests 8 --threads 1

Model: seeded weights of the published shapes (vocabulary 51,865: the offline multilingual
tokenizer in .cache/tokenizer, as in whisper_gpu.py), saved once with save_pretrained (bf16 on
CUDA, float32 on the CPU) and loaded from that directory by both systems: speechcore in bfloat16
(float32 on the CPU), transformers with dtype bfloat16 (float32 on the CPU) and SDPA attention.

Audio: WAV files (16 kHz, 16-bit) written to a temporary directory, so both systems decode files
(libsndfile through soundfile in both; the pipeline's own file loader needs the ffmpeg binary, so
it is given a torch Dataset whose items are read with soundfile inside the pipeline's DataLoader
worker, i.e. inside the timed region). The signal is real speech when the pocketsphinx test clips
are present (.cache/pocketsphinx, see tests/conftest.py: all clips concatenated with short gaps
and looped; each file is a seeded slice of that loop), else seeded noise. Clip set: --clips files
of uniform(2, 20) s; long set: --long-files files of whole seconds in --long-minutes.

Decode length: with random weights neither system would end a window by itself, so both are
forced to the same count. Each clip (one window) decodes T = 3 tokens per second of audio
(--tokens-per-second), rounded to a multiple of --token-bucket (10) tokens, at least one bucket;
every window of a long file decodes T = 3 x 30 = 90 tokens. Both systems decode greedily with the
prompt <|startoftranscript|><|en|><|transcribe|><|notimestamps|> and the same suppressed tokens:
end-of-text, every special and timestamp token (ids >= end-of-text) and the whitespace-only text
tokens. Random weights could otherwise emit timestamp pairs (speechcore's long-form loop would
then split segments and seek by them, changing the windows) or whitespace (a window whose text is
empty yields no segment, so its tokens could not be counted); masking them in both keeps every
window a plain T-token text window in both systems.
- speechcore: suppress_tokens=<that list>, without_timestamps, condition_on_previous_text=False,
  no_speech/log-prob/compression thresholds off, max_new_tokens = 2T - 4 (its CTranslate2 rule
  stops a window at min(max_length / 2, max_length - prompt + 1) tokens, max_length = prompt +
  max_new_tokens, prompt = 4), checked on every result (each window's segment has T tokens);
- transformers: generation_config.suppress_tokens=<that list>, generate_kwargs language="en",
  task="transcribe", min_new_tokens = max_new_tokens = T, num_beams=1, greedy; one pipeline call
  per distinct T (a generate call takes one length, so its batches cannot mix lengths; each
  call's last batch is partial), checked on every generate call (wrapped to count rows and new
  tokens). The speechcore engine gets every clip at once in the drawn order (lengths mixed).

(a) Offline throughput. transformers: pipeline("automatic-speech-recognition") over the files,
batched (each --hf-batches value is timed; the best is the reference), num_workers=1 (the most a
ChunkPipeline allows: audio decoding and log-mel on the CPU in one worker process, overlapped with
the GPU). speechcore: the engine (Model.submit of every file at once, max_new_tokens per request,
results awaited; log-mel on the GPU) and, for reference, Model.transcribe_batch (round-based
batches, one call per distinct T like the pipeline). Each system gets an untimed warm-up first.

Windowing of the long files (what differs, and what does not):
- speechcore runs its long-form loop per file. Without timestamps every window consumes a full
  30 s, so the windows start at 0, 30, 60, ... s; the last one holds the remainder (zero-padded).
  Windows of one file are decoded one after another (the next window is admitted when the previous
  one finished, as the loop's seek and prompt depend on it in general); files advance concurrently.
- transformers: chunk_length_s=30 with stride_length_s=--hf-stride-s. The default here, 0, gives
  chunks at exactly the same offsets (so both decode the same windows: both counts are printed),
  but independent of each other, so the pipeline batches windows of one file together;
  its text is then merged by the pipeline. The pipeline's own default stride (chunk/6 = 5 s each
  side) decodes overlapping 30 s chunks every 20 s, i.e. 1.5x the windows for the same audio;
  run with --hf-stride-s 5 to measure that (RTFx counts audio seconds either way).
- Short windows: transformers zero-pads the audio to 30 s before its log-mel (normalized over the
  padded window); speechcore, like OpenAI's and faster-whisper's code, computes the log-mel of the
  audio and zero-pads the features. Both encode a full 30 s window, so the work is the same, but
  the encoder input of a clip differs, and so can its tokens (not their number).

Cross-check (printed): the tokens of the engine and of the pipeline are compared on the full 30 s
windows of the first long file (identical in float32 on the CPU: same prompt, masks and length)
and on the warm-up clips (expected to differ in part, see above; in bf16 batch-dependent rounding
can also change a pick).

(b) Serving: --serve-requests requests (clips of the clip set, in order, cycling) arrive as a
seeded Poisson process (or at fixed intervals, --arrivals uniform) at --loads fractions of the
engine's offline peak on the clip set (requests/s from (a)); each is submitted with Model.submit
when it arrives (its WAV read included). Latency = result time - scheduled arrival time (so a
late submission is counted). Per load: achieved requests/s, RTFx, p50/p99/max latency. Baseline:
the same requests sent one by one with Model.transcribe (single-request latency). Reported:
p99 at a load / p99 one by one (and p50 / p50).

Peak memory: each library's allocator peak during the phase (torch.cuda.max_memory_allocated,
speechcore peak_bytes_in_use), weights included. RTFx: audio seconds / wall seconds.
Targets (issue 4): >= 3x transformers' best throughput on the clip set and on the long files;
p99 at 50% of peak < 2x the single-request p99.

Runtime on the H200 with the defaults (1,000 clips, 20 files of 5-10 min, three pipeline batch
sizes, 200 serving requests per load, large-v3): estimated at 5-7 minutes from the per-window
figures in RESULTS.md (model creation and loading included; not yet measured); the phases print
their times as they finish. Pass --hf-batches 64,128 or --clips 500 to shorten it.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import transformers

import speechcore
import whisper_gpu  # noqa: E402 (benchmarks/ is on sys.path when run as a script)

REPO = Path(__file__).resolve().parent.parent
# the published shapes and vocabulary of whisper_gpu.py, plus a tiny one for CPU smoke tests
SHAPES = dict(whisper_gpu.SHAPES, **{
    "tiny-test": dict(d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
                      decoder_attention_heads=2, encoder_ffn_dim=256, decoder_ffn_dim=256, num_mel_bins=80),
})
VOCAB = whisper_gpu.VOCAB
SR = 16000
WINDOW_S = 30


# ---- setup: weights, audio ---------------------------------------------------------------------

def make_model_dir(shape: dict, out: Path, tok_json: Path, device: str, seed: int) -> None:
    """Seeded weights of this shape, saved with save_pretrained (bf16 for CUDA, float32 for the CPU),
    with the multilingual tokenizer and a Whisper feature-extractor config."""
    torch.manual_seed(seed)
    cfg = transformers.WhisperConfig(vocab_size=VOCAB, max_source_positions=1500, max_target_positions=448, **shape)
    with torch.device(device):  # initializing 1.5 B parameters is much faster on the GPU
        model = transformers.WhisperForConditionalGeneration(cfg).eval()
    if device == "cuda":
        model = model.to(torch.bfloat16)
    model.save_pretrained(str(out), safe_serialization=True)
    del model
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    shutil.copy(tok_json, out / "tokenizer.json")
    transformers.WhisperFeatureExtractor(feature_size=shape["num_mel_bins"]).save_pretrained(str(out))


def pocketsphinx_dir() -> Path | None:
    for c in (os.environ.get("SPEECHCORE_TESTDATA"), REPO / ".cache/pocketsphinx/usr/share/pocketsphinx/test/data",
              "/usr/share/pocketsphinx/test/data"):
        if c and (Path(c) / "librivox").is_dir():
            return Path(c)
    return None


def speech_loop(rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """The signal files are cut from: real speech clips (shuffled, 0.2-0.8 s gaps) or seeded noise."""
    d = pocketsphinx_dir()
    clips = sorted((d / "librivox").glob("*.wav")) + sorted((d / "cards").glob("*.wav")) if d else []
    parts = []
    for i in rng.permutation(len(clips)):
        a, sr = sf.read(str(clips[i]), dtype="float32", always_2d=False)
        if sr != SR or a.ndim != 1:
            continue
        parts += [a, (1e-3 * rng.standard_normal(int(SR * rng.uniform(0.2, 0.8)))).astype(np.float32)]
    if parts:
        loop = np.concatenate(parts)
        return loop, f"real speech ({len(parts) // 2} pocketsphinx clips, {len(loop) / SR:.1f} s, looped)"
    return (0.1 * rng.standard_normal(SR * 60)).astype(np.float32), "seeded noise (no pocketsphinx clips found)"


def cut(loop: np.ndarray, start: int, n: int) -> np.ndarray:
    reps = (start + n) // len(loop) + 1
    return np.tile(loop, reps)[start:start + n]


def bucket_tokens(seconds: float, tps: float, step: int) -> int:
    return max(step, step * int(round(tps * min(seconds, WINDOW_S) / step)))


def write_sets(args, root: Path) -> tuple[list[dict], list[dict], str]:
    """Clip set and long set: dicts with path, seconds, tokens (per window), windows."""
    rng = np.random.default_rng(args.seed)
    loop, source = speech_loop(rng)
    (root / "clips").mkdir(exist_ok=True)
    (root / "long").mkdir(exist_ok=True)
    clips, longs = [], []
    for i in range(args.clips):
        n = int(round(SR * rng.uniform(2.0, 20.0)))
        p = root / "clips" / f"clip{i:04d}.wav"
        sf.write(str(p), cut(loop, int(rng.integers(len(loop))), n), SR, subtype="PCM_16")
        clips.append(dict(path=str(p), seconds=n / SR, tokens=bucket_tokens(n / SR, args.tokens_per_second,
                                                                             args.token_bucket), windows=1))
    lo, hi = args.long_range
    long_t = int(round(args.tokens_per_second * WINDOW_S))
    for i in range(args.long_files):
        secs = int(rng.integers(int(round(lo * 60)), int(round(hi * 60)) + 1))
        if secs % WINDOW_S == 0:  # no boundary case: the last window holds 1-29 s in both systems
            secs += 1
        p = root / "long" / f"long{i:02d}.wav"
        sf.write(str(p), cut(loop, int(rng.integers(len(loop))), SR * secs), SR, subtype="PCM_16")
        longs.append(dict(path=str(p), seconds=float(secs), tokens=long_t, windows=math.ceil(secs / WINDOW_S)))
    return clips, longs, source


def by_tokens(items: list[dict]) -> list[tuple[int, list[dict]]]:
    groups: dict[int, list[dict]] = {}
    for it in items:
        groups.setdefault(it["tokens"], []).append(it)
    return sorted(groups.items())


# ---- transformers -------------------------------------------------------------------------------

class WavFiles(torch.utils.data.Dataset):
    """Paths read with soundfile when the pipeline's DataLoader asks for them (inside the timed run)."""

    def __init__(self, paths: list[str]):
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict:
        audio, rate = sf.read(self.paths[i], dtype="float32", always_2d=False)
        return {"raw": audio, "sampling_rate": rate}


def run_transformers(args, model_dir: Path, tok_json: Path, ids: dict, clips: list[dict], longs: list[dict]) -> dict:
    cuda = args.device == "cuda"
    dtype = torch.bfloat16 if cuda else torch.float32
    hf = transformers.WhisperForConditionalGeneration.from_pretrained(
        str(model_dir), dtype=dtype, attn_implementation="sdpa").to(args.device).eval()
    hf.generation_config = transformers.GenerationConfig(
        decoder_start_token_id=ids["sot"], bos_token_id=ids["eot"], eos_token_id=ids["eot"], pad_token_id=ids["eot"],
        lang_to_id={"<|en|>": ids["en"]}, task_to_id={"transcribe": ids["transcribe"], "translate": ids["translate"]},
        no_timestamps_token_id=ids["no_timestamps"], is_multilingual=True, suppress_tokens=ids["suppress"])
    try:
        tok = transformers.WhisperTokenizer(tokenizer_file=str(tok_json))
    except Exception:  # noqa: BLE001 - other transformers versions: the same tokenizer.json via the model dir
        tok = transformers.AutoTokenizer.from_pretrained(str(model_dir))
    tok.pad_token = "<|endoftext|>"  # batching needs a pad token
    fe = transformers.WhisperFeatureExtractor.from_pretrained(str(model_dir))
    pipe = transformers.pipeline("automatic-speech-recognition", model=hf, tokenizer=tok, feature_extractor=fe,
                                 device=args.device)

    # Every generate call is checked: exactly the expected number of new tokens per row (some versions
    # return the 4 prompt tokens in front of them).
    count = dict(expect=0, rows=0, tokens=0, keep=None)
    generate = hf.generate

    def counted_generate(*a, **k):
        out = generate(*a, **k)
        seq = out["sequences"] if isinstance(out, dict) else out
        if seq.shape[1] == count["expect"] + 4:
            seq = seq[:, 4:]
        if seq.shape[1] != count["expect"]:
            raise AssertionError(f"transformers generated {seq.shape[1]} tokens per row, expected {count['expect']}")
        count["rows"] += seq.shape[0]
        count["tokens"] += seq.shape[0] * seq.shape[1]
        if count["keep"] is not None:
            count["keep"] += seq.tolist()
        return out

    hf.generate = counted_generate

    def gen(t):
        return dict(language="en", task="transcribe", min_new_tokens=t, max_new_tokens=t, num_beams=1, do_sample=False)

    def run_clips(items, bs):
        n = 0
        for t, group in by_tokens(items):
            count["expect"] = t
            for _ in pipe(WavFiles([g["path"] for g in group]), batch_size=bs, num_workers=args.hf_workers,
                          generate_kwargs=gen(t)):
                n += 1
        assert n == len(items), (n, len(items))

    def run_long(items, bs):
        count["expect"] = items[0]["tokens"]
        n = 0
        for _ in pipe(WavFiles([g["path"] for g in items]), batch_size=bs, num_workers=args.hf_workers,
                      chunk_length_s=WINDOW_S, stride_length_s=args.hf_stride_s, generate_kwargs=gen(count["expect"])):
            n += 1
        assert n == len(items), (n, len(items))

    rows = {}
    with torch.inference_mode():
        warm = clips[:max(args.hf_batches)]
        count["keep"] = []
        run_clips(warm, max(args.hf_batches))  # warm-up, keeping its tokens for the cross-check
        order = [g["path"] for _, group in by_tokens(warm) for g in group]
        rows["warm_tokens"] = dict(zip(order, count["keep"]))
        if longs:  # the windows of the first long file, in order, for the same cross-check
            count["keep"] = []
            run_long(longs[:1], max(args.hf_batches))
            rows["warm_tokens"][longs[0]["path"]] = count["keep"]
        count["keep"] = None
        for name, items, fn in (("clips", clips, run_clips), ("long", longs, run_long)):
            if not items:
                continue
            for bs in args.hf_batches:
                count.update(rows=0, tokens=0)
                if cuda:
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                t0 = time.perf_counter()
                try:
                    fn(items, bs)
                except torch.cuda.OutOfMemoryError:
                    rows[(name, bs)] = None
                    torch.cuda.empty_cache()
                    continue
                if cuda:
                    torch.cuda.synchronize()
                wall = time.perf_counter() - t0
                gib = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
                rows[(name, bs)] = dict(wall=wall, windows=count["rows"], tokens=count["tokens"], gib=gib)
                print(f"  transformers {name} batch {bs}: {wall:.2f} s, {count['rows']} windows", flush=True)
    return rows  # the caller frees the model (nothing here may still hold it)


# ---- speechcore ---------------------------------------------------------------------------------

def sc_peak_reset(cuda: bool) -> None:
    if cuda:
        speechcore._C.cuda_memory_reset_peak()


def sc_peak(cuda: bool) -> float:
    return speechcore._C.cuda_memory_stats()["peak_bytes_in_use"] / 2**30 if cuda else None


def max_new_tokens(t: int) -> int:
    """max_new_tokens that makes speechcore stop after exactly t tokens behind a 4-token prompt."""
    assert t >= 4, t
    return 2 * t - 4


def check_tokens(items: list[dict], results: list) -> tuple[int, int]:
    """Every window of every result decoded exactly its T tokens; returns (windows, tokens)."""
    windows = tokens = 0
    for it, r in zip(items, results):
        lens = [len(s.tokens) for s in r.segments]
        if lens != [it["tokens"]] * it["windows"]:
            raise AssertionError(f"speechcore {it['path']}: tokens per window {lens}, expected "
                                 f"{it['windows']} windows of {it['tokens']}")
        windows += len(lens)
        tokens += sum(lens)
    return windows, tokens


def run_speechcore(args, model_dir: Path, ids: dict, clips: list[dict], longs: list[dict],
                   hf_tokens: dict) -> tuple[dict, dict, dict]:
    cuda = args.device == "cuda"
    sc = speechcore.load(str(model_dir), device=args.device, compute_type="bfloat16" if cuda else "float32",
                         threads=None if cuda else args.threads)
    opts = dict(language="en", without_timestamps=True, suppress_tokens=ids["suppress"], suppress_blank=False,
                condition_on_previous_text=False, no_speech_threshold=None, log_prob_threshold=None,
                compression_ratio_threshold=None, beam_size=1, temperature=0.0)  # greedy, as the baselines
    sc.start_engine(max_batch=args.max_batch, max_encode_batch=args.max_encode_batch)

    def engine_run(items):
        futures = [sc.submit(it["path"], max_new_tokens=max_new_tokens(it["tokens"]), **opts) for it in items]
        return [f.result() for f in futures]

    def batch_run(items):
        out: dict[str, object] = {}
        for t, group in by_tokens(items):
            res = sc.transcribe_batch([g["path"] for g in group], batch_size=args.sc_batch,
                                      max_new_tokens=max_new_tokens(t), **opts)
            out.update({g["path"]: r for g, r in zip(group, res)})
        return [out[it["path"]] for it in items]

    warm = clips[:64] or longs[:1]
    warm_res = engine_run(warm)
    check_tokens(warm, warm_res)
    check_tokens(warm, batch_run(warm))
    rows = {}
    # cross-check with transformers' tokens (same prompt, masks and length): the clips both warmed up on
    both = [(it, r) for it, r in zip(warm, warm_res) if it["path"] in hf_tokens and it["windows"] == 1]
    rows["agreement_clips"] = (sum(r.segments[0].tokens == hf_tokens[it["path"]] for it, r in both), len(both))
    for name, items in (("clips", clips), ("long", longs)):
        if not items:
            continue
        for path, fn in (("engine", engine_run), ("transcribe_batch", batch_run)):
            sc_peak_reset(cuda)
            t0 = time.perf_counter()
            res = fn(items)
            wall = time.perf_counter() - t0
            windows, tokens = check_tokens(items, res)
            if name == "long" and path == "engine" and items[0]["path"] in hf_tokens and not args.hf_stride_s:
                # the full 30 s windows of the first long file (the last, partial one is left out)
                hf_w, sc_w = hf_tokens[items[0]["path"]], [s.tokens for s in res[0].segments]
                n = min(len(hf_w), len(sc_w)) - 1
                rows["agreement_long"] = (sum(hf_w[k] == sc_w[k] for k in range(n)), n)
            rows[(name, path)] = dict(wall=wall, windows=windows, tokens=tokens, gib=sc_peak(cuda))
            print(f"  speechcore {name} {path}: {wall:.2f} s, {windows} windows", flush=True)

    serving = {}
    if not args.skip_serving and clips:
        serving = run_serving(args, sc, opts, clips, rows[("clips", "engine")])
    info = dict(sc.info)
    sc.close()
    return rows, serving, info


def run_serving(args, sc, opts: dict, clips: list[dict], offline: dict) -> dict:
    cuda = args.device == "cuda"
    n = args.serve_requests
    reqs = [clips[i % len(clips)] for i in range(n)]
    audio_s = sum(r["seconds"] for r in reqs)
    peak_rps = len(clips) / offline["wall"]

    # Baseline: the same requests one by one (Model.transcribe), after a short warm-up.
    for r in reqs[:5]:
        sc.transcribe(r["path"], max_new_tokens=max_new_tokens(r["tokens"]), **opts)
    sc_peak_reset(cuda)
    single = []
    for r in reqs:
        t0 = time.perf_counter()
        res = sc.transcribe(r["path"], max_new_tokens=max_new_tokens(r["tokens"]), **opts)
        single.append(time.perf_counter() - t0)
        check_tokens([r], [res])
    out = dict(peak_rps=peak_rps, requests=n, audio_s=audio_s, arrivals=args.arrivals,
               single=dict(lat=single, wall=sum(single), gib=sc_peak(cuda)), loads={})
    print(f"  one by one: {n} requests, p50 {np.percentile(single, 50):.3f} s", flush=True)

    rng = np.random.default_rng(args.seed + 1)
    for load in args.loads:
        rate = load * peak_rps
        if args.arrivals == "poisson":
            gaps = rng.exponential(1.0 / rate, n)
            arrivals = np.concatenate([[0.0], np.cumsum(gaps[:-1])])
        else:
            arrivals = np.arange(n) / rate
        done = [0.0] * n
        futures = [None] * n
        sc_peak_reset(cuda)
        base = time.perf_counter() + 0.05
        for i, r in enumerate(reqs):
            wait = base + arrivals[i] - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            f = sc.submit(r["path"], max_new_tokens=max_new_tokens(r["tokens"]), **opts)
            f.add_done_callback(lambda _f, i=i: done.__setitem__(i, time.perf_counter()))
            futures[i] = f
        results = [f.result() for f in futures]
        # the callbacks run on the engine thread: wait until the last one has recorded its time
        t_wait = time.perf_counter()
        while min(done) == 0.0 and time.perf_counter() - t_wait < 10:
            time.sleep(0.001)
        check_tokens(reqs, results)
        lat = [done[i] - (base + arrivals[i]) for i in range(n)]
        wall = max(done) - base
        out["loads"][load] = dict(rate=rate, lat=lat, wall=wall, gib=sc_peak(cuda))
        print(f"  load {load:.0%}: offered {rate:.1f} req/s, p99 {np.percentile(lat, 99):.3f} s", flush=True)
    return out


# ---- report -------------------------------------------------------------------------------------

def fmt_gib(g) -> str:
    return f"{'-':>6}" if g is None else f"{g:6.1f}"


def report(args, cfg_line: str, clips, longs, hf_rows, sc_rows, serving) -> dict:
    summary: dict = dict(config=cfg_line, offline={}, serving={})
    print("\n" + cfg_line)
    print("\n(a) offline throughput (RTFx = audio s / wall s; 'vs hf' = speechcore throughput / transformers' best)")
    print(f"{'set':>5} | {'system':<38} | {'files':>5} {'audio s':>9} {'windows':>7} {'tokens':>8} | "
          f"{'wall s':>8} {'RTFx':>7} {'files/s':>8} {'GiB':>6} | {'vs hf':>6}")
    for name, items in (("clips", clips), ("long", longs)):
        if not items:
            continue
        audio = sum(it["seconds"] for it in items)
        best = None
        for bs in args.hf_batches:
            r = hf_rows.get((name, bs), "skip")
            if r == "skip":
                continue
            label = f"transformers pipeline, batch {bs}"
            if r is None:
                print(f"{name:>5} | {label:<38} | {len(items):5d} {audio:9.0f} {'':>7} {'':>8} | {'OOM':>8}")
                continue
            if best is None or r["wall"] < best[1]["wall"]:
                best = (bs, r)
            print(f"{name:>5} | {label:<38} | {len(items):5d} {audio:9.0f} {r['windows']:7d} {r['tokens']:8d} | "
                  f"{r['wall']:8.2f} {audio / r['wall']:7.0f} {len(items) / r['wall']:8.2f} {fmt_gib(r['gib'])} | "
                  f"{'':>6}")
        entry = dict(audio_s=audio, files=len(items))
        if best:
            entry["transformers"] = dict(batch=best[0], **best[1], rtfx=audio / best[1]["wall"])
        for path, label in (("engine", f"speechcore engine (max_batch {args.max_batch})"),
                            ("transcribe_batch", f"speechcore transcribe_batch, batch {args.sc_batch}")):
            r = sc_rows[(name, path)]
            ratio = best[1]["wall"] / r["wall"] if best else None
            entry[path] = dict(**r, rtfx=audio / r["wall"], vs_transformers=ratio)
            print(f"{name:>5} | {label:<38} | {len(items):5d} {audio:9.0f} {r['windows']:7d} {r['tokens']:8d} | "
                  f"{r['wall']:8.2f} {audio / r['wall']:7.0f} {len(items) / r['wall']:8.2f} {fmt_gib(r['gib'])} | "
                  + (f"{ratio:5.2f}x" if best else f"{'-':>6}"))
        if best:
            hf_w = best[1]["windows"]
            sc_w = sc_rows[(name, "engine")]["windows"]
            note = "same windows" if hf_w == sc_w else f"windows differ: transformers {hf_w}, speechcore {sc_w}"
            print(f"{'':>5}   transformers' best: batch {best[0]}; {note}")
        summary["offline"][name] = entry
    agree = {k: sc_rows[f"agreement_{k}"] for k in ("long", "clips") if sc_rows.get(f"agreement_{k}", (0, 0))[1]}
    if agree:
        summary["token_agreement"] = {k: dict(identical=v[0], windows=v[1]) for k, v in agree.items()}
        print("token cross-check, speechcore engine vs transformers: identical tokens in "
              + "; ".join(f"{v[0]} of {v[1]} " + ("full 30 s windows (first long file)" if k == "long" else
                                                   "warm-up clips (< 30 s: their padded features differ)")
                          for k, v in agree.items())
              + " (float32: all full windows agree; bf16: batch-dependent rounding can change a pick)")

    if serving:
        single = serving["single"]["lat"]
        s50, s99 = np.percentile(single, 50), np.percentile(single, 99)
        print(f"\n(b) serving: {serving['requests']} clip requests ({serving['audio_s']:.0f} s of audio), "
              f"{serving['arrivals']} arrivals; offline engine peak {serving['peak_rps']:.1f} req/s; "
              f"latency = result - scheduled arrival")
        print(f"{'load':>12} | {'offered/s':>9} {'achieved/s':>10} {'RTFx':>6} | {'p50 s':>7} {'p99 s':>7} "
              f"{'max s':>7} | {'p50/1x1':>7} {'p99/1x1':>7} | {'GiB':>6}")
        wall1 = serving["single"]["wall"]
        print(f"{'one by one':>12} | {'-':>9} {serving['requests'] / wall1:10.2f} {serving['audio_s'] / wall1:6.0f} | "
              f"{s50:7.3f} {s99:7.3f} {max(single):7.3f} | {1.0:7.2f} {1.0:7.2f} | {fmt_gib(serving['single']['gib'])}")
        summary["serving"] = dict(peak_rps=serving["peak_rps"], single_p50=s50, single_p99=s99, loads={})
        for load, r in serving["loads"].items():
            p50, p99 = np.percentile(r["lat"], 50), np.percentile(r["lat"], 99)
            ach = serving["requests"] / r["wall"]
            print(f"{load:11.0%} | {r['rate']:9.2f} {ach:10.2f} {serving['audio_s'] / r['wall']:6.0f} | "
                  f"{p50:7.3f} {p99:7.3f} {max(r['lat']):7.3f} | {p50 / s50:7.2f} {p99 / s99:7.2f} | "
                  f"{fmt_gib(r['gib'])}")
            summary["serving"]["loads"][str(load)] = dict(offered_rps=r["rate"], achieved_rps=ach, p50=p50, p99=p99,
                                                         p99_vs_single=p99 / s99, gib=r["gib"])

    print("\ntargets (issue 4):")
    for name in ("clips", "long"):
        e = summary["offline"].get(name, {})
        if "transformers" in e:
            v = e["engine"]["vs_transformers"]
            print(f"  {name}: engine throughput {v:.2f}x transformers' best (target >= 3x): "
                  f"{'met' if v >= 3 else 'NOT met'}")
    half = summary["serving"].get("loads", {}).get("0.5")
    if half:
        v = half["p99_vs_single"]
        print(f"  serving at 50% of peak: p99 {half['p99']:.3f} s = {v:.2f}x the one-by-one p99 (target < 2x): "
              f"{'met' if v < 2 else 'NOT met'}")
    return summary


# ---- main ---------------------------------------------------------------------------------------

def parse_range(text: str) -> tuple[float, float]:
    lo, _, hi = text.partition("-")
    lo_f, hi_f = float(lo), float(hi or lo)
    if not 0 < lo_f <= hi_f:
        raise argparse.ArgumentTypeError(f"expected MINUTES or MIN-MAX, got {text!r}")
    return lo_f, hi_f


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="large-v3", choices=sorted(SHAPES))
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--clips", type=int, default=1000, help="clips of 2-20 s (default 1000)")
    ap.add_argument("--long-files", type=int, default=20, help="long files (default 20)")
    ap.add_argument("--long-minutes", type=parse_range, default=(5.0, 10.0), dest="long_range",
                    help="long-file length in minutes, MIN-MAX or one value (default 5-10)")
    ap.add_argument("--tokens-per-second", type=float, default=3.0, help="decode length per second of audio")
    ap.add_argument("--token-bucket", type=int, default=10, help="clip token counts rounded to multiples of this")
    ap.add_argument("--hf-batches", default="16,64,128", help="pipeline batch sizes to time (best is the reference)")
    ap.add_argument("--hf-workers", type=int, default=1, help="pipeline DataLoader workers (ChunkPipeline: 0 or 1)")
    ap.add_argument("--hf-stride-s", type=float, default=0.0,
                    help="pipeline stride_length_s for long files (0: the same 30 s windows as speechcore)")
    ap.add_argument("--max-batch", type=int, default=64, help="engine max_batch (windows decoded together)")
    ap.add_argument("--max-encode-batch", type=int, default=8, help="engine max_encode_batch")
    ap.add_argument("--sc-batch", type=int, default=64, help="speechcore transcribe_batch batch_size")
    ap.add_argument("--serve-requests", type=int, default=200, help="requests per load level (clips, cycling)")
    ap.add_argument("--loads", default="0.25,0.5,0.75,1.0", help="fractions of the engine's offline peak req/s")
    ap.add_argument("--arrivals", default="poisson", choices=("poisson", "uniform"))
    ap.add_argument("--threads", type=int, default=None,
                    help="CPU threads of both systems with --device cpu (default: all; 1 on a busy machine)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-transformers", action="store_true")
    ap.add_argument("--skip-serving", action="store_true")
    ap.add_argument("--json", help="also write the summary to this file")
    ap.add_argument("--workdir", help="where the model and audio go (default: a new temporary directory, removed)")
    args = ap.parse_args()
    args.hf_batches = [int(b) for b in args.hf_batches.split(",")]
    args.loads = [float(x) for x in args.loads.split(",")]
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda but torch sees no GPU (use --device cpu for a smoke test)")
    if args.clips < 0 or args.long_files < 0 or args.serve_requests < 1:
        ap.error("--clips and --long-files must be >= 0, --serve-requests >= 1")
    transformers.logging.set_verbosity_error()
    if args.device == "cpu" and args.threads:
        torch.set_num_threads(args.threads)
    if not (args.clips or args.long_files):
        ap.error("nothing to run: --clips and --long-files are both 0")
    if not 4 <= round(args.tokens_per_second * WINDOW_S) <= 224 or args.token_bucket < 4:
        ap.error("tokens per 30 s window must be 4-224 (speechcore: 4-token prompt + 2T - 4 <= 448 positions) "
                 "and --token-bucket >= 4")

    shape = SHAPES[args.model]
    tok_json = REPO / ".cache/tokenizer/tokenizer_multilingual.json"
    tok = speechcore._C.Tokenizer.from_file(str(tok_json))
    ids = dict(sot=tok.sot, eot=tok.eot, en=tok.language_token("en"), transcribe=tok.transcribe,
               translate=tok.translate, no_timestamps=tok.no_timestamps)
    # the same suppressed tokens in both systems: whitespace-only text tokens, then every id from
    # end-of-text on (specials and timestamps)
    ids["suppress"] = [i for i in range(tok.eot) if tok.decode([i]).strip() == ""] + list(range(tok.eot, VOCAB))
    root = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="engine_gpu_"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.perf_counter()
        model_dir = root / "model"
        model_dir.mkdir(exist_ok=True)
        make_model_dir(shape, model_dir, tok_json, args.device, args.seed)
        clips, longs, source = write_sets(args, root)
        print(f"setup: {time.perf_counter() - t0:.1f} s (weights + {len(clips) + len(longs)} WAV files)", flush=True)

        hf_rows = {}
        if not args.skip_transformers:
            t0 = time.perf_counter()
            hf_rows = run_transformers(args, model_dir, tok_json, ids, clips, longs)
            gc.collect()  # one system at a time: give transformers' GPU memory back before speechcore
            if args.device == "cuda":
                torch.cuda.empty_cache()
                left = f", torch still holds {torch.cuda.memory_reserved() / 2**30:.2f} GiB"
            else:
                left = ""
            print(f"transformers: {time.perf_counter() - t0:.1f} s{left}", flush=True)
        t0 = time.perf_counter()
        sc_rows, serving, info = run_speechcore(args, model_dir, ids, clips, longs,
                                                hf_rows.pop("warm_tokens", {}))
        print(f"speechcore: {time.perf_counter() - t0:.1f} s", flush=True)

        try:
            commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                                    text=True, timeout=10).stdout.strip() or "?"
        except (OSError, subprocess.SubprocessError):
            commit = "?"
        dev = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU ({os.cpu_count()} cores)"
        dtype = "bf16" if args.device == "cuda" else "float32"
        clip_ts = sorted({c["tokens"] for c in clips})
        cfg_line = (
            f"model {args.model} (seeded, vocab {VOCAB}, d_model {shape['d_model']}, {shape['encoder_layers']}+"
            f"{shape['decoder_layers']} layers), {dtype}, {dev}, commit {commit}, "
            f"transformers {transformers.__version__}, "
            f"torch {torch.__version__}, CUDA graphs "
            f"{'off' if os.environ.get('SPEECHCORE_CUDA_GRAPHS') == '0' else 'on'}\n"
            f"audio: {source}; {len(clips)} clips of 2-20 s ({sum(c['seconds'] for c in clips):.0f} s), "
            f"{len(longs)} long files of {args.long_range[0]:g}-{args.long_range[1]:g} min "
            f"({sum(x['seconds'] for x in longs):.0f} s)\n"
            f"decode: greedy, {len(ids['suppress'])} tokens masked (specials, timestamps, whitespace), "
            f"{args.tokens_per_second:g} tokens/s; clip windows T in {clip_ts} "
            f"(multiples of {args.token_bucket}), long-file windows T={round(args.tokens_per_second * WINDOW_S)}; "
            f"transformers: pipeline, SDPA, batches {args.hf_batches}, num_workers {args.hf_workers}, "
            f"long files chunk_length_s {WINDOW_S} stride_length_s {args.hf_stride_s:g}; speechcore: engine "
            f"max_batch {args.max_batch} max_encode_batch {args.max_encode_batch}, transcribe_batch batch_size "
            f"{args.sc_batch}, weights {info.get('weight_bytes', 0) / 2**30:.2f} GiB")
        summary = report(args, cfg_line, clips, longs, hf_rows, sc_rows, serving)
        if args.json:
            Path(args.json).write_text(json.dumps(summary, indent=1, default=float))
    finally:
        if not args.workdir:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
