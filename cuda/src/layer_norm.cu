// Layer normalization, one block per row, the row held in registers (two-pass mean and
// variance in float32, as ops::layer_norm on the CPU). Rows too long for the register path
// go through a loop kernel that reads the row from memory three times. Launched with
// programmatic dependent launch (kernel_utils.cuh): waits for the previous kernel first.
#include "kernel_utils.cuh"
#include "speechcore_cuda/elementwise.h"

namespace speechcore::cuda {

namespace {

using namespace detail;

constexpr int kThreads = 128;
constexpr int kMaxItems = 8;  // accesses per thread on the register path

// V: elements per access (1, or a 16-byte pack); kItems: accesses per thread.
// Thread `tid` owns the accesses tid, tid + kThreads, ... of the row, so a warp's accesses are
// consecutive. y may alias x: every element is read and written by the same thread.
template <typename T, int V, int kItems>
__global__ void __launch_bounds__(kThreads) layer_norm_regs(const T* x, const T* gamma, const T* beta, T* y,
                                                            int cols, float eps) {
  __shared__ float red[32];
  pdl_wait();  // x comes from the previous kernel
  pdl_trigger();
  const int64_t off = static_cast<int64_t>(blockIdx.x) * cols;
  const T* xr = x + off;
  T* yr = y + off;
  const int nacc = cols / V;
  float v[kItems][V];
  float sum = 0.0f;
#pragma unroll
  for (int i = 0; i < kItems; ++i) {
    const int a = i * kThreads + static_cast<int>(threadIdx.x);
    if (a < nacc) {
      if constexpr (V == 1) {
        v[i][0] = to_float(xr[a]);
      } else {
        const Pack<T> p = load_pack(xr + a * V);
#pragma unroll
        for (int k = 0; k < V; ++k) v[i][k] = to_float(p.v[k]);
      }
#pragma unroll
      for (int k = 0; k < V; ++k) sum += v[i][k];
    } else {
#pragma unroll
      for (int k = 0; k < V; ++k) v[i][k] = 0.0f;
    }
  }
  const float mean = block_sum(sum, red) / static_cast<float>(cols);
  float sq = 0.0f;
#pragma unroll
  for (int i = 0; i < kItems; ++i) {
    const int a = i * kThreads + static_cast<int>(threadIdx.x);
    if (a < nacc) {
#pragma unroll
      for (int k = 0; k < V; ++k) {
        const float dlt = v[i][k] - mean;
        sq += dlt * dlt;
      }
    }
  }
  const float var = block_sum(sq, red) / static_cast<float>(cols);
  const float inv = 1.0f / sqrtf(var + eps);
#pragma unroll
  for (int i = 0; i < kItems; ++i) {
    const int a = i * kThreads + static_cast<int>(threadIdx.x);
    if (a < nacc) {
      if constexpr (V == 1) {
        yr[a] = from_float<T>((v[i][0] - mean) * inv * to_float(gamma[a]) + to_float(beta[a]));
      } else {
        const Pack<T> g = load_pack(gamma + a * V);
        const Pack<T> b = load_pack(beta + a * V);
        Pack<T> o;
#pragma unroll
        for (int k = 0; k < V; ++k) o.v[k] = from_float<T>((v[i][k] - mean) * inv * to_float(g.v[k]) + to_float(b.v[k]));
        store_pack(yr + a * V, o);
      }
    }
  }
}

// Any row length: three passes over the row in memory (mean, variance, output).
template <typename T>
__global__ void __launch_bounds__(256) layer_norm_loop(const T* x, const T* gamma, const T* beta, T* y, int64_t cols,
                                                       float eps) {
  __shared__ float red[32];
  pdl_wait();
  pdl_trigger();
  const int64_t off = static_cast<int64_t>(blockIdx.x) * cols;
  const T* xr = x + off;
  T* yr = y + off;
  float sum = 0.0f;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) sum += to_float(xr[c]);
  const float mean = block_sum(sum, red) / static_cast<float>(cols);
  float sq = 0.0f;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    const float dlt = to_float(xr[c]) - mean;
    sq += dlt * dlt;
  }
  const float inv = 1.0f / sqrtf(block_sum(sq, red) / static_cast<float>(cols) + eps);
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x)
    yr[c] = from_float<T>((to_float(xr[c]) - mean) * inv * to_float(gamma[c]) + to_float(beta[c]));
}

template <typename T, int V>
bool launch_regs(const T* x, const T* g, const T* b, T* y, int64_t rows, int64_t cols, float eps,
                 cudaStream_t stream) {
  const int64_t per_thread = ceil_div(cols / V, kThreads);
  const dim3 grid(static_cast<unsigned>(rows));
  const int c = static_cast<int>(cols);
  const dim3 block(kThreads);
  if (per_thread <= 1) launch(layer_norm_regs<T, V, 1>, grid, block, 0, stream, "layer_norm", x, g, b, y, c, eps);
  else if (per_thread <= 2) launch(layer_norm_regs<T, V, 2>, grid, block, 0, stream, "layer_norm", x, g, b, y, c, eps);
  else if (per_thread <= 4) launch(layer_norm_regs<T, V, 4>, grid, block, 0, stream, "layer_norm", x, g, b, y, c, eps);
  else if (per_thread <= kMaxItems)
    launch(layer_norm_regs<T, V, kMaxItems>, grid, block, 0, stream, "layer_norm", x, g, b, y, c, eps);
  else return false;
  return true;
}

}  // namespace

void layer_norm(DataType dt, const void* x, const void* gamma, const void* beta, void* y, int64_t rows,
                int64_t cols, float eps, cudaStream_t stream) {
  require(rows >= 0 && cols >= 1, "layer_norm: need rows >= 0 and cols >= 1, got rows ", rows, ", cols ", cols);
  require(rows < (int64_t(1) << 31) && cols < (int64_t(1) << 31), "layer_norm: rows/cols too large");
  require(eps >= 0.0f, "layer_norm: eps must be >= 0");
  if (rows == 0) return;
  require(x && gamma && beta && y, "layer_norm: null pointer");
  dispatch_type(dt, [&](auto tag) {
    using T = decltype(tag);
    const T* xp = static_cast<const T*>(x);
    const T* gp = static_cast<const T*>(gamma);
    const T* bp = static_cast<const T*>(beta);
    T* yp = static_cast<T*>(y);
    constexpr int V = Pack<T>::kSize;
    const bool vec = cols % V == 0 && aligned16(x) && aligned16(gamma) && aligned16(beta) && aligned16(y);
    bool done = vec ? launch_regs<T, V>(xp, gp, bp, yp, rows, cols, eps, stream)
                    : launch_regs<T, 1>(xp, gp, bp, yp, rows, cols, eps, stream);
    if (!done)
      launch(layer_norm_loop<T>, dim3(static_cast<unsigned>(rows)), dim3(256), 0, stream, "layer_norm", xp, gp, bp, yp,
             cols, eps);
  });
}

}  // namespace speechcore::cuda
