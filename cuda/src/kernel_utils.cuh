// Private helpers of the CUDA kernels: element-type conversion, 16-byte packs, the one
// DataType switch, warp/block reductions and host-side argument checks.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>
#include <utility>

#include "speechcore/status.h"
#include "speechcore_cuda/common.h"

namespace speechcore::cuda::detail {

// ---- host side ------------------------------------------------------------------------------

template <typename... Args>
[[noreturn]] void fail(ErrorCode code, Args&&... args) {
  std::ostringstream os;
  (os << ... << args);
  throw Error(code, os.str());
}

// Launcher argument check: throws kInvalidArgument with the concatenated message.
template <typename... Args>
void require(bool cond, Args&&... args) {
  if (!cond) fail(ErrorCode::kInvalidArgument, std::forward<Args>(args)...);
}

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// The one switch from DataType to the element type: f(T{}) with T = float, __half or
// __nv_bfloat16.
template <typename F>
void dispatch_type(DataType dt, F&& f) {
  switch (dt) {
    case DataType::kFloat32: f(float{}); return;
    case DataType::kFloat16: f(__half{}); return;
    case DataType::kBFloat16: f(__nv_bfloat16{}); return;
  }
  fail(ErrorCode::kUnsupported, "unsupported CUDA data type ", static_cast<int>(dt));
}

// ---- programmatic dependent launch (Hopper) ------------------------------------------------
// A kernel launched through launch() may start while the kernel before it on the stream is still
// running (once every block of that one has called pdl_trigger() or exited). Rules for such a
// kernel: before pdl_wait() it may read only what no kernel of the step writes (weights) and
// must write nothing; pdl_wait() returns once the previous kernels have completed and their
// writes are visible. Kernels call pdl_trigger() early so the next one's blocks can start
// loading their weights while this one finishes. Off (plain launches, pdl_wait/pdl_trigger
// no-ops) when SPEECHCORE_PDL=0 or the device is older than compute capability 9.0.
// Captured into CUDA graphs as programmatic edges.
// The current device's compute capability major version (0 when it cannot be read).
inline int current_device_major() {
  int dev = 0, major = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) return 0;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess) return 0;
  return major;
}

inline bool pdl_enabled() {
  static const bool on = [] {
    const char* e = std::getenv("SPEECHCORE_PDL");
    if (e != nullptr && std::strcmp(e, "0") == 0) return false;
    return current_device_major() >= 9;
  }();
  return on;
}

// kernel<<<grid, block, smem, stream>>>(args...), with the programmatic-serialization attribute
// when pdl_enabled() and `stream` is a created stream (not the legacy default stream, whose
// implicit synchronization we leave alone); launch errors throw.
template <typename... KArgs, typename... Args>
void launch(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream, const char* what,
            Args&&... args) {
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  if (stream != nullptr && stream != cudaStreamLegacy && pdl_enabled()) {
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = attr;
    cfg.numAttrs = 1;
  }
  check(cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...), what, __FILE__, __LINE__);
}

// Blocks of `kernel` (`threads` threads, `smem` dynamic bytes) resident on the current device at
// once (SMs x occupancy); 0 when the query fails. Cached per (kernel, threads, smem) (gemv.cu).
int resident_blocks(const void* kernel, int threads, size_t smem);

// ---- device side ----------------------------------------------------------------------------

// Programmatic dependent launch (see launch()): no-ops without the launch attribute.
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

// ---- bulk copies (TMA) counted on shared-memory mbarriers (Hopper) ---------------------------
__device__ __forceinline__ unsigned smem_addr(const void* p) {
  return static_cast<unsigned>(__cvta_generic_to_shared(p));
}
// An mbarrier expecting one arrival a phase (the thread that sets the expected bytes).
__device__ __forceinline__ void mbar_init(uint64_t* bar) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;\n" ::"r"(smem_addr(bar)) : "memory");
}
// Makes mbarrier inits visible to the bulk-copy engine (before the first copy counted on them).
__device__ __forceinline__ void mbar_init_fence() {
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}
// Arrives on `bar` and adds `bytes` to the bytes its current phase waits for.
__device__ __forceinline__ void mbar_expect_tx(uint64_t* bar, unsigned bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_addr(bar)), "r"(bytes)
               : "memory");
}
// Orders this thread's earlier generic-proxy accesses of shared memory before later bulk copies.
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
// Copies `bytes` (a multiple of 16, 16-byte aligned ends) from global into shared memory,
// counted on `bar` (whose expected byte count the caller set).
__device__ __forceinline__ void bulk_copy(void* dst, const void* src, unsigned bytes, uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(smem_addr(dst)),
      "l"(src), "r"(bytes), "r"(smem_addr(bar))
      : "memory");
}
// Waits until `bar` completes the phase of this parity.
__device__ __forceinline__ void mbar_wait(uint64_t* bar, unsigned parity) {
  unsigned done = 0;
  while (!done) {
    asm volatile(
        "{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n selp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(smem_addr(bar)), "r"(parity)
        : "memory");
  }
}

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> __device__ __forceinline__ T from_float(float v);
template <> __device__ __forceinline__ float from_float<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

// 16 bytes of elements, loaded and stored with one 128-bit access (the address must be
// 16-byte aligned).
template <typename T>
struct alignas(16) Pack {
  static constexpr int kSize = 16 / static_cast<int>(sizeof(T));
  T v[kSize];
};

template <typename T>
__device__ __forceinline__ Pack<T> load_pack(const T* p) {
  return *reinterpret_cast<const Pack<T>*>(p);
}
template <typename T>
__device__ __forceinline__ void store_pack(T* p, const Pack<T>& v) {
  *reinterpret_cast<Pack<T>*>(p) = v;
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
// `red` is __shared__ float[32]; the trailing barrier lets the caller reuse it.
__device__ __forceinline__ float block_sum(float v, float* red) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_sum(v);
  if (lane == 0) red[warp] = v;
  __syncthreads();
  float r = lane < warps ? red[lane] : 0.0f;
  r = warp_sum(r);
  __syncthreads();
  return r;
}

__device__ __forceinline__ float block_max(float v, float* red) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_max(v);
  if (lane == 0) red[warp] = v;
  __syncthreads();
  float r = lane < warps ? red[lane] : -INFINITY;
  r = warp_max(r);
  __syncthreads();
  return r;
}

// layer_norm()'s row statistics, as the fused decode kernels replay them bit for bit: its block
// of kLnStatThreads threads reads the row in accesses of V elements, thread t taking accesses t,
// t + kLnStatThreads, ...; warp j's share (its lane L being thread L + 32 j) is returned here
// after the xor-tree warp sum: pass 0 sums the elements, pass 1 the squared deviations from
// `mean`. load(a) returns access a (a pack with .v[V]). ln_block_stat combines the 4 warps'
// shares as block_sum does and divides by the row length k.
constexpr int kLnStatThreads = 128;
template <int V, typename Load>
__device__ __forceinline__ float ln_warp_stat(Load&& load, int nacc, int j, int lane, int pass, float mean) {
  float sum = 0.0f;
  for (int a = lane + 32 * j; a < nacc; a += kLnStatThreads) {
    const auto xv = load(a);
#pragma unroll
    for (int i = 0; i < V; ++i) {
      if (pass) {
        const float dlt = to_float(xv.v[i]) - mean;
        sum += dlt * dlt;
      } else {
        sum += to_float(xv.v[i]);
      }
    }
  }
  return warp_sum(sum);
}
__device__ __forceinline__ float ln_block_stat(const float* warp_stats, int k) {
  return ((warp_stats[0] + warp_stats[2]) + (warp_stats[1] + warp_stats[3])) / static_cast<float>(k);
}

__device__ __forceinline__ float gelu_erf(float x) {
  return 0.5f * x * (1.0f + erff(x * 0.70710678118654752440f));
}

}  // namespace speechcore::cuda::detail
