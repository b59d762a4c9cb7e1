"""Shared fixtures: real checkpoints from registry packages and real speech from Debian's
pocketsphinx-testdata, found (or fetched once) at test time; nothing is committed."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("SPEECHCORE_TEST_CACHE", REPO / ".cache"))

LIBRIVOX_REFS = {
    "sense_and_sensibility_01_austen_64kb-0870.wav": "and mister john dashwood had then leisure to consider how much there might be prudently in his power to do for them",
    "sense_and_sensibility_01_austen_64kb-0880.wav": "he was not an ill disposed young man",
    "sense_and_sensibility_01_austen_64kb-0890.wav": "unless to be rather cold hearted and rather selfish is to be ill disposed",
    "sense_and_sensibility_01_austen_64kb-0920.wav": "had he married a more a amiable woman he might have been made still more respectable than he was",
    "sense_and_sensibility_01_austen_64kb-0930.wav": "he might even have been made amiable himself",
}


GREEDY = dict(beam_size=1, temperature=0.0)
"""Greedy decoding without temperature fallback, for tests that compare against a greedy
baseline or are not about decoding (the defaults are faster-whisper's beam 5 with fallback)."""


def mixed_requests(speech_audio, longform_audio, n: int, seed: int) -> list:
    """n audio requests of mixed lengths for engine tests: every 25th a 61-70 s prefix of the
    long-form file, the rest clips cut to 30-100% of their length (at least 0.5 s)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    clips = [a for _, a in speech_audio]
    out = []
    for i in range(n):
        if i % 25 == 0:
            out.append(longform_audio[: int(16000 * rng.uniform(61, 70))])
        else:
            c = clips[i % len(clips)]
            out.append(c[: max(8000, int(len(c) * rng.uniform(0.3, 1.0)))])
    return out


def edit_distance(a, b) -> int:
    """Word-level Levenshtein distance (for WER)."""
    d = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, d[0] = d[0], i
        for j, y in enumerate(b, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (x != y))
    return d[len(b)]


def _pocketsphinx_dir() -> Path | None:
    """The pocketsphinx test data directory, downloading the Debian package once if needed."""
    candidates = [os.environ.get("SPEECHCORE_TESTDATA"), CACHE / "pocketsphinx" / "usr/share/pocketsphinx/test/data",
                  "/usr/share/pocketsphinx/test/data"]
    for c in candidates:
        if c and (Path(c) / "librivox").is_dir():
            return Path(c)
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        return None
    target = CACHE / "pocketsphinx"
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            subprocess.run(["apt-get", "download", "pocketsphinx-testdata"], cwd=tmp, check=True,
                           capture_output=True, timeout=120)
            debs = glob.glob(os.path.join(tmp, "pocketsphinx-testdata_*.deb"))
            subprocess.run(["dpkg", "-x", debs[0], str(target)], check=True, capture_output=True, timeout=120)
        except (subprocess.SubprocessError, IndexError, OSError):
            return None
    d = target / "usr/share/pocketsphinx/test/data"
    return d if (d / "librivox").is_dir() else None


@pytest.fixture(scope="session")
def testdata() -> Path:
    d = _pocketsphinx_dir()
    if d is None:
        pytest.skip("pocketsphinx-testdata (Debian) is not available")
    return d


@pytest.fixture(scope="session")
def speech_clips(testdata) -> list[Path]:
    """Every real speech clip: the five librivox sentences and the five card readings."""
    clips = sorted((testdata / "librivox").glob("*.wav")) + sorted((testdata / "cards").glob("*.wav"))
    assert len(clips) == 10, clips
    return clips


@pytest.fixture(scope="session")
def speech_audio(speech_clips, testdata) -> list[tuple[str, np.ndarray]]:
    """(name, 16 kHz float32 audio) for every clip, plus the headerless goforward.raw (s16le)."""
    import soundfile as sf

    out = []
    for p in speech_clips:
        a, sr = sf.read(str(p), dtype="float32")
        assert sr == 16000
        out.append((p.name, a))
    raw = np.fromfile(testdata / "goforward.raw", dtype="<i2").astype(np.float32) / 32768.0
    out.append(("goforward.raw", raw))
    return out


@pytest.fixture(scope="session")
def longform_audio(speech_clips) -> np.ndarray:
    """Over 60 s of real speech: all clips, then the librivox clips again, 0.7 s of silence between."""
    import soundfile as sf

    gap = np.zeros(int(0.7 * 16000), np.float32)
    parts = []
    for p in speech_clips + speech_clips[:5]:
        a, sr = sf.read(str(p), dtype="float32")
        assert sr == 16000
        parts += [a, gap]
    audio = np.concatenate(parts)
    assert audio.shape[0] > 60 * 16000
    return audio


def _model_dir(name: str) -> Path:
    from speechcore import models

    # a copy of the checkpoint elsewhere (the GPU machine has no model packages)
    env = {"tiny.en": "SPEECHCORE_TEST_TINY_DIR", "base": "SPEECHCORE_TEST_BASE_DIR"}.get(name)
    d = os.environ.get(env) if env else None
    if d and (Path(d) / "model.bin").is_file():
        return Path(d)
    try:
        return Path(models.resolve_model(name))
    except Exception as e:  # noqa: BLE001 - any resolution failure means "not installed here"
        pytest.skip(f"model {name!r} not available: {e}")


@pytest.fixture(scope="session")
def tiny_dir() -> Path:
    return _model_dir("tiny.en")


@pytest.fixture(scope="session")
def base_dir() -> Path:
    return _model_dir("base")


def pytest_collection_modifyitems(config, items):
    try:
        import speechcore._C as C  # noqa: F401

        has_cuda = bool(getattr(C, "cuda_available", lambda: False)())
    except Exception:  # noqa: BLE001
        has_cuda = False
    if not has_cuda:
        skip = pytest.mark.skip(reason="needs an NVIDIA GPU")
        for item in items:
            if "cuda" in item.keywords:
                item.add_marker(skip)
