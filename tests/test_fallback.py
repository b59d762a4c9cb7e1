"""Temperature fallback and sampling on the CPU backend.

Deterministic parts against faster-whisper 1.2.1: which windows fall back (its
generate_with_fallback rule on the temperature-0 result), the tokens of windows whose first
temperature passes, the final choice when every temperature fails, prompt_reset_on_temperature.
Sampling (which cannot match CTranslate2's random generator token for token) at the level of
distributions: sampled token frequencies against softmax(logits / T) on a real prompt, and the
decoder's sampling path against greedy decoding in the T -> 0 limit. Fallback windows are
re-issued by the long-form state machine, so transcribe_batch and the engine (also with
look-ahead windows) give the same results as transcribe."""

from __future__ import annotations

import math

import numpy as np
import pytest
import speechcore
from speechcore import _C

faster_whisper = pytest.importorskip("faster_whisper")

@pytest.fixture(scope="module")
def tiny(tiny_dir):
    ours = speechcore.load(str(tiny_dir), device="cpu", threads=2)
    theirs = faster_whisper.WhisperModel(str(tiny_dir), device="cpu", compute_type="float32", cpu_threads=2)
    return ours, theirs


def _fw(model, audio, **options):
    segments, _ = model.transcribe(audio, vad_filter=False, **options)
    return list(segments)


def _windows(segments):
    """{seek: (temperature, tokens of its segments)} of a transcription's segments."""
    out = {}
    for s in segments:
        t, toks = out.get(s.seek, (s.temperature, []))
        assert t == s.temperature
        out[s.seek] = (t, toks + list(s.tokens))
    return out


def _threshold_between(values, margin=0.02):
    """A threshold in the widest gap between the middle values (some below, some above)."""
    v = sorted(values)
    lo = max(1, len(v) // 4)
    hi = min(len(v) - 1, len(v) - len(v) // 4)
    gaps = [(v[i] - v[i - 1], i) for i in range(lo, hi + 1)]
    gap, i = max(gaps)
    assert gap > 2 * margin, v
    return (v[i - 1] + v[i]) / 2


def test_fallback_triggers_where_faster_whisper_does(tiny, speech_audio):
    """Each clip is one window; the log-prob threshold splits them. Windows whose temperature-0
    beam search passes are token-identical to faster-whisper; the others fall back in both."""
    ours, theirs = tiny
    base = dict(language="en", beam_size=5, best_of=2, max_new_tokens=96)  # bounds sampled windows
    first = [ours.transcribe(a, sample_rate=16000, temperature=0.0, **base) for _, a in speech_audio]
    avgs = [t.segments[0].avg_logprob for t in first]
    threshold = _threshold_between(avgs)
    options = dict(base, temperature=[0.0, 0.4, 1.0], log_prob_threshold=threshold)
    fell = 0
    for (clip, audio), avg, t0 in zip(speech_audio, avgs, first):
        sc = ours.transcribe(audio, sample_rate=16000, **options)
        fw = _fw(theirs, audio, **options)
        expected = avg < threshold
        assert any(s.temperature > 0 for s in sc.segments) == expected, clip
        assert any(s.temperature > 0 for s in fw) == expected, clip
        if expected:
            fell += 1
        else:
            assert [s.tokens for s in sc.segments] == [list(s.tokens) for s in fw] == [s.tokens for s in t0.segments]
            assert [s.avg_logprob for s in sc.segments] == pytest.approx([s.avg_logprob for s in fw], abs=2e-3)
    assert 0 < fell < len(speech_audio)


def test_compression_ratio_fallback(tiny, speech_audio):
    """The same with the compression-ratio check (greedy at temperature 0)."""
    ours, theirs = tiny
    base = dict(language="en", beam_size=1, best_of=2, max_new_tokens=96)
    first = [ours.transcribe(a, sample_rate=16000, temperature=0.0, **base) for _, a in speech_audio]
    crs = [t.segments[0].compression_ratio for t in first]
    threshold = _threshold_between(crs, margin=0.01)
    options = dict(base, temperature=[0.0, 0.5], compression_ratio_threshold=threshold, log_prob_threshold=None)
    for (clip, audio), cr, t0 in zip(speech_audio, crs, first):
        sc = ours.transcribe(audio, sample_rate=16000, **options)
        fw = _fw(theirs, audio, **options)
        expected = cr > threshold
        assert any(s.temperature > 0 for s in sc.segments) == expected, clip
        assert any(s.temperature > 0 for s in fw) == expected, clip
        if not expected:
            assert [s.tokens for s in sc.segments] == [list(s.tokens) for s in fw] == [s.tokens for s in t0.segments]


def test_all_failed_keeps_best_and_resets_prompt(tiny, longform_audio):
    """log_prob_threshold 0 fails every window at every temperature: each window keeps its best
    attempt (by average log-prob) and reports the last temperature, which is above
    prompt_reset_on_temperature, so no window is prompted with earlier text. With a single
    temperature above zero tried after 0, the temperature-0 beam result wins every window here
    (its average log-prob is far above a T=1 sample's), so the whole run is deterministic and
    equals faster-whisper's token for token."""
    ours, theirs = tiny
    audio = longform_audio[: 16000 * 50]  # two windows
    options = dict(language="en", beam_size=5, best_of=1, temperature=[0.0, 1.0], log_prob_threshold=0.0,
                   compression_ratio_threshold=None, condition_on_previous_text=True, max_new_tokens=128)
    sc = ours.transcribe(audio, sample_rate=16000, **options)
    assert {s.temperature for s in sc.segments} == {1.0}
    assert len({s.seek for s in sc.segments}) >= 2
    # Every window kept its temperature-0 attempt and reset the prompt after it: the same as
    # temperature-0 decoding without previous-text prompts.
    reset = ours.transcribe(audio, sample_rate=16000, language="en", beam_size=5, temperature=0.0,
                            condition_on_previous_text=False, max_new_tokens=128)
    assert [s.tokens for s in sc.segments] == [s.tokens for s in reset.segments]
    import ctranslate2

    ctranslate2.set_random_seed(1)
    fw = _fw(theirs, audio, **options)
    assert [s.tokens for s in sc.segments] == [list(s.tokens) for s in fw]
    assert {s.temperature for s in fw} == {1.0}


def test_fallback_reuses_the_window_encoding(tiny, longform_audio):
    """A fallback attempt decodes against the window's first encoding, as faster-whisper reuses
    its encoder output: two windows failing all three temperatures cost two encoder passes
    through transcribe (not six). The engine also issues the second window ahead with each
    attempt of the first and discards it when that attempt fails (a speculative window's
    encoding is not kept), so there at most four (the first window once, the second up to three
    times); the same results."""
    ours, _ = tiny
    audio = longform_audio[: 16000 * 50]  # two windows
    options = dict(language="en", beam_size=2, best_of=2, temperature=[0.0, 0.5, 1.0], log_prob_threshold=0.0,
                   compression_ratio_threshold=None, condition_on_previous_text=False, without_timestamps=True,
                   max_new_tokens=32, seed=3)
    passes = ours._native.encoder_passes
    n0 = passes()
    sc = ours.transcribe(audio, sample_rate=16000, **options)
    assert {s.temperature for s in sc.segments} == {1.0}  # every attempt of every window failed
    assert len({s.seek for s in sc.segments}) == 2
    assert passes() - n0 == 2
    n1 = passes()
    engine = ours.submit(audio, sample_rate=16000, **options).result(timeout=600)
    assert 2 <= passes() - n1 <= 4
    key = lambda t: [(s.seek, s.tokens, s.temperature, s.avg_logprob) for s in t.segments]  # noqa: E731
    assert key(engine) == key(sc)


def test_longform_fallback_windows_match(tiny, longform_audio):
    """Long-form with timestamps and previous-text prompts: every window before the first one
    that falls back is token-identical, and that first fallback is at the same window (which
    is then sampled, so what follows differs)."""
    ours, theirs = tiny
    base = dict(language="en", beam_size=5, best_of=1, condition_on_previous_text=True, max_new_tokens=128)
    first = ours.transcribe(longform_audio, sample_rate=16000, temperature=0.0, **base).segments
    t0 = _windows(first)
    avgs = {s.seek: s.avg_logprob for s in first}
    crs = {s.seek: s.compression_ratio for s in first}
    seeks = sorted(avgs)
    assert len(seeks) >= 3
    # Fail the worst window that is neither the first nor the last (a speech window with
    # windows before it and a sampled result that changes everything after it).
    first_fail = min(seeks[1:-1], key=lambda k: avgs[k])
    threshold = avgs[first_fail] + 0.01
    assert all(avgs[k] > threshold + 0.01 and crs[k] <= 2.4 for k in seeks if k < first_fail)
    options = dict(base, temperature=[0.0, 1.0], log_prob_threshold=threshold)
    sc = _windows(ours.transcribe(longform_audio, sample_rate=16000, **options).segments)
    fw = _windows(_fw(theirs, longform_audio, **options))
    for k in seeks:
        if k == first_fail:
            break
        assert sc[k] == fw[k] == t0[k]
    assert sc[first_fail][0] > 0 and fw[first_fail][0] > 0


def test_fixed_windows_fallback_and_batching(tiny, longform_audio, speech_audio):
    """Text-only windows without previous-text prompts start at fixed seeks (the engine issues
    them ahead): per window, fallback decisions and passing windows equal faster-whisper's, and
    transcribe_batch and the engine return transcribe's results, samples included (each window
    attempt has its own random stream)."""
    ours, theirs = tiny
    base = dict(language="en", beam_size=5, best_of=2, without_timestamps=True, condition_on_previous_text=False,
                max_new_tokens=96)
    t0 = ours.transcribe(longform_audio, sample_rate=16000, temperature=0.0, **base)
    avgs = {s.seek: s.avg_logprob for s in t0.segments}
    assert len(avgs) == 3
    worst = min(avgs.values())
    threshold = worst + 0.01  # the worst window falls back, the others pass
    assert sorted(avgs.values())[1] > threshold + 0.01
    options = dict(base, temperature=[0.0, 0.5, 1.0], log_prob_threshold=threshold)
    sc = ours.transcribe(longform_audio, sample_rate=16000, seed=7, **options)
    fw = _fw(theirs, longform_audio, **options)
    options["seed"] = 7
    sw, fww, tw = _windows(sc.segments), _windows(fw), _windows(t0.segments)
    for seek, avg in avgs.items():
        if avg < threshold:
            assert sw[seek][0] > 0 and fww[seek][0] > 0
        else:
            assert sw[seek] == fww[seek] == tw[seek]

    audios = [longform_audio, speech_audio[6][1]]
    one = [sc, ours.transcribe(audios[1], sample_rate=16000, **options)]
    batch = ours.transcribe_batch(audios, sample_rate=16000, batch_size=2, **options)
    engine = [f.result(timeout=600) for f in [ours.submit(a, sample_rate=16000, **options) for a in audios]]
    key = lambda t: [(s.seek, s.tokens, s.temperature, s.avg_logprob) for s in t.segments]  # noqa: E731
    for a, b, c in zip(one, batch, engine):
        assert key(a) == key(b) == key(c)


def test_sampling_is_seeded_and_batch_independent(tiny, speech_audio):
    ours, _ = tiny
    audios = [a for _, a in speech_audio[:4]]
    options = dict(language="en", temperature=1.0, best_of=2)
    a = [ours.transcribe(x, sample_rate=16000, seed=3, **options) for x in audios]
    b = ours.transcribe_batch(audios, sample_rate=16000, seed=3, **options)
    c = [ours.transcribe(x, sample_rate=16000, seed=4, **options) for x in audios]
    tok = lambda t: [s.tokens for s in t.segments]  # noqa: E731
    assert [tok(x) for x in a] == [tok(x) for x in b]
    assert [tok(x) for x in a] != [tok(x) for x in c]
    assert all(s.temperature == 1.0 for t in a for s in t.segments)


def test_sampling_at_tiny_temperature_is_greedy(tiny, speech_audio):
    """softmax(log_probs / T) tends to the arg max: the sampling decoder (rules, scores, best_of
    candidates, dropping finished ones) then returns greedy decoding's tokens and log-probs."""
    ours, _ = tiny
    for clip, audio in speech_audio[:5]:
        g = ours.transcribe(audio, sample_rate=16000, language="en", beam_size=1, temperature=0.0)
        s = ours.transcribe(audio, sample_rate=16000, language="en", temperature=1e-4, best_of=3)
        assert [x.tokens for x in s.segments] == [x.tokens for x in g.segments], clip
        assert [x.avg_logprob for x in s.segments] == pytest.approx([x.avg_logprob for x in g.segments], abs=1e-4)


def test_best_of_keeps_the_best_candidate(tiny, speech_audio):
    """Candidate 0 of best_of=5 is the sample of best_of=1 (same random stream): the kept
    candidate's length-normalized score is at least that one's."""
    ours, _ = tiny
    norm = lambda s: s.avg_logprob * (len(s.tokens) + 1) / len(s.tokens)  # noqa: E731
    wins = 0
    for clip, audio in speech_audio[:6]:
        opts = dict(language="en", temperature=0.8, without_timestamps=True, seed=11)
        one = ours.transcribe(audio, sample_rate=16000, best_of=1, **opts).segments
        five = ours.transcribe(audio, sample_rate=16000, best_of=5, **opts).segments
        assert len(one) == len(five) == 1, clip
        assert norm(five[0]) >= norm(one[0]) - 1e-5, clip
        wins += five[0].tokens != one[0].tokens
    assert wins >= 1


def _special_ids(model_dir):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    return {name: tok.token_to_id(t) for name, t in
            [("eot", "<|endoftext|>"), ("sot", "<|startoftranscript|>"), ("no_timestamps", "<|notimestamps|>")]}


def _chisquare_pvalue(obs: np.ndarray, exp: np.ndarray) -> float:
    """P(chi2 >= statistic) with len(obs) - 1 degrees of freedom, by the Wilson-Hilferty normal
    approximation of the chi-square distribution (close enough for the thresholds used here;
    no scipy needed)."""
    stat = float(((obs - exp) ** 2 / exp).sum())
    k = len(obs) - 1
    z = ((stat / k) ** (1.0 / 3.0) - (1.0 - 2.0 / (9.0 * k))) / math.sqrt(2.0 / (9.0 * k))
    return 0.5 * math.erfc(z / math.sqrt(2.0))


@pytest.mark.parametrize("temperature", [0.4, 1.0, 1.7])
def test_sampled_token_frequencies_follow_softmax(tiny, tiny_dir, speech_audio, temperature):
    """The sampler on real logits (tiny.en after <|startoftranscript|><|notimestamps|> on a
    clip, with a suppressed half of the vocabulary): 10,000 draws, chi-square against
    softmax(logits / T) computed in float64, and no suppressed token ever drawn."""
    ours, _ = tiny
    ids = _special_ids(tiny_dir)
    audio = speech_audio[0][1]
    mel = _C.log_mel_spectrogram(audio)[:, :3000]
    mel = np.pad(mel, ((0, 0), (0, 3000 - mel.shape[1])))
    logits = ours._native.prompt_logits(np.ascontiguousarray(mel, np.float32),
                                        [ids["sot"], ids["no_timestamps"]]).astype(np.float32)
    logits[1::2] = -np.inf  # a suppressed half (every odd id), as the rules leave it
    n = 10_000
    draws = _C.ops.sample_tokens(logits, temperature, n, seed=5)
    assert np.all(draws % 2 == 0)
    x = logits.astype(np.float64) / temperature
    p = np.exp(x - x.max())
    p /= p.sum()
    counts = np.bincount(draws, minlength=len(p))
    # Chi-square over the tokens expected at least 5 times, the rest pooled in one cell.
    big = n * p >= 5
    obs = np.append(counts[big], counts[~big].sum())
    exp = np.append(n * p[big], n * p[~big].sum())
    if exp[-1] < 5:
        obs, exp = obs[:-1], exp[:-1]
        exp *= obs.sum() / exp.sum()
    assert big.sum() >= 3  # a real distribution, not a near one-hot
    pvalue = _chisquare_pvalue(obs, exp)
    assert pvalue > 1e-4, pvalue
    # And not the distribution at another temperature (the test can tell them apart).
    x2 = logits.astype(np.float64) / (temperature * 1.5)
    p2 = np.exp(x2 - x2.max())
    p2 /= p2.sum()
    exp2 = np.append(n * p2[big], n * p2[~big].sum())[: len(obs)]
    exp2 *= obs.sum() / exp2.sum()
    assert _chisquare_pvalue(obs, exp2) < 1e-6
