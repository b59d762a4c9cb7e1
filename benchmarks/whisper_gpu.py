"""Whisper on the GPU, speechcore vs Hugging Face transformers, same seeded weights, same
features, exactly 100 generated tokens per 30 s window, in one script.

    python benchmarks/whisper_gpu.py [--model large-v3|large-v3-turbo] [--batches 1]

Shapes from the published configs, except the vocabulary: 51,865 (the multilingual tokenizer
that ships offline) instead of large-v3's 51,866. speechcore runs one window at a time in this
release (batching is next), so only batch 1 is compared; transformers runs bf16 + SDPA.
Prints latency per window, RTFx (30 s / latency), peak GPU memory and the ratio.
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="large-v3", choices=sorted(SHAPES))
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    tok_json = Path(__file__).resolve().parent.parent / ".cache/tokenizer/tokenizer_multilingual.json"
    tok = speechcore._C.Tokenizer.from_file(str(tok_json))
    eot, sot, en, transcribe, nots = tok.eot, tok.sot, tok.language_token("en"), tok.transcribe, tok.no_timestamps
    torch.manual_seed(0)
    cfg = transformers.WhisperConfig(vocab_size=51865, max_source_positions=1500, max_target_positions=448,
                                     **SHAPES[args.model])
    model = transformers.WhisperForConditionalGeneration(cfg).eval()
    tmp = Path(tempfile.mkdtemp())
    model.save_pretrained(str(tmp), safe_serialization=True)
    shutil.copy(tok_json, tmp / "tokenizer.json")
    audio = (0.1 * np.random.default_rng(0).standard_normal(16000 * 30)).astype(np.float32)
    mel = speechcore._C.log_mel_spectrogram(audio, n_mels=128, padding=160)[:, :3000]

    # ---- transformers: bf16, SDPA, forced 100 new tokens (EOT suppressed by min_new_tokens)
    hf = model.to("cuda", dtype=torch.bfloat16)
    hf.config._attn_implementation = "sdpa"
    feats = torch.from_numpy(np.ascontiguousarray(mel))[None].to("cuda", torch.bfloat16)
    prompt = torch.tensor([[sot, en, transcribe, nots]], device="cuda")
    gen = dict(decoder_input_ids=prompt, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False,
               num_beams=1)
    with torch.no_grad():
        hf.generate(feats, **gen)  # warm-up
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        ts = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            out = hf.generate(feats, **gen)
            torch.cuda.synchronize()
            ts.append(time.perf_counter() - t0)
    hf_lat = float(np.median(ts))
    hf_mem = torch.cuda.max_memory_allocated() / 2**30
    # transformers 5 returns the generated tokens only (4.x: prompt + generated)
    assert out.shape[1] in (NEW_TOKENS, NEW_TOKENS + prompt.shape[1]), out.shape
    del hf, model
    torch.cuda.empty_cache()

    # ---- speechcore: bf16, the same weights, one window, 100 tokens (EOT suppressed)
    sc = speechcore.load(str(tmp), device="cuda", compute_type="bfloat16")
    opts = dict(language="en", without_timestamps=True, suppress_tokens=[eot], suppress_blank=False,
                no_speech_threshold=None, condition_on_previous_text=False, max_new_tokens=2 * NEW_TOKENS - 4)
    r = sc.transcribe(audio, **opts)  # warm-up
    n_tokens = sum(len(s.tokens) for s in r.segments)
    ts = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        sc.transcribe(audio, **opts)
        ts.append(time.perf_counter() - t0)
    sc_lat = float(np.median(ts))
    sc_mem = speechcore._C.cuda_memory_stats()["peak_bytes_in_use"] / 2**30

    print(f"\nmodel {args.model} (seeded, vocab 51865), bf16, batch 1, {NEW_TOKENS} tokens/window "
          f"(speechcore generated {n_tokens}), median of {args.repeats}, {torch.cuda.get_device_name()}")
    print(f"{'system':<14} {'latency s':>10} {'RTFx':>8} {'peak GiB':>9}")
    print(f"{'transformers':<14} {hf_lat:10.3f} {30 / hf_lat:8.1f} {hf_mem:9.2f}")
    print(f"{'speechcore':<14} {sc_lat:10.3f} {30 / sc_lat:8.1f} {sc_mem:9.2f}")
    print(f"speedup (transformers latency / speechcore latency): {hf_lat / sc_lat:.2f}x")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
