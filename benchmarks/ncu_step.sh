#!/usr/bin/env bash
# Isolated durations and DRAM bytes of the decode-step kernels (Nsight Compute, clocks left
# alone): 36 kernels (about 3-4 decoder layers) of a steady-state step of seeded large-v3, bf16,
# batch 1, for each mode given (fused / unfused). Run on the H200 after gpu_run.sh has built:
#   SC_TESTS=0 bash benchmarks/gpu_run.sh && bash benchmarks/ncu_step.sh fused unfused
# The last column is GB/s (bytes / ns). Session 6 figures: benchmarks/RESULTS.md.
set -uo pipefail
export PYTHONPATH=$PWD/python:/tmp/site
prof() {
  /usr/local/cuda/bin/ncu --clock-control none --cache-control none -k regex:"gemv|decode_kernel|layer_norm|copy_rows" \
    --launch-skip 2000 --launch-count 36 --print-units base --metrics gpu__time_duration.sum,dram__bytes_read.sum \
    --csv python3 benchmarks/decode_step_gpu.py --batches 1 --repeats 1 --modes "$1" 2>/dev/null \
    | grep -E '^"' | python3 -c '
import csv,sys
rows=list(csv.reader(sys.stdin))
h=rows[0]; ki=h.index("Kernel Name"); mi=h.index("Metric Name"); vi=h.index("Metric Value"); ii=h.index("ID")
d={}
for r in rows[1:]:
    d.setdefault(r[ii],[r[ki][:60],{}])[1][r[mi]]=r[vi]
tot=0
for i,(k,m) in sorted(d.items(), key=lambda x:int(x[0])):
    t=float(m.get("gpu__time_duration.sum","0").replace(",",""))
    b=float(m.get("dram__bytes_read.sum","0").replace(",",""))
    tot+=t
    print(f"{t:10.0f} {b/1e6:8.2f}MB {b/max(t,1):7.1f} GB/s  {k}")
print(f"sum {tot / 1e3:.1f} us over {len(d)} kernels")
'
}
modes=("$@")
[ ${#modes[@]} -gt 0 ] || modes=(fused unfused)
for mode in "${modes[@]}"; do echo "== $mode"; prof "$mode"; done
