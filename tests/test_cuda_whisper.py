"""Whisper on the GPU against the CPU path (the oracle), on seeded weights of tiny's shape made
with transformers (the device machine has no model packages): float32 token-identical to the
CPU; float16/bfloat16 agreeing on the start of every transcript."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import speechcore

pytestmark = pytest.mark.cuda
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def _tokenizer_json() -> Path:
    for c in (os.environ.get("SPEECHCORE_TEST_TOKENIZER"),
              Path(__file__).resolve().parent.parent / ".cache/tokenizer/tokenizer.json"):
        if c and Path(c).is_file():
            return Path(c)
    try:
        from speechcore import models

        return Path(models.resolve_model("tiny.en")) / "tokenizer.json"
    except Exception:  # noqa: BLE001
        pytest.skip("no Whisper tokenizer.json available")


@pytest.fixture(scope="module")
def seeded_dir(tmp_path_factory):
    torch.manual_seed(20261130)
    cfg = transformers.WhisperConfig(vocab_size=51864, num_mel_bins=80, d_model=384, encoder_layers=4,
                                     decoder_layers=4, encoder_attention_heads=6, decoder_attention_heads=6,
                                     encoder_ffn_dim=1536, decoder_ffn_dim=1536)
    model = transformers.WhisperForConditionalGeneration(cfg).eval()
    with torch.no_grad():  # weights larger than the default init: decisive logits, no near-ties
        for p in model.parameters():
            p.mul_(6.0 if p.dim() > 1 else 1.0)
    d = tmp_path_factory.mktemp("seeded_tiny")
    model.save_pretrained(str(d), safe_serialization=True)
    shutil.copy(_tokenizer_json(), d / "tokenizer.json")
    return d


def _tokens(result):
    return [t for s in result.segments for t in s.tokens]


OPTS = dict(language="en", without_timestamps=True, suppress_tokens=[], suppress_blank=False,
            no_speech_threshold=None, condition_on_previous_text=False, beam_size=1, temperature=0.0)
EN = dict(language="en", beam_size=1, temperature=0.0)  # greedy, the default pipeline otherwise


def test_cuda_load_reports_device(seeded_dir):
    m = speechcore.load(str(seeded_dir), device="cuda", compute_type="bfloat16")
    assert m.info["device"] == "cuda" and m.info["compute_type"] == "bfloat16"
    assert 0 < m.info["weight_bytes"] < 200e6
    # the persistent step is opt-in; where thread-block clusters run (compute capability 9) the
    # one-row attention sub-layers run as one kernel each
    clusters = speechcore._C.cuda_ops.self_qkv_attention_supported("bfloat16", 384, 6, 448)
    assert m.info["decoder_step"] == ("fused+self_qkv+cross_query" if clusters else "fused")
    assert speechcore.load(str(seeded_dir), device="cuda", compute_type="float32").info["decoder_step"] == "fused"
    assert m.info["cross_absorb_min_windows"] == 128  # absorbed cross-attention from 128-window batches
    assert speechcore.load(str(seeded_dir), device="cpu").info["decoder_step"] == "cpu"


def test_float32_gpu_matches_cpu(seeded_dir, speech_audio):
    cpu = speechcore.load(str(seeded_dir), device="cpu", threads=4)
    gpu = speechcore.load(str(seeded_dir), device="cuda", compute_type="float32")
    for name, audio in speech_audio[:4]:
        want = _tokens(cpu.transcribe(audio, **OPTS))
        got = _tokens(gpu.transcribe(audio, **OPTS))
        assert len(want) > 5, name
        assert got == want, name


@pytest.mark.parametrize("compute_type", ["float16", "bfloat16"])
def test_half_precision_gpu_close_to_cpu(seeded_dir, speech_audio, compute_type):
    cpu = speechcore.load(str(seeded_dir), device="cpu", threads=4)
    gpu = speechcore.load(str(seeded_dir), device="cuda", compute_type=compute_type)
    agree = 0
    for name, audio in speech_audio[:4]:
        want = _tokens(cpu.transcribe(audio, **OPTS))
        got = _tokens(gpu.transcribe(audio, **OPTS))
        agree += got[:5] == want[:5]
    assert agree >= 3, agree


def test_cuda_timestamps_and_longform(seeded_dir, longform_audio):
    """The full default pipeline (timestamp rules, seeking, conditioning) runs on the GPU: the
    first window equals the CPU's; later windows of these random weights choose among
    near-equal timestamp logits (test_gpu_logits_match_cpu bounds the logits themselves), so
    only their structure is checked here."""
    cpu = speechcore.load(str(seeded_dir), device="cpu", threads=4)
    gpu = speechcore.load(str(seeded_dir), device="cuda", compute_type="float32")
    want = cpu.transcribe(longform_audio, **EN, max_new_tokens=40)
    got = gpu.transcribe(longform_audio, **EN, max_new_tokens=40)
    first = [s.tokens for s in want.segments if s.seek == 0]
    assert first and [s.tokens for s in got.segments if s.seek == 0] == first
    assert got.segments[-1].seek > 3000  # went past the first 30 s window
    ends = [0.0]
    for s in got.segments:
        assert ends[-1] - 1e-9 <= s.start <= s.end <= got.duration + 30.0
        ends.append(s.end)


def test_no_device_memory_growth(seeded_dir, speech_audio):
    """1,000 transcriptions (plus batches) after a warm-up: device memory in use does not move."""
    gpu = speechcore.load(str(seeded_dir), device="cuda", compute_type="bfloat16")
    audio = speech_audio[1][1]
    first = gpu.transcribe(audio, **OPTS)
    before = speechcore._C.cuda_memory_stats()
    for i in range(1000):
        got = gpu.transcribe(audio, **OPTS)
        if i % 100 == 0:
            assert _tokens(got) == _tokens(first)
    after = speechcore._C.cuda_memory_stats()
    assert after["bytes_in_use"] == before["bytes_in_use"]
    assert after["num_system_allocs"] == before["num_system_allocs"]  # no cudaMalloc after warm-up
    clips = [a for _, a in speech_audio]
    gpu.transcribe_batch(clips, **OPTS)
    mid = speechcore._C.cuda_memory_stats()["bytes_in_use"]
    for _ in range(5):
        gpu.transcribe_batch(clips, **OPTS)
    assert speechcore._C.cuda_memory_stats()["bytes_in_use"] == mid


def test_transcribe_batch_matches_one_at_a_time(seeded_dir, speech_audio, longform_audio):
    """float32: all clips and the 70 s file as one GPU batch (windows of different files together,
    sequences finishing at different steps) give each file's one-at-a-time tokens. (float16 /
    bfloat16 batches are not bit-identical to single windows: cuBLASLt picks kernels, and the
    decode attention its key splits, by batch size, so roundings differ; the real-checkpoint
    tests compare their word error rates instead.)"""
    gpu = speechcore.load(str(seeded_dir), device="cuda", compute_type="float32")
    audios = [a for _, a in speech_audio] + [longform_audio]
    alone = [_tokens(gpu.transcribe(a, **OPTS)) for a in audios]
    for batch_size in (None, 3):
        together = [_tokens(r) for r in gpu.transcribe_batch(audios, batch_size=batch_size, **OPTS)]
        assert together == alone, batch_size


def logits_errors(cpu, gpu, audio):
    """{n: relative error norm of the GPU logits against the CPU float32 ones} after prompts of
    n = 1, 3, 70 and 200 tokens (prefill tiles, causal masking across query blocks); cpu and gpu
    are loaded models' _native."""
    from speechcore import _C

    mel = _C.log_mel_spectrogram(audio, n_mels=80, padding=160)[:, :3000]
    mel = np.pad(mel, ((0, 0), (0, 3000 - mel.shape[1])))
    rng = np.random.default_rng(3)
    errors = {}
    for n in (1, 3, 70, 200):
        prompt = [50257] + [int(t) for t in rng.integers(0, 50000, n - 1)]
        want = cpu.prompt_logits(mel, prompt).astype(np.float64)
        got = gpu.prompt_logits(mel, prompt)
        errors[n] = np.linalg.norm(got - want) / np.linalg.norm(want)
    return errors


@pytest.mark.parametrize("compute_type,tol", [("float32", 1e-4), ("bfloat16", 5e-2), ("float16", 2e-2)])
def test_gpu_logits_match_cpu(seeded_dir, speech_audio, compute_type, tol):
    cpu = speechcore.load(str(seeded_dir), device="cpu", threads=4)._native
    gpu = speechcore.load(str(seeded_dir), device="cuda", compute_type=compute_type)._native
    for n, err in logits_errors(cpu, gpu, speech_audio[0][1]).items():
        assert err < tol, (n, err)


def _real_dir(env: str, name: str) -> Path:
    """A real checkpoint: $env (the GPU machine, where it is shipped in parts) or the package."""
    d = os.environ.get(env)
    if d and (Path(d) / "model.bin").is_file():
        return Path(d)
    try:
        from speechcore import models

        return Path(models.resolve_model(name))
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"{name} not available: {e}")


@pytest.fixture(scope="module", params=["tiny.en", "base"])
def real_dir(request):
    env = {"tiny.en": "SPEECHCORE_TEST_TINY_DIR", "base": "SPEECHCORE_TEST_BASE_DIR"}[request.param]
    return request.param, _real_dir(env, request.param)


def test_real_checkpoint_gpu_float32_matches_cpu(real_dir, speech_audio, longform_audio):
    """Real weights, the full default pipeline: GPU float32 gives the CPU's tokens and times on
    every clip (tiny.en and the multilingual base) and on the 70 s long-form file (tiny.en).
    base's long-form output diverged from the CPU in one window (at 28 s, 'clubs' tokens) on the
    H200 on 2026-11-30: open question in STATUS.md, so it is not asserted here yet."""
    model, path = real_dir
    cpu = speechcore.load(str(path), device="cpu", threads=8)
    gpu = speechcore.load(str(path), device="cuda", compute_type="float32")
    longform = [("long-form", longform_audio)] if model == "tiny.en" else []
    items = speech_audio + longform
    wants = []
    for name, audio in items:
        want = cpu.transcribe(audio, **EN)
        got = gpu.transcribe(audio, **EN)
        assert [(s.tokens, s.start, s.end) for s in got.segments] == \
            [(s.tokens, s.start, s.end) for s in want.segments], name
        wants.append(want)
    # the same files as one GPU batch
    batch = gpu.transcribe_batch([a for _, a in items], **EN)
    for (name, _), got, want in zip(items, batch, wants):
        assert [(s.tokens, s.start, s.end) for s in got.segments] == \
            [(s.tokens, s.start, s.end) for s in want.segments], f"batched {name}"


def test_real_base_longform_float32(longform_audio):
    """base on the 70 s file: GPU float32 equals the CPU, or (reported) the first differing
    token is a near-tie: at that decoding position both backends' logits agree (relative error
    < 1e-4) and the two candidate tokens' logits lie within 1e-3 of each other."""
    from speechcore import _C

    path = _real_dir("SPEECHCORE_TEST_BASE_DIR", "base")
    cpu = speechcore.load(str(path), device="cpu", threads=8)
    gpu = speechcore.load(str(path), device="cuda", compute_type="float32")
    want = cpu.transcribe(longform_audio, **EN)
    got = gpu.transcribe(longform_audio, **EN)
    w = [(s.seek, s.tokens) for s in want.segments]
    g = [(s.seek, s.tokens) for s in got.segments]
    if w == g:
        return
    # the first window where they differ, and the prompt up to the first differing token
    k = next(i for i, (a, b) in enumerate(zip(w, g)) if a != b)
    seek = w[k][0]
    history = [t for s in want.segments if s.seek < seek for t in s.tokens]
    tok = _C.Tokenizer.from_file(str(Path(path) / "tokenizer.json"))
    prompt = ([tok.sot_prev] + history[-223:] if history else []) + list(tok.sot_sequence("en", "transcribe"))
    mine = [t for s in want.segments if s.seek == seek for t in s.tokens]
    theirs = [t for s in got.segments if s.seek == seek for t in s.tokens]
    j = next(i for i, (a, b) in enumerate(zip(mine, theirs)) if a != b)
    prompt += mine[:j]
    mel = _C.log_mel_spectrogram(longform_audio, n_mels=80, padding=160)[:, seek:seek + 3000]
    mel = np.ascontiguousarray(np.pad(mel, ((0, 0), (0, 3000 - mel.shape[1]))))
    lc = cpu._native.prompt_logits(mel, prompt).astype(np.float64)
    lg = gpu._native.prompt_logits(mel, prompt).astype(np.float64)
    rel = np.linalg.norm(lg - lc) / np.linalg.norm(lc)
    gap_cpu = lc[mine[j]] - lc[theirs[j]]
    gap_gpu = lg[mine[j]] - lg[theirs[j]]
    print(f"base long-form: window at seek {seek}, token {j}: CPU {mine[j]} vs GPU {theirs[j]}; "
          f"logits rel. error {rel:.2e}; logit gap between the two tokens: CPU {gap_cpu:.2e}, GPU {gap_gpu:.2e}")
    assert rel < 1e-4 and abs(gap_cpu) < 1e-3, (rel, gap_cpu, gap_gpu)


def _words(text: str) -> list:
    return "".join(c for c in text.lower() if c.isalnum() or c.isspace() or c == "'").replace("-", " ").split()


@pytest.mark.parametrize("absorb", ["0", "1"])
@pytest.mark.parametrize("compute_type", ["float16", "bfloat16"])
def test_real_checkpoint_gpu_half_precision_wer(real_dir, testdata, compute_type, absorb, monkeypatch):
    """Reduced precision keeps the accuracy: on the librivox clips, the word error rate against the
    human references of GPU float16/bfloat16 (one at a time and as one batch) is within two words
    of the CPU float32 one's (the figures are printed). absorb=1: every batch runs the
    cross-attention absorbed (SPEECHCORE_CROSS_ABSORB=1)."""
    from conftest import LIBRIVOX_REFS, edit_distance

    name, path = real_dir
    cpu = speechcore.load(str(path), device="cpu", threads=8)
    monkeypatch.setenv("SPEECHCORE_CROSS_ABSORB", absorb)
    gpu = speechcore.load(str(path), device="cuda", compute_type=compute_type)
    assert gpu.info["cross_absorb_min_windows"] == int(absorb)
    files = [str(testdata / "librivox" / f) for f in LIBRIVOX_REFS]
    refs = [r.split() for r in LIBRIVOX_REFS.values()]
    words = sum(len(r) for r in refs)
    runs = {
        "cpu float32": [cpu.transcribe(f, **EN).text for f in files],
        f"gpu {compute_type} one at a time": [gpu.transcribe(f, **EN).text for f in files],
        f"gpu {compute_type} as one batch": [r.text for r in gpu.transcribe_batch(files, **EN)],
    }
    errors = {k: sum(edit_distance(_words(t), r) for t, r in zip(v, refs)) for k, v in runs.items()}
    for k, e in errors.items():
        print(f"{name} absorb={absorb} {k}: WER vs references {e}/{words} = {e / words:.2%}")
    for k, e in errors.items():
        assert e <= errors["cpu float32"] + 2, (k, errors)


def test_engine_on_gpu_matches_one_at_a_time(seeded_dir, speech_audio, longform_audio):
    """The engine on the GPU (continuous batching over slots, float32): 200 mixed requests
    (cut clips and > 60 s files) submitted together give the one-at-a-time tokens; then an
    abort and a graceful close leave no running windows."""
    gpu = speechcore.load(str(seeded_dir), device="cuda", compute_type="float32")
    from conftest import mixed_requests

    audios = mixed_requests(speech_audio, longform_audio, 200, seed=1)
    opts = dict(OPTS, max_new_tokens=40)
    alone = [_tokens(gpu.transcribe(a, **opts)) for a in audios]
    gpu.start_engine(max_batch=48, max_encode_batch=8)
    futures = [gpu.submit(a, **opts) for a in audios]
    assert [_tokens(f.result(timeout=600)) for f in futures] == alone
    f = gpu.submit(longform_audio, **opts)
    if gpu.abort(f):  # on the GPU the request may already be done; then there is nothing to abort
        with pytest.raises(speechcore.CancelledError):
            f.result(timeout=600)
    else:
        assert _tokens(f.result(timeout=600)) == _tokens(gpu.transcribe(longform_audio, **opts))
    gpu.close(cancel=False)


@pytest.mark.parametrize("async_encode", ["1", "0"], ids=["async", "sync"])
def test_engine_on_gpu_async_encoder(seeded_dir, speech_audio, longform_audio, monkeypatch, async_encode):
    """Asynchronous admissions (the default; SPEECHCORE_ASYNC_ENCODE=0 when the engine starts
    turns them off: windows are encoded on a second stream while the running ones decode, then
    prefilled when done), and the synchronous ones: 120 mixed requests in float32 give the
    one-at-a-time tokens, in a pool small enough to preempt (pending windows included) and with
    aborts of requests whose windows may still be encoding; once every future has resolved the
    statistics show no window and no block held (the engine publishes them before it resolves a
    request), and the engine closes cleanly."""
    from conftest import mixed_requests

    gpu = speechcore.load(str(seeded_dir), device="cuda", compute_type="float32")
    audios = mixed_requests(speech_audio, longform_audio, 120, seed=5)
    opts = dict(OPTS, max_new_tokens=40)
    alone = [_tokens(gpu.transcribe(a, **opts)) for a in audios]
    monkeypatch.setenv("SPEECHCORE_ASYNC_ENCODE", async_encode)
    gpu.start_engine(max_batch=32, max_encode_batch=8, kv_block_size=16, kv_blocks=48)
    monkeypatch.delenv("SPEECHCORE_ASYNC_ENCODE")
    futures = [gpu.submit(a, **opts) for a in audios]
    doomed = [gpu.submit(a, **opts) for a in audios[:10]]
    aborted = [gpu.abort(f) for f in doomed]
    assert [_tokens(f.result(timeout=600)) for f in futures] == alone
    for f, a, want in zip(doomed, aborted, alone[:10]):
        if a:
            with pytest.raises(speechcore.CancelledError):
                f.result(timeout=600)
        else:
            assert _tokens(f.result(timeout=600)) == want
    st = gpu.engine_stats()
    assert st["running_windows"] == 0 and st["kv_blocks_used"] == 0, st
    gpu.close(cancel=False)


def test_real_checkpoint_engine_float32_matches_cpu(real_dir, speech_audio, longform_audio):
    """Real weights through the GPU engine (default options, timestamps, long-form): the CPU's
    tokens and times for every clip and the 70 s file, all submitted at once."""
    _, path = real_dir
    cpu = speechcore.load(str(path), device="cpu", threads=8)
    gpu = speechcore.load(str(path), device="cuda", compute_type="float32")
    audios = [a for _, a in speech_audio] + [longform_audio]
    wants = [cpu.transcribe(a, **EN) for a in audios]
    futures = [gpu.submit(a, **EN) for a in audios]
    for f, want in zip(futures, wants):
        got = f.result(timeout=600)
        assert [(s.tokens, s.start, s.end) for s in got.segments] == \
            [(s.tokens, s.start, s.end) for s in want.segments]
    gpu.close()


def test_engine_on_gpu_paged_pool(seeded_dir, speech_audio, longform_audio):
    """The GPU engine's paged self-attention cache: a pool too small for every running window
    forces preemptions (recompute), results still equal one at a time; long files with
    independent windows run ahead; a pool sized from gpu_memory_fraction is capped at max_batch
    whole contexts, and a fraction that leaves no room is a typed error."""
    from conftest import mixed_requests

    gpu = speechcore.load(str(seeded_dir), device="cuda", compute_type="float32")
    audios = mixed_requests(speech_audio, longform_audio, 60, seed=3)
    opts = dict(OPTS, max_new_tokens=40)
    alone = [_tokens(gpu.transcribe(a, **opts)) for a in audios]
    gpu.start_engine(max_batch=32, max_encode_batch=8, kv_block_size=16, kv_blocks=40)
    futures = [gpu.submit(a, **opts) for a in audios]
    assert [_tokens(f.result(timeout=600)) for f in futures] == alone
    st = gpu.engine_stats()
    assert st["kv_blocks_total"] == 40 and st["preemptions"] > 0, st
    gpu.close(cancel=False)

    native = gpu._native
    ctx_blocks = (448 + 15) // 16
    eng = speechcore._C.Engine(native, max_batch=16, gpu_memory_fraction=0.95)
    assert eng.stats()["kv_blocks_total"] == 16 * ctx_blocks
    eng.shutdown(False)
    del eng
    with pytest.raises(speechcore.OutOfMemoryError):
        speechcore._C.Engine(native, max_batch=16, gpu_memory_fraction=0.001)
    with pytest.raises(speechcore.InvalidArgumentError):
        speechcore._C.Engine(native, max_batch=16, gpu_memory_fraction=1.5)
