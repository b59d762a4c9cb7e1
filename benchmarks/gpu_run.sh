#!/usr/bin/env bash
# One full GPU run on the H200 (device tool): install the carried wheels, build speechcore with
# the CUDA backend, run the CUDA tests, then the GPU benchmarks named in $SC_BENCH (if any).
# Logs and tables land in $OUT. Usage (from the repo root, with .whl carried):
#   bash benchmarks/gpu_run.sh [pytest -k expression]
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
timeout 420 python3 -m pytest -q -m cuda ${sel:+-k "$sel"} tests/ -p no:cacheprovider 2>&1 | tee "$OUT/pytest_cuda.log" | tail -40
for b in ${SC_BENCH:-}; do
  timeout 300 python3 "benchmarks/$b" 2>&1 | tee "$OUT/${b%.py}.log" | tail -30
done
