"""Whisper on the GPU, speechcore vs Hugging Face transformers, same seeded weights, same
30 s windows, exactly 100 generated tokens per window, batches of windows, in one script.

    python benchmarks/whisper_gpu.py [--model large-v3|large-v3-turbo] [--batches 1,16,64,128,256]

Shapes from the published configs, except the vocabulary: 51,865 (the multilingual tokenizer
that ships offline) instead of large-v3's 51,866. Both systems decode greedily with end-of-text
suppressed, prompt <|startoftranscript|><|en|><|transcribe|><|notimestamps|>.

transformers (torch on the device, bf16, SDPA) is given the log-mel features already on the
GPU; speechcore is given the audio (its time includes the log-mel frontend, on the GPU).
Per batch size: wall seconds for the batch, RTFx (batch x 30 s / wall), latency per window at
batch 1, peak GPU memory (each library's allocator: torch.cuda.max_memory_allocated, speechcore
peak_bytes_in_use; both include the weights), the ratio, and speechcore's fraction of a
roofline: encoder FLOPs at 750 TFLOP/s + per decode step the decoder weights once plus each
window's cross-attention K/V at 4.3 TB/s.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import transformers

import speechcore

SHAPES = {
    "large-v3": dict(d_model=1280, encoder_layers=32, decoder_layers=32, encoder_attention_heads=20,
                     decoder_attention_heads=20, encoder_ffn_dim=5120, decoder_ffn_dim=5120, num_mel_bins=128),
    "large-v3-turbo": dict(d_model=1280, encoder_layers=32, decoder_layers=4, encoder_attention_heads=20,
                           decoder_attention_heads=20, encoder_ffn_dim=5120, decoder_ffn_dim=5120, num_mel_bins=128),
}
NEW_TOKENS = 100
VOCAB = 51865
PEAK_FLOPS = 750e12
PEAK_BW = 4.3e12


def roofline_seconds(shape: dict, batch: int, prompt: int = 4) -> float:
    d, le, ld = shape["d_model"], shape["encoder_layers"], shape["decoder_layers"]
    t = 1500
    enc_flops = 2 * le * 12 * d * d * t + le * 4 * t * t * d + 2 * (3 * 128 * d * 3000 + 3 * d * d * t)
    dec_weight_bytes = 2 * (ld * 14 * d * d + VOCAB * d)
    cross_bytes = 2 * ld * t * 2 * d
    steps = NEW_TOKENS
    return batch * enc_flops / PEAK_FLOPS + steps * (dec_weight_bytes + batch * cross_bytes) / PEAK_BW


def timed(fn, repeats):
    ts = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="large-v3", choices=sorted(SHAPES))
    ap.add_argument("--batches", default="1,16,64,128,256")
    ap.add_argument("--repeats", type=int, default=3, help="median of this many runs (1 for batches >= 64)")
    ap.add_argument("--skip-transformers", action="store_true")
    ap.add_argument("--prepare-threads", type=int, default=0, help="the engine's prepare_threads (0 = automatic)")
    args = ap.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    shape = SHAPES[args.model]
    tok_json = Path(__file__).resolve().parent.parent / ".cache/tokenizer/tokenizer_multilingual.json"
    tok = speechcore._C.Tokenizer.from_file(str(tok_json))
    eot, sot, en, transcribe, nots = tok.eot, tok.sot, tok.language_token("en"), tok.transcribe, tok.no_timestamps
    torch.manual_seed(0)
    cfg = transformers.WhisperConfig(vocab_size=VOCAB, max_source_positions=1500, max_target_positions=448, **shape)
    model = transformers.WhisperForConditionalGeneration(cfg).eval()
    tmp = Path(tempfile.mkdtemp())
    model.save_pretrained(str(tmp), safe_serialization=True)
    shutil.copy(tok_json, tmp / "tokenizer.json")
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal(16000 * 30)).astype(np.float32)
    mel = speechcore._C.log_mel_spectrogram(audio, n_mels=128, padding=160)[:, :3000]
    reps = lambda b: args.repeats if b < 64 else 1  # noqa: E731

    hf_rows = {}
    if not args.skip_transformers:
        hf = model.to("cuda", dtype=torch.bfloat16)
        hf.config._attn_implementation = "sdpa"
        gen = dict(max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False, num_beams=1)
        with torch.no_grad():
            for b in batches:
                feats = torch.from_numpy(np.ascontiguousarray(mel))[None].expand(b, -1, -1).to("cuda", torch.bfloat16)
                prompt = torch.tensor([[sot, en, transcribe, nots]], device="cuda").expand(b, -1)
                run = lambda: hf.generate(feats, decoder_input_ids=prompt, **gen)  # noqa: E731
                try:
                    out = run()  # warm-up
                    assert out.shape[1] in (NEW_TOKENS, NEW_TOKENS + 4), out.shape
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                    wall = timed(run, reps(b))
                    hf_rows[b] = (wall, torch.cuda.max_memory_allocated() / 2**30)
                except torch.cuda.OutOfMemoryError:
                    hf_rows[b] = None
                del feats
                torch.cuda.empty_cache()
        del hf
    del model
    torch.cuda.empty_cache()

    sc = speechcore.load(str(tmp), device="cuda", compute_type="bfloat16")
    opts = dict(language="en", without_timestamps=True, suppress_tokens=[eot], suppress_blank=False,
                no_speech_threshold=None, condition_on_previous_text=False, max_new_tokens=2 * NEW_TOKENS - 4,
                beam_size=1, temperature=0.0)  # greedy, as the baselines
    sc_rows = {}
    for b in batches:
        audios = [audio] * b
        if b == 1:  # latency: one transcribe() call (the direct window path, no engine)
            def run():
                return [sc.transcribe(audio, sample_rate=16000, **opts)]
        else:  # throughput: transcribe_batch on an engine sized for the batch, all windows admitted at once,
            # a KV pool of 8 blocks (128 positions) per window: the prompt plus NEW_TOKENS fit
            sc.start_engine(max_batch=b, max_encode_batch=b, kv_blocks=b * 8, prepare_threads=args.prepare_threads)

            def run():
                return sc.transcribe_batch(audios, sample_rate=16000, batch_size=b, **opts)
        res = run()  # warm-up (+ graph capture)
        n_tokens = {sum(len(s.tokens) for s in r.segments) for r in res}
        assert n_tokens == {NEW_TOKENS}, n_tokens
        speechcore._C.cuda_memory_reset_peak()
        wall = timed(run, reps(b))
        sc_rows[b] = (wall, speechcore._C.cuda_memory_stats()["peak_bytes_in_use"] / 2**30)

    print(f"\nmodel {args.model} (seeded, vocab {VOCAB}), bf16, {NEW_TOKENS} tokens/window, "
          f"{torch.cuda.get_device_name()}, CUDA graphs {'off' if os.environ.get('SPEECHCORE_CUDA_GRAPHS') == '0' else 'on'}")
    print(f"{'batch':>5} | {'transformers s':>14} {'RTFx':>7} {'GiB':>6} | {'speechcore s':>12} {'RTFx':>7} "
          f"{'GiB':>6} | {'speedup':>7} | {'roofline s':>10} {'fraction':>8}")
    best_hf = max((30 * b / r[0] for b, r in hf_rows.items() if r), default=float("nan"))
    for b in batches:
        sw, sm = sc_rows[b]
        roof = roofline_seconds(shape, b)
        if hf_rows.get(b):
            hw, hm = hf_rows[b]
            hf_txt, ratio = f"{hw:14.3f} {30 * b / hw:7.0f} {hm:6.1f}", f"{hw / sw:6.2f}x"
        else:
            hf_txt, ratio = f"{'OOM/skipped':>14} {'':>7} {'':>6}", f"{'-':>7}"
        print(f"{b:5d} | {hf_txt} | {sw:12.3f} {30 * b / sw:7.0f} {sm:6.1f} | {ratio} | {roof:10.3f} {roof / sw:8.2f}")
    if hf_rows:
        print(f"transformers' best RTFx over these batches: {best_hf:.0f}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
