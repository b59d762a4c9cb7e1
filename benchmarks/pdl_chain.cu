// What a dependent decode-step phase costs on this GPU, independent of the engine: chains of
// kernels captured in one CUDA graph, each kernel depending on the one before (programmatic
// dependent launch as in the decode step, or plain stream order), timed per kernel.
//
// Variants (one 256-kernel chain each, a chain replayed 20 times after a warm-up):
//   empty      griddepcontrol.wait and nothing else (the bare kernel boundary)
//   vec        each block reads the previous kernel's 1280-float vector, block-reduces it, writes
//              its slice (the dependent read + a block reduction: a layer norm's skeleton)
//   gemv-pre   y = W x, W 1280x1280 bf16 (3.3 MB), one warp a row, every weight load issued
//              before the wait (what the fused step's 1280-wide products do)
//   gemv-post  the same with the weight loads after the wait
//   fc1-pre    W 5120x1280 (13.1 MB), loads before the wait
//   cluster8   `vec` in clusters of 8 blocks with a cluster barrier and a DSMEM read after it
//   red64      `vec` + 214 int64 atomic adds a block (120 blocks) into one 1280-vector
//
// Build and run (device): nvcc -O3 -arch=sm_90a -o /tmp/pdl_chain benchmarks/pdl_chain.cu && /tmp/pdl_chain
#include <cooperative_groups.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <vector>

namespace cg = cooperative_groups;

#define CK(x)                                                                      \
  do {                                                                             \
    cudaError_t e_ = (x);                                                          \
    if (e_ != cudaSuccess) {                                                       \
      std::fprintf(stderr, "%s:%d %s\n", __FILE__, __LINE__, cudaGetErrorString(e_)); \
      std::exit(1);                                                                \
    }                                                                              \
  } while (0)

__device__ __forceinline__ void wait_prev() { asm volatile("griddepcontrol.wait;" ::: "memory"); }
__device__ __forceinline__ void let_next() { asm volatile("griddepcontrol.launch_dependents;"); }

constexpr int kD = 1280;

__device__ __forceinline__ float block_sum(float v, float* sh) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  if ((threadIdx.x & 31) == 0) sh[threadIdx.x >> 5] = v;
  __syncthreads();
  float t = 0.0f;
  for (int i = 0; i < static_cast<int>(blockDim.x >> 5); ++i) t += sh[i];
  __syncthreads();
  return t;
}

// The previous kernel's vector, summed over the block (every kernel below starts with it).
__device__ __forceinline__ float read_reduce(const float* x, float* sh) {
  float v = 0.0f;
  for (int i = threadIdx.x; i < kD; i += blockDim.x) v += __ldcg(x + i);
  return block_sum(v, sh);
}

__global__ void k_empty(const float*, float*) {
  wait_prev();
  let_next();
}

__global__ void k_vec(const float* x, float* y) {
  __shared__ float sh[32];
  wait_prev();
  let_next();
  const float s = read_reduce(x, sh);
  for (int i = blockIdx.x * 10 + threadIdx.x; i < kD && threadIdx.x < 10; i += kD) y[i] = s * 1e-9f + 1.0f;
}

// One warp per output row; k = kD; 5 packs of 8 bf16 per lane.
template <bool kPre>
__global__ void k_gemv(const float* x, float* y, const __nv_bfloat16* w, int n) {
  __shared__ float xs[kD];
  const int lane = threadIdx.x & 31, row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  uint4 p[5];
  const uint4* wr = reinterpret_cast<const uint4*>(w + static_cast<size_t>(row < n ? row : 0) * kD);
  if (kPre)
#pragma unroll
    for (int u = 0; u < 5; ++u) p[u] = wr[lane + 32 * u];
  wait_prev();
  let_next();
  if (!kPre)
#pragma unroll
    for (int u = 0; u < 5; ++u) p[u] = wr[lane + 32 * u];
  for (int i = threadIdx.x; i < kD; i += blockDim.x) xs[i] = __ldcg(x + i);
  __syncthreads();
  float acc = 0.0f;
#pragma unroll
  for (int u = 0; u < 5; ++u) {
    const __nv_bfloat16* e = reinterpret_cast<const __nv_bfloat16*>(&p[u]);
    const int c = (lane + 32 * u) * 8;
#pragma unroll
    for (int j = 0; j < 8; ++j) acc = fmaf(__bfloat162float(e[j]), xs[c + j], acc);
  }
  for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
  if (lane == 0 && row < n) y[row % kD] = acc * 1e-9f + 1.0f;
}

__global__ void __cluster_dims__(8, 1, 1) k_cluster8(const float* x, float* y) {
  __shared__ float sh[32];
  __shared__ float mine;
  cg::cluster_group cl = cg::this_cluster();
  wait_prev();
  let_next();
  const float s = read_reduce(x, sh);
  if (threadIdx.x == 0) mine = s;
  cl.sync();
  float t = 0.0f;
  if (threadIdx.x < 8) t = *cl.map_shared_rank(&mine, threadIdx.x);
  cl.sync();
  if (threadIdx.x < 8) y[(blockIdx.x * 8 + threadIdx.x) % kD] = t * 1e-9f + 1.0f;
}

__global__ void k_red64(const float* x, float* y, unsigned long long* acc) {
  __shared__ float sh[32];
  wait_prev();
  let_next();
  const float s = read_reduce(x, sh);
  const int base = (blockIdx.x % 6) * 214;
  if (threadIdx.x < 214 && base + threadIdx.x < kD)
    atomicAdd(acc + base + threadIdx.x, static_cast<unsigned long long>(static_cast<long long>(s * 16.0f)));
  if (threadIdx.x < 10) y[(blockIdx.x * 10 + threadIdx.x) % kD] = s * 1e-9f + 1.0f;
}

struct Variant {
  const char* name;
  int grid, block;
};

int main() {
  float *x, *y;
  __nv_bfloat16* w;
  unsigned long long* acc;
  const size_t wbytes = static_cast<size_t>(5120) * kD * 2 * 64;  // 64 distinct layers of fc1 size
  CK(cudaMalloc(&x, kD * 4));
  CK(cudaMalloc(&y, kD * 4));
  CK(cudaMalloc(&w, wbytes));
  CK(cudaMalloc(&acc, kD * 8));
  CK(cudaMemset(x, 0, kD * 4));
  CK(cudaMemset(y, 0, kD * 4));
  CK(cudaMemset(w, 0, wbytes));
  CK(cudaMemset(acc, 0, kD * 8));
  cudaStream_t s;
  CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  constexpr int kChain = 256;
  const char* names[] = {"empty", "vec", "gemv-pre", "gemv-post", "fc1-pre", "cluster8", "red64"};
  for (int pdl = 1; pdl >= 0; --pdl) {
    for (int v = 0; v < 7; ++v) {
      cudaGraph_t g;
      CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
      for (int i = 0; i < kChain; ++i) {
        cudaLaunchConfig_t cfg{};
        cudaLaunchAttribute at[1];
        at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
        at[0].val.programmaticStreamSerializationAllowed = 1;
        cfg.attrs = at;
        cfg.numAttrs = pdl ? 1 : 0;
        cfg.stream = s;
        cfg.blockDim = dim3(256);
        const float* in = (i & 1) ? y : x;
        float* out = (i & 1) ? x : y;
        // Weights walk through 64 distinct matrices so that L2 (50 MB) does not hold them.
        const __nv_bfloat16* wl = w + static_cast<size_t>(i % 64) * 5120 * kD;
        switch (v) {
          case 0: cfg.gridDim = dim3(132); CK(cudaLaunchKernelEx(&cfg, k_empty, in, out)); break;
          case 1: cfg.gridDim = dim3(132); CK(cudaLaunchKernelEx(&cfg, k_vec, in, out)); break;
          case 2: cfg.gridDim = dim3(160); CK(cudaLaunchKernelEx(&cfg, k_gemv<true>, in, out, wl, 1280)); break;
          case 3: cfg.gridDim = dim3(160); CK(cudaLaunchKernelEx(&cfg, k_gemv<false>, in, out, wl, 1280)); break;
          case 4: cfg.gridDim = dim3(640); CK(cudaLaunchKernelEx(&cfg, k_gemv<true>, in, out, wl, 5120)); break;
          case 5: cfg.gridDim = dim3(128); CK(cudaLaunchKernelEx(&cfg, k_cluster8, in, out)); break;
          case 6: cfg.gridDim = dim3(120); CK(cudaLaunchKernelEx(&cfg, k_red64, in, out, acc)); break;
        }
      }
      CK(cudaStreamEndCapture(s, &g));
      cudaGraphExec_t ge;
      CK(cudaGraphInstantiate(&ge, g, 0));
      for (int r = 0; r < 3; ++r) CK(cudaGraphLaunch(ge, s));
      CK(cudaStreamSynchronize(s));
      cudaEvent_t a, b;
      CK(cudaEventCreate(&a));
      CK(cudaEventCreate(&b));
      constexpr int kReps = 20;
      CK(cudaEventRecord(a, s));
      for (int r = 0; r < kReps; ++r) CK(cudaGraphLaunch(ge, s));
      CK(cudaEventRecord(b, s));
      CK(cudaEventSynchronize(b));
      float ms = 0.0f;
      CK(cudaEventElapsedTime(&ms, a, b));
      std::printf("%-5s %-10s %7.2f us a kernel\n", pdl ? "pdl" : "plain", names[v], ms * 1000.0f / (kReps * kChain));
      CK(cudaGraphExecDestroy(ge));
      CK(cudaGraphDestroy(g));
    }
  }
  return 0;
}
