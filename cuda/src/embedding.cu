// Gathers: token + positional embedding (decoder input), im2col of the conv stem.
#include <algorithm>

#include "kernel_utils.cuh"
#include "speechcore_cuda/elementwise.h"

namespace speechcore::cuda {

namespace {

using namespace detail;

// One block per token; threads over the row's accesses (V elements each, d % V == 0).
template <typename T, int V>
__global__ void __launch_bounds__(128) embedding_kernel(const T* table, const int32_t* ids, const int32_t* positions,
                                                        const T* pos_table, T* out, int d) {
  const int64_t i = blockIdx.x;
  const T* e = table + static_cast<int64_t>(ids[i]) * d;
  const T* p = pos_table + static_cast<int64_t>(positions[i]) * d;
  T* o = out + i * d;
  for (int a = threadIdx.x; a < d / V; a += blockDim.x) {
    if constexpr (V == 1) {
      o[a] = from_float<T>(to_float(e[a]) + to_float(p[a]));
    } else {
      const Pack<T> ev = load_pack(e + a * V), pv = load_pack(p + a * V);
      Pack<T> ov;
#pragma unroll
      for (int k = 0; k < V; ++k) ov.v[k] = from_float<T>(to_float(ev.v[k]) + to_float(pv.v[k]));
      store_pack(o + a * V, ov);
    }
  }
}

// One block per row; V elements per access.
template <typename T, int V>
__global__ void __launch_bounds__(128) copy_rows_kernel(const T* src, int64_t ld_src, const int32_t* src_rows, T* dst,
                                                        int64_t ld_dst, const int32_t* dst_rows, int cols) {
  const int64_t i = blockIdx.x;
  const T* s = src + (src_rows ? static_cast<int64_t>(src_rows[i]) : i) * ld_src;
  T* d = dst + (dst_rows ? static_cast<int64_t>(dst_rows[i]) : i) * ld_dst;
  for (int a = threadIdx.x; a < cols / V; a += blockDim.x) {
    if constexpr (V == 1) d[a] = s[a];
    else store_pack(d + a * V, load_pack(s + a * V));
  }
}

// One block per output row (b, t) of col; threads over its c_in * kw entries (coalesced writes).
template <typename T>
__global__ void __launch_bounds__(256) im2col_kernel(const T* x, int64_t t_in, int64_t cstride, int64_t tstride,
                                                     int64_t batch_stride, int64_t t_out, int kcols, int kw,
                                                     int stride, int pad, T* col) {
  const int64_t row = blockIdx.x;
  const int64_t b = row / t_out, t = row - b * t_out;
  const T* xb = x + b * batch_stride;
  T* dst = col + row * kcols;
  const int64_t t0 = t * stride - pad;
  for (int k = threadIdx.x; k < kcols; k += blockDim.x) {
    const int c = k / kw, j = k - c * kw;
    const int64_t src = t0 + j;
    dst[k] = (src >= 0 && src < t_in) ? xb[c * cstride + src * tstride] : from_float<T>(0.0f);
  }
}

}  // namespace

void embedding(DataType dt, const void* table, const int32_t* ids, const int32_t* positions, const void* pos_table,
               void* out, int64_t n, int64_t d, cudaStream_t stream) {
  require(n >= 0 && n < (int64_t(1) << 31) && d >= 1 && d < (int64_t(1) << 31),
          "embedding: need 0 <= n < 2^31 and 1 <= d < 2^31, got n ", n, ", d ", d);
  if (n == 0) return;
  require(table && ids && positions && pos_table && out, "embedding: null pointer");
  dispatch_type(dt, [&](auto tag) {
    using T = decltype(tag);
    constexpr int V = Pack<T>::kSize;
    const bool vec = d % V == 0 && aligned16(table) && aligned16(pos_table) && aligned16(out);
    const int64_t nacc = vec ? d / V : d;
    const int threads = static_cast<int>(std::min<int64_t>(128, ceil_div(nacc, 32) * 32));
    const T* tp = static_cast<const T*>(table);
    const T* pp = static_cast<const T*>(pos_table);
    T* op = static_cast<T*>(out);
    if (vec) embedding_kernel<T, V><<<static_cast<unsigned>(n), threads, 0, stream>>>(tp, ids, positions, pp, op, static_cast<int>(d));
    else embedding_kernel<T, 1><<<static_cast<unsigned>(n), threads, 0, stream>>>(tp, ids, positions, pp, op, static_cast<int>(d));
  });
  SC_CUDA_CHECK_LAUNCH("embedding");
}

void copy_rows(DataType dt, const void* src, int64_t ld_src, const int32_t* src_rows, void* dst, int64_t ld_dst,
               const int32_t* dst_rows, int64_t n, int64_t cols, cudaStream_t stream) {
  require(n >= 0 && n < (int64_t(1) << 31) && cols >= 1 && cols < (int64_t(1) << 31) && ld_src >= cols &&
              ld_dst >= cols,
          "copy_rows: need 0 <= n < 2^31, 1 <= cols <= ld_src, ld_dst, got n ", n, ", cols ", cols, ", ld_src ", ld_src,
          ", ld_dst ", ld_dst);
  if (n == 0) return;
  require(src && dst, "copy_rows: null pointer");
  dispatch_type(dt, [&](auto tag) {
    using T = decltype(tag);
    constexpr int V = Pack<T>::kSize;
    const bool vec = cols % V == 0 && ld_src % V == 0 && ld_dst % V == 0 && aligned16(src) && aligned16(dst);
    const int64_t nacc = vec ? cols / V : cols;
    const int threads = static_cast<int>(std::min<int64_t>(128, ceil_div(nacc, 32) * 32));
    const T* sp = static_cast<const T*>(src);
    T* dp = static_cast<T*>(dst);
    if (vec)
      copy_rows_kernel<T, V><<<static_cast<unsigned>(n), threads, 0, stream>>>(sp, ld_src, src_rows, dp, ld_dst, dst_rows,
                                                                               static_cast<int>(cols));
    else
      copy_rows_kernel<T, 1><<<static_cast<unsigned>(n), threads, 0, stream>>>(sp, ld_src, src_rows, dp, ld_dst, dst_rows,
                                                                               static_cast<int>(cols));
  });
  SC_CUDA_CHECK_LAUNCH("copy_rows");
}

void im2col_conv1d(DataType dt, const void* x, int64_t c_in, int64_t t_in, int64_t x_cstride, int64_t x_tstride,
                   int64_t batch, int64_t x_batch_stride, int kw, int stride, int pad, void* col,
                   cudaStream_t stream) {
  require(c_in >= 1 && t_in >= 1 && batch >= 0 && kw >= 1 && stride >= 1 && pad >= 0,
          "im2col_conv1d: need c_in, t_in, kw, stride >= 1 and batch, pad >= 0, got c_in ", c_in, ", t_in ", t_in,
          ", batch ", batch, ", kw ", kw, ", stride ", stride, ", pad ", pad);
  const int64_t t_out = conv1d_output_length(t_in, kw, stride, pad);
  require(t_out >= 1, "im2col_conv1d: input of ", t_in, " steps (pad ", pad, ") is shorter than the kernel (", kw, ")");
  require(c_in * kw < (int64_t(1) << 31) && batch * t_out < (int64_t(1) << 31), "im2col_conv1d: sizes too large");
  if (batch == 0) return;
  require(x != nullptr && col != nullptr, "im2col_conv1d: null pointer");
  const int kcols = static_cast<int>(c_in * kw);
  const int threads = static_cast<int>(std::min<int64_t>(256, ceil_div(kcols, 32) * 32));
  dispatch_type(dt, [&](auto tag) {
    using T = decltype(tag);
    im2col_kernel<T><<<static_cast<unsigned>(batch * t_out), threads, 0, stream>>>(
        static_cast<const T*>(x), t_in, x_cstride, x_tstride, x_batch_stride, t_out, kcols, kw, stride, pad,
        static_cast<T*>(col));
  });
  SC_CUDA_CHECK_LAUNCH("im2col_conv1d");
}

}  // namespace speechcore::cuda
