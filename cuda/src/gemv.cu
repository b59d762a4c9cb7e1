// Skinny products for decoder steps: y[m, n] = x[m, k] w[n, k]^T (+ bias) (+ y) for m <= 8.
// A decode step multiplies a few token rows by every weight matrix once; that is a read of the
// weights at memory bandwidth, which general GEMM tilings (a 128-wide tile of n per block,
// m padded to 64) do not reach for m this small. Here one warp owns one output feature n:
// it streams w's row n with 16-byte loads (several in flight per lane) and dots it with all m
// rows of x, so each weight byte is read once; float32 accumulation, one rounding to the output
// type, bias, GELU and residual fused.
//
// Decode-step fusions (GemvFusion): the layer norm of x (each block recomputes the statistics of
// its <= 8 rows, in the same order as layer_norm(), so the result is bit-identical to
// layer_norm() followed by gemv()), and a split output (columns past split_col scattered to rows
// of a second buffer: the K|V of a fused QKV product straight into a KV cache).
//
// Programmatic dependent launch (kernel_utils.cuh): a block loads its first weight packs before
// waiting for the previous kernel (weights are never written by a step), so weight streaming
// overlaps the previous kernel's tail; x (and everything else) is read only after the wait.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <tuple>
#include <type_traits>
#include <utility>

#include "kernel_utils.cuh"
#include "speechcore_cuda/gemm.h"

namespace speechcore::cuda {

namespace {

using namespace detail;

constexpr int kGemvWarps = 8;   // output features per block
constexpr int kGemvThreads = kGemvWarps * 32;
constexpr int kGemvUnroll = 4;  // weight loads in flight per lane (16 bytes each when vectorized)
// The shared-memory kernel also holds the layer norm's gamma/beta packs across the wait: 3 blocks
// (<= 85 registers) keep it from spilling.
constexpr int kGemvSmemMinBlocks = 3;
// x rows staged in shared memory when m * k * sizeof(T) bytes fit this; the fused layer norm
// needs it. Larger products read x from global memory (the plain kernel).
constexpr int64_t kGemvSmemBytes = 46 * 1024;  // + the static statistics: under the 48 KiB default
// The layer norm statistics reproduce layer_norm()'s block of 128 threads (layer_norm.cu).
constexpr int kLnThreads = kLnStatThreads;  // layer_norm()'s block (kernel_utils.cuh)

// V elements of T read with one access (16 bytes when V = Pack<T>::kSize).
template <typename T, int V>
struct alignas(V == 1 ? alignof(T) : 16) Raw {
  T v[V];
};
template <typename T, int V>
__device__ __forceinline__ Raw<T, V> load_raw(const T* p) {
  return *reinterpret_cast<const Raw<T, V>*>(p);
}
template <typename T, int V>
__device__ __forceinline__ Raw<T, V> load_raw_cg(const T* p) {  // through L2 only (data of earlier kernels)
  if constexpr (V == 1) {
    Raw<T, V> r;
    if constexpr (sizeof(T) == 4) {
      const float f = __ldcg(reinterpret_cast<const float*>(p));
      memcpy(&r.v[0], &f, 4);
    } else {
      const unsigned short u = __ldcg(reinterpret_cast<const unsigned short*>(p));
      memcpy(&r.v[0], &u, 2);
    }
    return r;
  } else {
    const uint4 u = __ldcg(reinterpret_cast<const uint4*>(p));
    return *reinterpret_cast<const Raw<T, V>*>(&u);
  }
}

template <typename T, typename OutT>
struct GemvParams {
  const T* x;
  const T* w;
  const T* bias;
  OutT* y;
  int n, k;
  bool accumulate, gelu;
  const T* ln_gamma;  // null: no layer norm
  const T* ln_beta;
  float ln_eps;
  int split_col;      // columns >= split_col go to y2 (n: none)
  T* y2;
  int64_t ld2;
  const int32_t* rows2;
};

// Epilogue of one output feature `col` for rows 0..M-1 (lane 0 of the warp).
template <typename T, typename OutT, int M>
__device__ __forceinline__ void gemv_store(const GemvParams<T, OutT>& p, int col, const float (&acc)[M]) {
  const float b = p.bias ? to_float(p.bias[col]) : 0.0f;
#pragma unroll
  for (int r = 0; r < M; ++r) {
    OutT* out;
    if (col >= p.split_col) {
      if constexpr (std::is_same_v<OutT, T>) out = p.y2 + static_cast<int64_t>(p.rows2[r]) * p.ld2 + (col - p.split_col);
      else out = nullptr;  // the host never splits a float32 output of a half model
    } else {
      out = p.y + static_cast<int64_t>(r) * p.n + col;
    }
    float v = acc[r] + b;
    if (p.gelu) v = gelu_erf(v);
    if (p.accumulate) {
      if constexpr (std::is_same_v<OutT, float>) v += *out;
      else v += to_float(*out);
    }
    if constexpr (std::is_same_v<OutT, float>) *out = v;
    else *out = from_float<T>(v);
  }
}

// x rows in shared memory (in T, xs[r * k + c]; 16-byte accesses: conflict-free). The weight row
// is streamed kGemvUnroll accesses per lane at a time, the next batch loaded before the current
// one is used; the first batch is loaded before the dependency wait. FMA order per lane: (base,
// u, element), as the plain kernel.
template <typename T, typename OutT, int V, int M, bool kStride>
__global__ void __launch_bounds__(kGemvThreads, M <= 4 && !kStride ? kGemvSmemMinBlocks : 2)
    gemv_smem_kernel(const GemvParams<T, OutT> p) {
  extern __shared__ __align__(16) unsigned char gemv_smem[];
  T* xs = reinterpret_cast<T*>(gemv_smem);  // [M][k]
  __shared__ float s_mean[M], s_inv[M];
  __shared__ float s_part[M][kLnThreads / 32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  // Warp w of block b computes feature b * 8 + w; with kStride also + gridDim.x * 8, ... (for
  // grids capped at what is resident at once, so that no block waits for a second wave and redoes
  // the staging and the layer norm).
  const int col0 = blockIdx.x * kGemvWarps + warp;
  const int col_stride = gridDim.x * kGemvWarps;
  const bool active = col0 < p.n;
  const int k = p.k;
  const int nacc = k / V;  // accesses per row
  constexpr int kStep = 32 * V;  // elements per warp-wide access
  const T* wr = p.w + static_cast<int64_t>(active ? col0 : 0) * k;

  Raw<T, V> cur[kGemvUnroll];
#pragma unroll
  for (int u = 0; u < kGemvUnroll; ++u) {
    const int kk = lane * V + u * kStep;
    if (active && kk < k) cur[u] = load_raw<T, V>(wr + kk);
  }

  // The layer norm's gamma and beta are weights too: this thread's first pack of each, loaded
  // before the wait (the normalization below walks the packs threadIdx.x, + kGemvThreads, ...).
  Raw<T, V> g0, b0;
  if (p.ln_gamma && static_cast<int>(threadIdx.x) < nacc) {
    g0 = load_raw<T, V>(p.ln_gamma + threadIdx.x * V);
    b0 = load_raw<T, V>(p.ln_beta + threadIdx.x * V);
  }

  pdl_wait();  // x, the residual y and rows2 come from earlier kernels / copies
  pdl_trigger();

  // Stage x.
  for (int a = threadIdx.x; a < M * nacc; a += kGemvThreads) {
    const int r = a / nacc, c = (a - r * nacc) * V;
    *reinterpret_cast<Raw<T, V>*>(xs + r * k + c) = load_raw_cg<T, V>(p.x + static_cast<int64_t>(r) * k + c);
  }
  __syncthreads();

  if (p.ln_gamma) {
    // Row statistics in layer_norm()'s order: its thread t of 128 sums the accesses t, t + 128,
    // ...; warp sums of threads [32j, 32j + 32) by the xor tree; then (w0 + w2) + (w1 + w3), as
    // its block_sum. Here warp w plays layer_norm()'s warp j = w % 4 of row w / 4 (lane L as
    // thread L + 32j), so the 4 * M partial sums are computed in parallel, bit for bit the same.
    constexpr int kLnWarps = kLnThreads / 32;
    for (int pass = 0; pass < 2; ++pass) {  // 0: sums, 1: squared deviations from the mean
      for (int task = warp; task < M * kLnWarps; task += kGemvWarps) {
        const int r = task / kLnWarps, j = task % kLnWarps;
        const T* xr = xs + r * k;
        const float mean = pass ? s_mean[r] : 0.0f;
        const float sum =
            ln_warp_stat<V>([&](int a) { return load_raw<T, V>(xr + a * V); }, nacc, j, lane, pass, mean);
        if (lane == 0) s_part[r][j] = sum;
      }
      __syncthreads();
      if (static_cast<int>(threadIdx.x) < M) {
        const int r = threadIdx.x;
        const float tot = ln_block_stat(s_part[r], k);
        if (pass) s_inv[r] = 1.0f / sqrtf(tot + p.ln_eps);
        else s_mean[r] = tot;
      }
      __syncthreads();
    }
    // Normalize in place, rounded to T as layer_norm() stores it; gamma and beta read once per
    // pack for all rows.
    for (int c0 = threadIdx.x; c0 < nacc; c0 += kGemvThreads) {
      const int c = c0 * V;
      Raw<T, V> g = g0, bt = b0;
      if (c0 != static_cast<int>(threadIdx.x)) {
        g = load_raw<T, V>(p.ln_gamma + c);
        bt = load_raw<T, V>(p.ln_beta + c);
      }
#pragma unroll
      for (int r = 0; r < M; ++r) {
        Raw<T, V>* e = reinterpret_cast<Raw<T, V>*>(xs + r * k + c);
        Raw<T, V> xv = *e;
        const float mean = s_mean[r], inv = s_inv[r];
#pragma unroll
        for (int i = 0; i < V; ++i)
          xv.v[i] = from_float<T>((to_float(xv.v[i]) - mean) * inv * to_float(g.v[i]) + to_float(bt.v[i]));
        *e = xv;
      }
    }
    __syncthreads();
  }
  if (!active) return;  // whole warps; no block barrier follows

  for (int col = col0; col < p.n; col += col_stride) {
    if (kStride && col != col0) {  // a later feature: its first weight packs
      wr = p.w + static_cast<int64_t>(col) * k;
#pragma unroll
      for (int u = 0; u < kGemvUnroll; ++u) {
        const int kk = lane * V + u * kStep;
        if (kk < k) cur[u] = load_raw<T, V>(wr + kk);
      }
    }
    float acc[M];
#pragma unroll
    for (int r = 0; r < M; ++r) acc[r] = 0.0f;
    for (int base = lane * V; base < k; base += kStep * kGemvUnroll) {
      Raw<T, V> nxt[kGemvUnroll];
      const int nb = base + kStep * kGemvUnroll;
#pragma unroll
      for (int u = 0; u < kGemvUnroll; ++u) {
        const int kk = nb + u * kStep;
        if (kk < k) nxt[u] = load_raw<T, V>(wr + kk);
      }
#pragma unroll
      for (int u = 0; u < kGemvUnroll; ++u) {
        const int kk = base + u * kStep;
        if (kk < k) {
#pragma unroll
          for (int r = 0; r < M; ++r) {
            const Raw<T, V> xv = load_raw<T, V>(xs + r * k + kk);
#pragma unroll
            for (int i = 0; i < V; ++i) acc[r] = fmaf(to_float(xv.v[i]), to_float(cur[u].v[i]), acc[r]);
          }
        }
      }
#pragma unroll
      for (int u = 0; u < kGemvUnroll; ++u) cur[u] = nxt[u];
    }
#pragma unroll
    for (int r = 0; r < M; ++r) acc[r] = warp_sum(acc[r]);
    if (lane == 0) gemv_store<T, OutT, M>(p, col, acc);
    if constexpr (!kStride) break;
  }
}

// x read from global memory (products whose x does not fit kGemvSmemBytes; no layer norm).
template <typename T, typename OutT, int V, int M>
__global__ void __launch_bounds__(kGemvThreads) gemv_kernel(const GemvParams<T, OutT> p) {
  const int lane = threadIdx.x & 31;
  const int col = blockIdx.x * kGemvWarps + (threadIdx.x >> 5);
  pdl_wait();
  pdl_trigger();
  if (col >= p.n) return;  // whole warps leave together
  const int k = p.k;
  const T* wr = p.w + static_cast<int64_t>(col) * k;
  float acc[M];
#pragma unroll
  for (int r = 0; r < M; ++r) acc[r] = 0.0f;
  constexpr int kStep = 32 * V;
  for (int base = lane * V; base < k; base += kStep * kGemvUnroll) {
    Raw<T, V> wv[kGemvUnroll];
#pragma unroll
    for (int u = 0; u < kGemvUnroll; ++u) {
      const int kk = base + u * kStep;
      if (kk < k) wv[u] = load_raw<T, V>(wr + kk);
    }
#pragma unroll
    for (int u = 0; u < kGemvUnroll; ++u) {
      const int kk = base + u * kStep;
      if (kk >= k) break;
#pragma unroll
      for (int r = 0; r < M; ++r) {
        const Raw<T, V> xv = load_raw_cg<T, V>(p.x + static_cast<int64_t>(r) * k + kk);
#pragma unroll
        for (int i = 0; i < V; ++i) acc[r] = fmaf(to_float(xv.v[i]), to_float(wv[u].v[i]), acc[r]);
      }
    }
  }
#pragma unroll
  for (int r = 0; r < M; ++r) acc[r] = warp_sum(acc[r]);
  if (lane == 0) gemv_store<T, OutT, M>(p, col, acc);
}


// One row's shared-memory product over more features than the device holds blocks at once (the
// logits, and a one-row step's QKV and fc1): a grid of one wave whose warps walk the fewest
// features each that covers n, spread evenly (SPEECHCORE_GEMV_ONE_WAVE=0: one feature a warp,
// in waves, as for more rows). Returns the grid, or 0 to launch one block per 8 features.
unsigned one_wave_grid(const void* kernel, size_t smem, int n) {
  static const bool on = [] {
    const char* e = std::getenv("SPEECHCORE_GEMV_ONE_WAVE");
    return !(e != nullptr && std::strcmp(e, "0") == 0);
  }();
  const int64_t blocks = (static_cast<int64_t>(n) + kGemvWarps - 1) / kGemvWarps;
  const int cap = on ? resident_blocks(kernel, kGemvThreads, smem) : 0;
  if (cap <= 0 || blocks <= cap) return 0;
  const int64_t per_warp = (blocks + cap - 1) / cap;
  return static_cast<unsigned>((n + kGemvWarps * per_warp - 1) / (kGemvWarps * per_warp));
}

template <typename T, typename OutT, int V>
void launch_rows(int m, const GemvParams<T, OutT>& p, bool smem, cudaStream_t s) {
  const dim3 grid(static_cast<unsigned>((p.n + kGemvWarps - 1) / kGemvWarps)), block(kGemvThreads);
  const size_t bytes = smem ? sizeof(T) * static_cast<size_t>(m) * p.k : 0;
  if (m == 1 && smem) {
    const auto strided = gemv_smem_kernel<T, OutT, V, 1, true>;
    if (const unsigned g = one_wave_grid(reinterpret_cast<const void*>(strided), bytes, p.n); g > 0)
      return launch(strided, dim3(g), block, bytes, s, "gemv", p);
  }
  switch (m) {
#define SC_GEMV_CASE(MM)                                                                               \
  case MM:                                                                                             \
    if (smem) launch(gemv_smem_kernel<T, OutT, V, MM, false>, grid, block, bytes, s, "gemv", p);       \
    else launch(gemv_kernel<T, OutT, V, MM>, grid, block, 0, s, "gemv", p);                            \
    break;
    SC_GEMV_CASE(1) SC_GEMV_CASE(2) SC_GEMV_CASE(3) SC_GEMV_CASE(4)
    SC_GEMV_CASE(5) SC_GEMV_CASE(6) SC_GEMV_CASE(7) SC_GEMV_CASE(8)
#undef SC_GEMV_CASE
    default: break;
  }
}

bool row_prefetch_default() {
  static const bool on = [] {
    const char* e = std::getenv("SPEECHCORE_GEMV_PREFETCH");
    return e == nullptr || std::strcmp(e, "0") != 0;
  }();
  return on;
}

}  // namespace

namespace detail {

// Blocks of `kernel` (`threads` threads, `smem` dynamic bytes) resident on the device at once;
// 0 when the query fails. Cached: graph captures and eager steps ask again and again.
int resident_blocks(const void* kernel, int threads, size_t smem) {
  static std::mutex mu;
  static std::map<std::tuple<const void*, int, size_t>, int> cache;
  std::lock_guard<std::mutex> lock(mu);
  const auto key = std::make_tuple(kernel, threads, smem);
  if (const auto it = cache.find(key); it != cache.end()) return it->second;
  int dev = 0, sms = 0, per_sm = 0;
  int blocks = 0;
  if (cudaGetDevice(&dev) == cudaSuccess && cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) == cudaSuccess &&
      cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, smem) == cudaSuccess)
    blocks = sms * per_sm;
  cache[key] = blocks;
  return blocks;
}

// decode_fused.cu: the one-row product with whole weight rows prefetched (false: not launched).
bool gemv_row_prefetch(DataType dt, const void* x, const void* w, const void* bias, void* y, bool y_float32, int64_t n,
                       int64_t k, bool accumulate, bool gelu, const void* ln_gamma, const void* ln_beta, float ln_eps,
                       const ResidualTerms* res, cudaStream_t stream);
}  // namespace detail

void gemv(DataType dt, const void* x, const void* w, const void* bias, void* y, bool y_float32, int64_t m, int64_t n,
          int64_t k, bool accumulate, bool gelu, cudaStream_t stream, const GemvFusion* fusion) {
  require(m >= 1 && m <= kGemvMaxRows && n >= 1 && k >= 1 && n < (int64_t(1) << 31) && k < (int64_t(1) << 31),
          "gemv: need 1 <= m <= ", kGemvMaxRows, ", n, k >= 1, got m ", m, ", n ", n, ", k ", k);
  require(x && w && y, "gemv: null pointer");
  require(!(y_float32 && bias), "gemv: a float32 output takes no bias");
  const bool ln = fusion && fusion->ln_gamma;
  const bool split = fusion && fusion->split_col > 0;
  if (fusion) {
    require(!ln || fusion->ln_beta, "gemv: ln_gamma without ln_beta");
    require(fusion->ln_eps >= 0.0f, "gemv: ln_eps must be >= 0");
    require(fusion->split_col >= 0 && fusion->split_col <= n, "gemv: split_col ", fusion->split_col,
            " outside [0, n = ", n, "]");
    if (split && fusion->split_col < n) {
      require(!y_float32, "gemv: a split output must be of the model's type");
      require(fusion->y2 && fusion->rows2, "gemv: split output without y2 / rows2");
      require(fusion->ld2 >= n - fusion->split_col, "gemv: ld2 ", fusion->ld2, " < n - split_col = ",
              n - fusion->split_col);
    }
  }
  const bool smem = m * k * static_cast<int64_t>(data_type_size(dt)) <= kGemvSmemBytes;
  if (ln && !smem)
    fail(ErrorCode::kUnsupported, "gemv: a fused layer norm needs m * k * element size <= ", kGemvSmemBytes,
         " bytes, got m ", m, ", k ", k);
  const bool terms = fusion && fusion->residual.terms > 0;
  if (terms) {
    const ResidualTerms& r = fusion->residual;
    require(r.terms <= 2 && r.acc[0] && (r.terms < 2 || r.acc[1]), "gemv: residual terms: 1 or 2 accumulators");
    require(m == 1 && !y_float32 && !(split && fusion->split_col < n) && (ln != accumulate) && (!r.zero || accumulate),
            "gemv: residual terms need one row, the model's output type, no split, and either a layer norm "
            "(x read through them) or accumulate (y read through them; zero only there)");
  }
  const bool prefetch =
      terms || (fusion && fusion->row_prefetch >= 0 ? fusion->row_prefetch > 0 : row_prefetch_default());
  if (m == 1 && prefetch && !(split && fusion->split_col < n) &&
      detail::gemv_row_prefetch(dt, x, w, bias, y, y_float32, n, k, accumulate, gelu, ln ? fusion->ln_gamma : nullptr,
                                ln ? fusion->ln_beta : nullptr, ln ? fusion->ln_eps : 0.0f,
                                terms ? &fusion->residual : nullptr, stream))
    return;
  if (terms)
    fail(ErrorCode::kUnsupported, "gemv: residual terms need the row-prefetching kernel (gemv_row_prefetch_fits), "
         "which does not take n ", n, ", k ", k);
  dispatch_type(dt, [&](auto tag) {
    using T = decltype(tag);
    constexpr int V = Pack<T>::kSize;
    const bool vec = k % V == 0 && aligned16(x) && aligned16(w) &&
                     (!ln || (aligned16(fusion->ln_gamma) && aligned16(fusion->ln_beta)));
    auto fill = [&](auto* yp) {
      using OutT = std::remove_pointer_t<decltype(yp)>;
      GemvParams<T, OutT> p{};
      p.x = static_cast<const T*>(x);
      p.w = static_cast<const T*>(w);
      p.bias = static_cast<const T*>(bias);
      p.y = yp;
      p.n = static_cast<int>(n);
      p.k = static_cast<int>(k);
      p.accumulate = accumulate;
      p.gelu = gelu;
      p.ln_gamma = ln ? static_cast<const T*>(fusion->ln_gamma) : nullptr;
      p.ln_beta = ln ? static_cast<const T*>(fusion->ln_beta) : nullptr;
      p.ln_eps = fusion ? fusion->ln_eps : 0.0f;
      p.split_col = split ? static_cast<int>(fusion->split_col) : static_cast<int>(n);
      p.y2 = split ? static_cast<T*>(fusion->y2) : nullptr;
      p.ld2 = split ? fusion->ld2 : 0;
      p.rows2 = split ? fusion->rows2 : nullptr;
      if (vec) launch_rows<T, OutT, V>(static_cast<int>(m), p, smem, stream);
      else launch_rows<T, OutT, 1>(static_cast<int>(m), p, smem, stream);
    };
    if (y_float32) fill(static_cast<float*>(y));
    else fill(static_cast<T*>(y));
  });
}

}  // namespace speechcore::cuda
