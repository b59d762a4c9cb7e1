#!/usr/bin/env bash
# One device call that builds once (incrementally when the machine is still warm) and runs the
# parts named in STEPS, in this order:
#   tests  pytest -m cuda -k "$TESTK" (default "engine or mel"; TESTT seconds, default 300)
#   ab     batch-128 A/B of SPEECHCORE_STEP_BUCKETS over $ABV (default "1 0 1 0"), extra env $ABX
#   wg     whisper_gpu.py $WGX (default --batches 1,16,128 --skip-transformers)
#   serve  engine_gpu.py serving at 50% load, SPEECHCORE_STEP_BUCKETS over $SERVEV (default "1 0")
#   eg     engine_gpu.py $EGX (default --hf-batches 128: the full benchmark with transformers)
#   trace  decode_step_gpu.py --trace at the batches in $TRB (default "1 8")
#   envab  batch 1 through transcribe(), the switch $ENVAB (default SPEECHCORE_OUT_FOLD) over
#          the values $ENVABV (default "1 0 1"), one build
#   fold   the opt-in 4-kernel layer (SPEECHCORE_OUT_FOLD=1) and two-row sub-layers (SPEECHCORE_SUBLAYER_ROWS):
#          their tests, then one traced batch-1 window with the fold
#   direct batch 1 through transcribe() (whisper_gpu.py's latency path), traced by kernel position,
#          the working tree against the commit $BASE (default HEAD) built in /tmp/sc-base, alternated
#          $DIRN times (default 2); extra env $DIRX
# Carry .whl, .cache/tokenizer, .cache/pocketsphinx, .cache/vad (benchmarks/prepare_gpu_carry.sh).
# Usage (device tool, repo root): STEPS="tests ab" bash benchmarks/gpu_steps.sh (STEPS= builds only)
set -uo pipefail
OUT="${OUT:-/tmp/sc-gpu-out}"; mkdir -p "$OUT"
root="$(pwd)"
STEPS="${STEPS-tests ab}"  # unset: "tests ab"; set and empty (STEPS=): build only
has() { [[ " $STEPS " == *" $1 "* ]]; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl >/dev/null 2>&1
export PYTHONPATH="$root/python:/tmp/site" PYTHONUNBUFFERED=1
if [ ! -f /tmp/sc-build/build.ninja ]; then
  cmake -S . -B /tmp/sc-build -G Ninja -DCMAKE_BUILD_TYPE=Release -DSPEECHCORE_CUDA=ON -DSPEECHCORE_BUILD_PYTHON=ON \
    -DSPEECHCORE_BUILD_TESTS=OFF -DSPEECHCORE_OPENBLAS_ROOT=/tmp/site/scipy_openblas32 \
    -Dpybind11_DIR="$(python3 -m pybind11 --cmakedir)" -DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc > "$OUT/configure.log" 2>&1 || { tail -30 "$OUT/configure.log"; exit 1; }
fi
t0=$(date +%s)
cmake --build /tmp/sc-build -j 16 > "$OUT/build.log" 2>&1 || { grep -E "error" "$OUT/build.log" | head -30; exit 1; }
echo "build: $(( $(date +%s) - t0 )) s"
ln -sf /tmp/sc-build/python/_C*.so python/speechcore/
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,memory.used --format=csv,noheader
if has tests; then
  timeout ${TESTT:-300} python3 -m pytest -q -m cuda -k "${TESTK:-engine or mel}" tests/ -p no:cacheprovider 2>&1 | grep -E "FAILED|ERROR|passed|failed" | tail -15
fi
if has ab; then  # batch 128: step buckets on/off alternated
  for v in ${ABV:-1 0 1 0}; do
    echo "== SPEECHCORE_STEP_BUCKETS=$v ${ABX:-}"
    env SPEECHCORE_STEP_BUCKETS=$v ${ABX:-} SPEECHCORE_PROFILE=1 timeout 200 python3 benchmarks/decode_step_gpu.py --batches 128 --modes fused --repeats 2 --ckpt /tmp/ck 2>&1 \
      | grep -E "batch|engine runner|encoder lane|RTFx|ms" | grep -v "^\[speechcore profile\] [0-9]* windows" | tail -8
  done
fi
if has wg; then
  timeout 300 python3 benchmarks/whisper_gpu.py --model large-v3 ${WGX:---batches 1,16,128 --skip-transformers} 2>&1 | grep -v "^\[transformers\]" | tail -25
fi
if has serve; then
  for v in ${SERVEV:-1 0}; do
    echo "== serve SPEECHCORE_STEP_BUCKETS=$v"
    env SPEECHCORE_STEP_BUCKETS=$v timeout 300 python3 benchmarks/engine_gpu.py --clips 300 --long-files 0 --skip-transformers --loads 0.5 --workdir /tmp/eg 2>&1 | tail -14
  done
fi
if has eg; then
  timeout 540 python3 benchmarks/engine_gpu.py --model large-v3 ${EGX:---hf-batches 128} 2>&1 | tail -30
fi
if has envab; then  # one switch alternated on the batch-1 window, same build
  for v in ${ENVABV:-1 0 1}; do
    env "${ENVAB:-SPEECHCORE_OUT_FOLD}=$v" timeout 200 python3 benchmarks/decode_step_gpu.py --batches 1 \
      --modes fused --repeats 3 --ckpt /tmp/ck --direct 2>&1 | grep "^\[fused"
  done
fi
if has fold; then
  timeout 150 python3 -m pytest -q -s -m cuda tests/test_cuda_attention.py tests/test_cuda_gemm.py \
    tests/test_cuda_decode_fusion.py -k "fold or residual_terms or two_row" -p no:cacheprovider 2>&1 \
    | grep -E "first difference|^E |FAILED|passed|failed" | tail -30
  SPEECHCORE_OUT_FOLD=1 timeout 120 python3 benchmarks/decode_step_gpu.py --batches 1 --modes fused --repeats 2 \
    --ckpt /tmp/ck --direct --trace 2>&1 | grep -E "^\[fused|steps of|layer:|part |after the layers" | head -16
fi
if has direct; then  # the working tree against $BASE, same machine, alternated
  base="${BASE:-HEAD}"
  rm -rf /tmp/sc-base-src && git worktree prune && git worktree add -f --detach /tmp/sc-base-src "$base" >/dev/null 2>&1 \
    || { echo "no worktree for $base"; exit 1; }
  if [ ! -f /tmp/sc-base/build.ninja ]; then
    cmake -S /tmp/sc-base-src -B /tmp/sc-base -G Ninja -DCMAKE_BUILD_TYPE=Release -DSPEECHCORE_CUDA=ON -DSPEECHCORE_BUILD_PYTHON=ON \
      -DSPEECHCORE_BUILD_TESTS=OFF -DSPEECHCORE_OPENBLAS_ROOT=/tmp/site/scipy_openblas32 \
      -Dpybind11_DIR="$(python3 -m pybind11 --cmakedir)" -DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc > "$OUT/configure-base.log" 2>&1
  fi
  t0=$(date +%s)
  cmake --build /tmp/sc-base -j 16 > "$OUT/build-base.log" 2>&1 || { grep -E "error" "$OUT/build-base.log" | head -30; exit 1; }
  echo "base build ($(git rev-parse --short "$base")): $(( $(date +%s) - t0 )) s"
  ln -sf /tmp/sc-base/python/_C*.so /tmp/sc-base-src/python/speechcore/
  for i in $(seq ${DIRN:-2}); do
    for tree in new base; do
      pp="$root/python"; [ $tree = base ] && pp=/tmp/sc-base-src/python
      echo "== $tree"
      env ${DIRX:-} PYTHONPATH="$pp:/tmp/site" timeout 200 python3 benchmarks/decode_step_gpu.py --batches 1 --modes fused \
        --repeats 3 --ckpt /tmp/ck --direct $([ $i = 1 ] && echo --trace) 2>&1 | grep -E "^\[fused|steps of|layer:|part |embedding:|after the layers" | head -24
    done
  done
fi
if has trace; then
  for b in ${TRB:-1 8}; do
    timeout 200 python3 benchmarks/decode_step_gpu.py --batches $b --modes fused --repeats 1 --ckpt /tmp/ck --trace 2>&1 | grep -v "Writing model" | tail -40
  done
fi
