"""Beam search and sampling on the GPU against greedy decoding, speechcore beside transformers,
same seeded weights, one 30 s window, exactly 100 generated tokens (end-of-text suppressed, so
every beam and every candidate runs all 100 steps), in one script.

    python benchmarks/beam_gpu.py [--model large-v3|large-v3-turbo] [--beams 5] [--repeats 5] [--batch 16]

Reports the wall time of one window decoded greedily, with beam_size beams and with best_of
candidates sampled at temperature 0.5, and each one's cost relative to greedy, for speechcore
(transcribe(), bf16) and transformers (generate(), bf16, SDPA: num_beams / do_sample with
num_return_sequences) on the same GPU; and for speechcore's engine, the same window through
submit() and --batch different windows submitted together (each beam or candidate one row of
the engine's decoder batch).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
import transformers

import speechcore
from whisper_gpu import NEW_TOKENS, SHAPES, VOCAB, timed


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="large-v3", choices=sorted(SHAPES))
    ap.add_argument("--beams", type=int, default=5, help="beam_size, and best_of for sampling")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=16, help="windows submitted together to the engine")
    args = ap.parse_args()
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
    k = args.beams

    hf = model.to("cuda", dtype=torch.bfloat16)
    hf.config._attn_implementation = "sdpa"
    feats = torch.from_numpy(np.ascontiguousarray(mel))[None].to("cuda", torch.bfloat16)
    prompt = torch.tensor([[sot, en, transcribe, nots]], device="cuda")
    base = dict(max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, decoder_input_ids=prompt)
    modes = {
        "greedy": dict(do_sample=False, num_beams=1),
        f"beam {k}": dict(do_sample=False, num_beams=k),
        f"sampling best_of {k}": dict(do_sample=True, temperature=0.5, num_return_sequences=k),
    }
    # transformers' generic generate (WhisperForConditionalGeneration.generate's long-form
    # bookkeeping fails with beams / several returned sequences in 5.17)
    generate = super(transformers.WhisperForConditionalGeneration, hf).generate
    hf_t = {}
    with torch.no_grad():
        for name, g in modes.items():
            run = lambda g=g: generate(input_features=feats, **base, **g)  # noqa: E731
            try:
                out = run()
                assert out.shape[-1] in (NEW_TOKENS, NEW_TOKENS + 4), out.shape
                hf_t[name] = timed(run, args.repeats)
            except Exception as e:  # noqa: BLE001 - report and go on: speechcore's ratios still count
                print(f"transformers {name}: {type(e).__name__}: {e}")
                hf_t[name] = float("nan")
    del hf, model, feats
    torch.cuda.empty_cache()

    sc = speechcore.load(str(tmp), device="cuda", compute_type="bfloat16")
    sc.start_engine(max_batch=max(64, args.batch * k))  # every window's beams in one decoder batch
    opts = dict(language="en", without_timestamps=True, suppress_tokens=[eot], suppress_blank=False,
                no_speech_threshold=None, log_prob_threshold=None, compression_ratio_threshold=None,
                condition_on_previous_text=False, max_new_tokens=2 * NEW_TOKENS - 4)
    sc_modes = {
        "greedy": dict(beam_size=1, temperature=0.0),
        f"beam {k}": dict(beam_size=k, temperature=0.0),
        f"sampling best_of {k}": dict(temperature=0.5, best_of=k, seed=1),
    }
    sc_t, eng_t, eng_b = {}, {}, {}
    many = [(0.1 * np.random.default_rng(100 + i).standard_normal(16000 * 30)).astype(np.float32)
            for i in range(args.batch)]

    def tokens(r):
        return sum(len(s.tokens) for s in r.segments)

    def engine_batch(o):
        futures = [sc.submit(a, sample_rate=16000, **opts, **o) for a in many]
        return [f.result() for f in futures]

    for name, o in sc_modes.items():
        run = lambda o=o: sc.transcribe(audio, sample_rate=16000, **opts, **o)  # noqa: E731
        assert tokens(run()) == NEW_TOKENS, name  # warm-up (+ graph capture)
        sc_t[name] = timed(run, args.repeats)
        one = lambda o=o: sc.submit(audio, sample_rate=16000, **opts, **o).result()  # noqa: E731
        assert tokens(one()) == NEW_TOKENS, name
        eng_t[name] = timed(one, args.repeats)
        assert all(tokens(r) == NEW_TOKENS for r in engine_batch(o)), name
        eng_b[name] = timed(lambda o=o: engine_batch(o), max(1, args.repeats // 2))
    sc.close()
    shutil.rmtree(tmp, ignore_errors=True)

    print(f"\nmodel {args.model} (seeded), bf16, {torch.cuda.get_device_name()}, one 30 s window, "
          f"{NEW_TOKENS} tokens, median of {args.repeats}")
    print(f"{'mode':<22} | {'transformers s':>14} {'x greedy':>9} | {'speechcore s':>12} {'x greedy':>9} | speedup")
    for name in modes:
        print(f"{name:<22} | {hf_t[name]:>14.3f} {hf_t[name] / hf_t['greedy']:>8.2f}x | {sc_t[name]:>12.3f} "
              f"{sc_t[name] / sc_t['greedy']:>8.2f}x | {hf_t[name] / sc_t[name]:.2f}x")
    print(f"\nspeechcore engine (submit): one window, and {args.batch} windows submitted together")
    print(f"{'mode':<22} | {'one s':>8} {'x greedy':>9} | {f'{args.batch} windows s':>14} {'x greedy':>9} {'RTFx':>7}")
    for name in modes:
        print(f"{name:<22} | {eng_t[name]:>8.3f} {eng_t[name] / eng_t['greedy']:>8.2f}x | {eng_b[name]:>14.3f} "
              f"{eng_b[name] / eng_b['greedy']:>8.2f}x {args.batch * 30 / eng_b[name]:>7.0f}")


if __name__ == "__main__":
    main()
