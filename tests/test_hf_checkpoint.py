"""Hugging Face transformers-format checkpoints (config.json + model.safetensors): loaded by
our C++ reader and decoded greedily to the same tokens as transformers on the same weights
and the same log-mel features."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import speechcore
from speechcore import _C

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def _features(audio: np.ndarray, n_mels: int) -> np.ndarray:
    """The window features our transcriber feeds the encoder: log-mel, zero-padded to 3000 frames."""
    mel = _C.log_mel_spectrogram(audio, n_mels=n_mels, padding=160)[:, :-1][:, :3000]
    return np.pad(mel, ((0, 0), (0, 3000 - mel.shape[1])))


def _hf_greedy(model, features: np.ndarray, prompt: list[int], max_new_tokens: int, eot: int,
               suppress: list[int]) -> list[int]:
    """Greedy decoding with transformers' model (its encoder, its decoder with its KV cache),
    argmax at every step; the only logits rule is `suppress` (the timestamp tokens)."""
    with torch.no_grad():
        enc = model.get_encoder()(torch.from_numpy(features)[None])
        ids = torch.tensor([prompt])
        out = []
        past = None
        for _ in range(max_new_tokens):
            r = model(encoder_outputs=enc, decoder_input_ids=ids if past is None else ids[:, -1:],
                      past_key_values=past, use_cache=True)
            past = r.past_key_values
            logits = r.logits[0, -1].clone()
            logits[suppress] = -float("inf")
            nxt = int(logits.argmax())
            if nxt == eot:
                break
            out.append(nxt)
            ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
    return out


def _save_hf(model, directory, tokenizer_json):
    model.save_pretrained(str(directory), safe_serialization=True)
    shutil.copy(tokenizer_json, directory / "tokenizer.json")


def _compare(tmp_path, hf_model, tokenizer_json, audio, max_new_tokens=40):
    d = tmp_path / "hf"
    _save_hf(hf_model, d, tokenizer_json)
    ours = speechcore.load(str(d), threads=2)
    assert ours.info["format"] == "transformers"
    assert ours.info["device"] == "cpu" and ours.info["decoder_step"] == "cpu"
    assert ours.info["cross_absorb_min_windows"] == 0  # a CUDA half-precision mode
    tok = _C.Tokenizer.from_file(str(tokenizer_json))
    prompt = [tok.sot, tok.no_timestamps]
    # no timestamp tokens: the window's tokens then form one segment we can compare whole
    timestamps = list(range(tok.timestamp_begin, hf_model.config.vocab_size))
    # our transcribe always adds the task/start tokens to the suppressed ones (as faster-whisper)
    specials = [tok.transcribe, tok.translate, tok.sot, tok.sot_prev, tok.sot_lm, tok.no_speech]
    want = _hf_greedy(hf_model, _features(audio, hf_model.config.num_mel_bins), prompt, max_new_tokens, tok.eot,
                      timestamps + specials)
    got = ours.transcribe(audio, sample_rate=16000, language="en", without_timestamps=True, suppress_tokens=timestamps,
                          suppress_blank=False, no_speech_threshold=None,
                          condition_on_previous_text=False, beam_size=1, temperature=0.0)
    got_tokens = [t for s in got.segments for t in s.tokens]
    # ours decodes up to its own limit (224 tokens); compare over transformers' steps, and in
    # full when transformers stopped at end-of-text
    if len(want) == max_new_tokens:
        got_tokens = got_tokens[:max_new_tokens]
    return got_tokens, want, got


def test_real_weights_in_hf_format_match_transformers(tmp_path, tiny_dir, speech_audio):
    """tiny.en's real weights, renamed to transformers' layout, through both implementations."""
    from speechcore import _C as C

    ct2 = C.open_checkpoint(str(tiny_dir / "model.bin"))
    get = lambda n: np.asarray(ct2.get_float32(n))  # noqa: E731
    cfg = transformers.WhisperConfig(
        vocab_size=51864, num_mel_bins=80, d_model=384, encoder_layers=4, decoder_layers=4,
        encoder_attention_heads=6, decoder_attention_heads=6, encoder_ffn_dim=1536, decoder_ffn_dim=1536,
        max_source_positions=1500, max_target_positions=448)
    model = transformers.WhisperForConditionalGeneration(cfg).eval()
    sd = {}
    E, D = "model.encoder", "model.decoder"
    sd[f"{E}.conv1.weight"], sd[f"{E}.conv1.bias"] = get("encoder/conv1/weight"), get("encoder/conv1/bias")
    sd[f"{E}.conv2.weight"], sd[f"{E}.conv2.bias"] = get("encoder/conv2/weight"), get("encoder/conv2/bias")
    sd[f"{E}.embed_positions.weight"] = get("encoder/position_encodings/encodings")
    sd[f"{E}.layer_norm.weight"], sd[f"{E}.layer_norm.bias"] = get("encoder/layer_norm/gamma"), get("encoder/layer_norm/beta")
    sd[f"{D}.embed_tokens.weight"] = get("decoder/embeddings/weight")
    sd[f"{D}.embed_positions.weight"] = get("decoder/position_encodings/encodings")
    sd[f"{D}.layer_norm.weight"], sd[f"{D}.layer_norm.bias"] = get("decoder/layer_norm/gamma"), get("decoder/layer_norm/beta")

    def attn(dst, src, fused_qkv):
        if fused_qkv:
            w, b = get(f"{src}/linear_0/weight"), get(f"{src}/linear_0/bias")
            q, k, v = np.split(w, 3)
            bq, _, bv = np.split(b, 3)
            out = "linear_1"
        else:
            q, bq = get(f"{src}/linear_0/weight"), get(f"{src}/linear_0/bias")
            k, v = np.split(get(f"{src}/linear_1/weight"), 2)
            bv = np.split(get(f"{src}/linear_1/bias"), 2)[1]
            out = "linear_2"
        sd.update({f"{dst}.q_proj.weight": q, f"{dst}.q_proj.bias": bq, f"{dst}.k_proj.weight": k,
                   f"{dst}.v_proj.weight": v, f"{dst}.v_proj.bias": bv,
                   f"{dst}.out_proj.weight": get(f"{src}/{out}/weight"), f"{dst}.out_proj.bias": get(f"{src}/{out}/bias")})

    def ln(dst, src):
        sd[f"{dst}.weight"], sd[f"{dst}.bias"] = get(f"{src}/gamma"), get(f"{src}/beta")

    def ffn(dst, src):
        ln(f"{dst}.final_layer_norm", f"{src}/layer_norm")
        sd[f"{dst}.fc1.weight"], sd[f"{dst}.fc1.bias"] = get(f"{src}/linear_0/weight"), get(f"{src}/linear_0/bias")
        sd[f"{dst}.fc2.weight"], sd[f"{dst}.fc2.bias"] = get(f"{src}/linear_1/weight"), get(f"{src}/linear_1/bias")

    for i in range(4):
        attn(f"{E}.layers.{i}.self_attn", f"encoder/layer_{i}/self_attention", True)
        ln(f"{E}.layers.{i}.self_attn_layer_norm", f"encoder/layer_{i}/self_attention/layer_norm")
        ffn(f"{E}.layers.{i}", f"encoder/layer_{i}/ffn")
        attn(f"{D}.layers.{i}.self_attn", f"decoder/layer_{i}/self_attention", True)
        ln(f"{D}.layers.{i}.self_attn_layer_norm", f"decoder/layer_{i}/self_attention/layer_norm")
        attn(f"{D}.layers.{i}.encoder_attn", f"decoder/layer_{i}/attention", False)
        ln(f"{D}.layers.{i}.encoder_attn_layer_norm", f"decoder/layer_{i}/attention/layer_norm")
        ffn(f"{D}.layers.{i}", f"decoder/layer_{i}/ffn")
    missing, unexpected = model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in sd.items()}, strict=False)
    assert not unexpected and set(missing) <= {"proj_out.weight"}, (missing, unexpected)
    model.tie_weights()

    for name, audio in speech_audio[:3]:
        got, want, result = _compare(tmp_path, model, tiny_dir / "tokenizer.json", audio, max_new_tokens=60)
        assert got == want, name
        assert len(want) > 3 and result.text  # real words came out


@pytest.mark.parametrize("shape", [
    dict(d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
         encoder_ffn_dim=256, decoder_ffn_dim=256, num_mel_bins=80),
    dict(d_model=96, encoder_layers=1, decoder_layers=3, encoder_attention_heads=3, decoder_attention_heads=2,
         encoder_ffn_dim=384, decoder_ffn_dim=384, num_mel_bins=128),
])
def test_seeded_hf_model_matches_transformers(tmp_path, tiny_dir, speech_audio, shape):
    torch.manual_seed(1234)
    cfg = transformers.WhisperConfig(vocab_size=51864, max_source_positions=1500, max_target_positions=448, **shape)
    model = transformers.WhisperForConditionalGeneration(cfg).eval()
    with torch.no_grad():  # larger-than-default weights so greedy choices are not near-ties
        for p in model.parameters():
            p.mul_(8.0 if p.dim() > 1 else 1.0)
    got, want, _ = _compare(tmp_path, model, tiny_dir / "tokenizer.json", speech_audio[1][1], max_new_tokens=30)
    assert got == want


def test_hf_directory_errors(tmp_path, tiny_dir):
    d = tmp_path / "broken"
    d.mkdir()
    shutil.copy(tiny_dir / "tokenizer.json", d / "tokenizer.json")
    (d / "config.json").write_text(json.dumps({"model_type": "whisper", "d_model": 64}))
    (d / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    with pytest.raises(speechcore.ModelError):
        speechcore.load(str(d))
    cfg = transformers.WhisperConfig(d_model=64, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                                     decoder_attention_heads=2, encoder_ffn_dim=128, decoder_ffn_dim=128,
                                     vocab_size=51864)
    model = transformers.WhisperForConditionalGeneration(cfg)
    good = tmp_path / "good"
    _save_hf(model, good, tiny_dir / "tokenizer.json")
    # drop one weight: the spec check names it
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(good / "model.safetensors"))
    tensors.pop("model.decoder.layers.0.fc1.weight")
    save_file(tensors, str(good / "model.safetensors"))
    with pytest.raises(speechcore.ModelError, match="fc1.weight"):
        speechcore.load(str(good))
