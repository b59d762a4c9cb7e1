// Elementwise kernels: GELU, y += x, bias + GELU and the positional add (row broadcasts).
// 16-byte accesses when every pointer is 16-byte aligned (and, for the row kernels, the row
// length is a multiple of a pack); scalar accesses otherwise.
#include <algorithm>

#include "kernel_utils.cuh"
#include "speechcore_cuda/elementwise.h"

namespace speechcore::cuda {

namespace {

using namespace detail;

constexpr int kFlatThreads = 256;
constexpr int64_t kMaxFlatBlocks = 132 * 16;  // grid-stride beyond this

// kAdd: y[i] += x[i]; else y[i] = gelu(y[i]).
template <bool kAdd>
__device__ __forceinline__ float flat_op(float yv, float xv) {
  if constexpr (kAdd) return yv + xv;
  else return gelu_erf(yv);
}

// V elements per access. Accesses [0, n / V) are grid-strided; the last n % V elements (only
// when V > 1) are done by the first threads of the grid.
template <typename T, int V, bool kAdd>
__global__ void __launch_bounds__(kFlatThreads) flat_kernel(T* y, const T* x, int64_t n) {
  const int64_t nacc = n / V;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t a = first; a < nacc; a += step) {
    if constexpr (V == 1) {
      y[a] = from_float<T>(flat_op<kAdd>(to_float(y[a]), kAdd ? to_float(x[a]) : 0.0f));
    } else {
      Pack<T> yp = load_pack(y + a * V);
      Pack<T> xp;
      if constexpr (kAdd) xp = load_pack(x + a * V);
#pragma unroll
      for (int k = 0; k < V; ++k)
        yp.v[k] = from_float<T>(flat_op<kAdd>(to_float(yp.v[k]), kAdd ? to_float(xp.v[k]) : 0.0f));
      store_pack(y + a * V, yp);
    }
  }
  if constexpr (V > 1) {
    const int64_t i = nacc * V + first;
    if (i < n) y[i] = from_float<T>(flat_op<kAdd>(to_float(y[i]), kAdd ? to_float(x[i]) : 0.0f));
  }
}

template <bool kAdd>
void launch_flat(DataType dt, void* y, const void* x, int64_t n, cudaStream_t stream) {
  dispatch_type(dt, [&](auto tag) {
    using T = decltype(tag);
    constexpr int V = Pack<T>::kSize;
    T* yp = static_cast<T*>(y);
    const T* xp = static_cast<const T*>(x);
    const bool vec = aligned16(y) && (!kAdd || aligned16(x));
    const int64_t work = vec ? std::max<int64_t>(n / V, 1) : n;
    const unsigned blocks = static_cast<unsigned>(std::min(ceil_div(work, kFlatThreads), kMaxFlatBlocks));
    if (vec) flat_kernel<T, V, kAdd><<<blocks, kFlatThreads, 0, stream>>>(yp, xp, n);
    else flat_kernel<T, 1, kAdd><<<blocks, kFlatThreads, 0, stream>>>(yp, xp, n);
  });
}

// x[r, c] = f(x[r, c] + p[r % period, c]), f = GELU or identity. Grid: x over column accesses
// (blockDim.x each), y over rows (grid-strided). V elements per access, cols % V == 0.
template <typename T, int V, bool kGelu>
__global__ void __launch_bounds__(128) row_bcast_kernel(T* x, const T* p, int64_t rows, int cols, int64_t period) {
  const int a = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  if (a >= cols / V) return;
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
    T* xr = x + r * cols + static_cast<int64_t>(a) * V;
    const T* pr = p + (period == 1 ? 0 : r % period) * cols + static_cast<int64_t>(a) * V;
    if constexpr (V == 1) {
      const float v = to_float(*xr) + to_float(*pr);
      *xr = from_float<T>(kGelu ? gelu_erf(v) : v);
    } else {
      Pack<T> xp = load_pack(xr);
      const Pack<T> pp = load_pack(pr);
#pragma unroll
      for (int k = 0; k < V; ++k) {
        const float v = to_float(xp.v[k]) + to_float(pp.v[k]);
        xp.v[k] = from_float<T>(kGelu ? gelu_erf(v) : v);
      }
      store_pack(xr, xp);
    }
  }
}

template <bool kGelu>
void launch_row_bcast(DataType dt, void* x, const void* p, int64_t rows, int64_t cols, int64_t period,
                      cudaStream_t stream) {
  dispatch_type(dt, [&](auto tag) {
    using T = decltype(tag);
    constexpr int V = Pack<T>::kSize;
    const bool vec = cols % V == 0 && aligned16(x) && aligned16(p);
    const int64_t nacc = vec ? cols / V : cols;
    const int threads = static_cast<int>(std::min<int64_t>(128, ceil_div(nacc, 32) * 32));
    const dim3 grid(static_cast<unsigned>(ceil_div(nacc, threads)), static_cast<unsigned>(std::min<int64_t>(rows, 65535)));
    T* xp = static_cast<T*>(x);
    const T* pp = static_cast<const T*>(p);
    const int c = static_cast<int>(cols);
    if (vec) row_bcast_kernel<T, V, kGelu><<<grid, threads, 0, stream>>>(xp, pp, rows, c, period);
    else row_bcast_kernel<T, 1, kGelu><<<grid, threads, 0, stream>>>(xp, pp, rows, c, period);
  });
}

}  // namespace

void gelu(DataType dt, void* x, int64_t n, cudaStream_t stream) {
  require(n >= 0, "gelu: n must be >= 0, got ", n);
  if (n == 0) return;
  require(x != nullptr, "gelu: null pointer");
  launch_flat<false>(dt, x, nullptr, n, stream);
  SC_CUDA_CHECK_LAUNCH("gelu");
}

void add(DataType dt, const void* x, void* y, int64_t n, cudaStream_t stream) {
  require(n >= 0, "add: n must be >= 0, got ", n);
  if (n == 0) return;
  require(x != nullptr && y != nullptr, "add: null pointer");
  launch_flat<true>(dt, y, x, n, stream);
  SC_CUDA_CHECK_LAUNCH("add");
}

void bias_gelu(DataType dt, void* x, const void* bias, int64_t rows, int64_t cols, cudaStream_t stream) {
  require(rows >= 0 && cols >= 1 && cols < (int64_t(1) << 31), "bias_gelu: need rows >= 0 and 1 <= cols < 2^31, got ",
          rows, ", ", cols);
  if (rows == 0) return;
  require(x != nullptr && bias != nullptr, "bias_gelu: null pointer");
  launch_row_bcast<true>(dt, x, bias, rows, cols, 1, stream);
  SC_CUDA_CHECK_LAUNCH("bias_gelu");
}

void add_positional(DataType dt, void* x, const void* pos, int64_t batch, int64_t t, int64_t d,
                    cudaStream_t stream) {
  require(batch >= 0 && t >= 0 && d >= 1 && d < (int64_t(1) << 31),
          "add_positional: need batch >= 0, t >= 0, 1 <= d < 2^31, got ", batch, ", ", t, ", ", d);
  if (batch == 0 || t == 0) return;
  require(x != nullptr && pos != nullptr, "add_positional: null pointer");
  launch_row_bcast<false>(dt, x, pos, batch * t, d, t, stream);
  SC_CUDA_CHECK_LAUNCH("add_positional");
}

}  // namespace speechcore::cuda
