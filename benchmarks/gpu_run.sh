#!/usr/bin/env bash
# One full GPU run on the H200 (device tool): install the carried wheels, build speechcore with
# the CUDA backend, run the CUDA tests (unless SC_TESTS=0), then the GPU benchmarks in $SC_BENCH
# (commands relative to benchmarks/, separated by ';'). Logs and tables land in $OUT.
# Usage (from the repo root, with .whl, .cache/pocketsphinx and .cache/tokenizer carried):
#   [SC_TESTS=0] [SC_BENCH="whisper_gpu.py --model large-v3"] bash benchmarks/gpu_run.sh [pytest -k expression]
set -uo pipefail
OUT="${OUT:-/tmp/sc-gpu-out}"
mkdir -p "$OUT"
root="$(pwd)"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH="$root/python:/tmp/site"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,memory.used,clocks.sm,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
git -C "$root" rev-parse --short HEAD 2>/dev/null | tee "$OUT/commit.txt"

t0=$(date +%s)
cmake -S . -B /tmp/sc-build -G Ninja -DCMAKE_BUILD_TYPE=Release -DSPEECHCORE_CUDA=ON -DSPEECHCORE_BUILD_PYTHON=ON \
  -DSPEECHCORE_BUILD_TESTS=OFF -DSPEECHCORE_OPENBLAS_ROOT=/tmp/site/scipy_openblas32 \
  -Dpybind11_DIR="$(python3 -m pybind11 --cmakedir)" -DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc \
  > "$OUT/configure.log" 2>&1 || { tail -40 "$OUT/configure.log"; exit 1; }
cmake --build /tmp/sc-build -j 16 > "$OUT/build.log" 2>&1 || { grep -E "error|Error" "$OUT/build.log" | head -40; exit 1; }
echo "build: $(( $(date +%s) - t0 )) s"
ln -sf /tmp/sc-build/python/_C*.so python/speechcore/

python3 -c "import speechcore; print('cuda_built', speechcore._C.cuda_built(), 'cuda_available', speechcore._C.cuda_available())"
sel="${1:-}"
if [ "${SC_TESTS:-1}" != 0 ]; then
  timeout 480 python3 -m pytest -q -rA -m cuda ${sel:+-k "$sel"} tests/ -p no:cacheprovider 2>&1 | tee "$OUT/pytest_cuda.log" \
    | grep -vE "^PASSED|^SKIPPED" | tail -40
fi
# SC_BENCH: benchmark commands separated by ';', e.g. "whisper_gpu.py --model large-v3;whisper_gpu.py --batches 1"
IFS=';' read -ra benches <<< "${SC_BENCH:-}"
i=0
for b in "${benches[@]}"; do
  [ -n "$b" ] || continue
  i=$((i + 1))
  timeout "${SC_BENCH_TIMEOUT:-540}" python3 benchmarks/$b 2>&1 | tee "$OUT/bench_$i.log" | grep -v "^\[transformers\]" | tail -30
done
