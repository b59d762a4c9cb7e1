// Skinny products for decoder steps: y[m, n] = x[m, k] w[n, k]^T (+ bias) (+ y) for m <= 8.
// A decode step multiplies a few token rows by every weight matrix once; that is a read of the
// weights at memory bandwidth, which general GEMM tilings (a 128-wide tile of n per block,
// m padded to 64) do not reach for m this small. Here one warp owns one output feature n:
// it streams w's row n with 16-byte loads (several in flight per lane) and dots it with all m
// rows of x (small, served from L1/L2), so each weight byte is read once; float32 accumulation,
// one rounding to the output type, bias and residual fused.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <type_traits>

#include "kernel_utils.cuh"
#include "speechcore_cuda/gemm.h"

namespace speechcore::cuda {

namespace {

using namespace detail;

constexpr int kGemvWarps = 8;   // output features per block
constexpr int kGemvUnroll = 4;  // 16-byte weight loads in flight per lane

template <typename T, int V>
__device__ __forceinline__ void load_vals(const T* p, float (&out)[V]) {
  if constexpr (V == 1) {
    out[0] = to_float(p[0]);
  } else {
    const Pack<T> pk = load_pack(p);
#pragma unroll
    for (int i = 0; i < V; ++i) out[i] = to_float(pk.v[i]);
  }
}

// V: elements per access (16 bytes, or 1 for unaligned/odd shapes). M: rows of x.
template <typename T, typename OutT, int V, int M>
__global__ void __launch_bounds__(kGemvWarps * 32) gemv_kernel(const T* __restrict__ x, const T* __restrict__ w,
                                                               const T* __restrict__ bias, OutT* __restrict__ y,
                                                               int n, int k, bool accumulate, bool gelu) {
  const int lane = threadIdx.x & 31;
  const int col = blockIdx.x * kGemvWarps + (threadIdx.x >> 5);
  if (col >= n) return;  // whole warps leave together
  const T* wr = w + static_cast<int64_t>(col) * k;
  float acc[M];
#pragma unroll
  for (int r = 0; r < M; ++r) acc[r] = 0.0f;
  constexpr int kStep = 32 * V;  // elements per warp-wide access
  for (int base = lane * V; base < k; base += kStep * kGemvUnroll) {
    float wv[kGemvUnroll][V];
#pragma unroll
    for (int u = 0; u < kGemvUnroll; ++u) {
      const int kk = base + u * kStep;
      if (kk < k) {
        load_vals<T, V>(wr + kk, wv[u]);
      } else {
#pragma unroll
        for (int i = 0; i < V; ++i) wv[u][i] = 0.0f;
      }
    }
#pragma unroll
    for (int u = 0; u < kGemvUnroll; ++u) {
      const int kk = base + u * kStep;
      if (kk >= k) break;
#pragma unroll
      for (int r = 0; r < M; ++r) {
        float xv[V];
        load_vals<T, V>(x + static_cast<int64_t>(r) * k + kk, xv);
#pragma unroll
        for (int i = 0; i < V; ++i) acc[r] = fmaf(xv[i], wv[u][i], acc[r]);
      }
    }
  }
#pragma unroll
  for (int r = 0; r < M; ++r) acc[r] = warp_sum(acc[r]);
  if (lane == 0) {
    const float b = bias ? to_float(bias[col]) : 0.0f;
#pragma unroll
    for (int r = 0; r < M; ++r) {
      OutT* out = y + static_cast<int64_t>(r) * n + col;
      float v = acc[r] + b;
      if (gelu) v = gelu_erf(v);
      if (accumulate) {
        if constexpr (std::is_same_v<OutT, float>) v += *out;
        else v += to_float(*out);
      }
      if constexpr (std::is_same_v<OutT, float>) *out = v;
      else *out = from_float<T>(v);
    }
  }
}

template <typename T, typename OutT, int V>
void launch_rows(int m, const T* x, const T* w, const T* bias, OutT* y, int n, int k, bool accumulate, bool gelu,
                 cudaStream_t s) {
  const dim3 grid(static_cast<unsigned>((n + kGemvWarps - 1) / kGemvWarps)), block(kGemvWarps * 32);
  switch (m) {
#define SC_GEMV_CASE(MM) \
  case MM: gemv_kernel<T, OutT, V, MM><<<grid, block, 0, s>>>(x, w, bias, y, n, k, accumulate, gelu); break;
    SC_GEMV_CASE(1) SC_GEMV_CASE(2) SC_GEMV_CASE(3) SC_GEMV_CASE(4)
    SC_GEMV_CASE(5) SC_GEMV_CASE(6) SC_GEMV_CASE(7) SC_GEMV_CASE(8)
#undef SC_GEMV_CASE
    default: break;
  }
}

}  // namespace

void gemv(DataType dt, const void* x, const void* w, const void* bias, void* y, bool y_float32, int64_t m, int64_t n,
          int64_t k, bool accumulate, bool gelu, cudaStream_t stream) {
  require(m >= 1 && m <= kGemvMaxRows && n >= 1 && k >= 1 && n < (int64_t(1) << 31) && k < (int64_t(1) << 31),
          "gemv: need 1 <= m <= ", kGemvMaxRows, ", n, k >= 1, got m ", m, ", n ", n, ", k ", k);
  require(x && w && y, "gemv: null pointer");
  require(!(y_float32 && bias), "gemv: a float32 output takes no bias");
  dispatch_type(dt, [&](auto tag) {
    using T = decltype(tag);
    constexpr int V = Pack<T>::kSize;
    const bool vec = k % V == 0 && aligned16(x) && aligned16(w);
    const T* xp = static_cast<const T*>(x);
    const T* wp = static_cast<const T*>(w);
    const T* bp = static_cast<const T*>(bias);
    const int mi = static_cast<int>(m), ni = static_cast<int>(n), ki = static_cast<int>(k);
    if (y_float32) {
      float* yp = static_cast<float*>(y);
      if (vec) launch_rows<T, float, V>(mi, xp, wp, bp, yp, ni, ki, accumulate, gelu, stream);
      else launch_rows<T, float, 1>(mi, xp, wp, bp, yp, ni, ki, accumulate, gelu, stream);
    } else {
      T* yp = static_cast<T*>(y);
      if (vec) launch_rows<T, T, V>(mi, xp, wp, bp, yp, ni, ki, accumulate, gelu, stream);
      else launch_rows<T, T, 1>(mi, xp, wp, bp, yp, ni, ki, accumulate, gelu, stream);
    }
  });
  SC_CUDA_CHECK_LAUNCH("gemv");
}

}  // namespace speechcore::cuda
