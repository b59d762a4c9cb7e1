// One-row decode steps: an attention sub-layer's products and its attention in one kernel.
//
// The fused step runs each attention sub-layer of a decoder layer as dependent kernels: the
// product that makes its query (and, for the self-attention, the new key and value; layer norm
// fused, gemv.cu), then the decode attention. Each dependent kernel costs a round trip
// (benchmarks/pdl_chain.cu: ~2 us a phase on the H200). Here a cluster of kFdBlocks blocks per
// (row, head) does both:
//   1. before the dependency wait, every block copies its 8 rows of each product's weights (and
//      the layer norm's gamma/beta) into shared memory, and the cross-attention's blocks load
//      their share of the static K/V into registers: nothing of the step writes them;
//   2. after the wait, each block stages x, recomputes the layer norm and computes its features
//      exactly as gemv() with its fused layer norm does (the same float32 order, the same
//      rounding to T); the self-attention's new key and value go to the KV cache as gemv()'s
//      split output writes them, and the head's 64 query features are gathered through
//      distributed shared memory;
//   3. each block attends over its share of the keys (online softmax, the decode kernel's
//      arithmetic) and the shares are merged through distributed shared memory, each block
//      writing 8 of the head's output features.
// With an OutputFold, step 3 merges all 64 of the head's outputs in every block instead, and each
// block multiplies them by its eighth of the output product's weight columns of that head
// (copied in step 1) and adds the partial features to int64 fixed-point accumulators
// (ResidualTerms, common.h): a layer then runs as 4 kernels (these two, fc1, fc2), the residual
// being materialized by fc2's epilogue, which also zeroes the accumulators.
// float16/bfloat16, head size 64.
#include <cooperative_groups.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#include "kernel_utils.cuh"
#include "speechcore_cuda/attention.h"

namespace speechcore::cuda {

namespace {

using namespace detail;
namespace cg = cooperative_groups;

constexpr int kFdBlocks = 8;      // cluster: key splits of one head, and 8 features of each product
constexpr int kFdThreads = 256;   // 8 warps: one feature of each product each
constexpr int kFdDim = 64;        // head size
constexpr int kFdV = 8;           // elements of a 16-byte pack
constexpr int kFdTpk = kFdDim / kFdV;          // threads per key row
constexpr int kFdGroups = kFdThreads / kFdTpk;  // keys a block reads at once
constexpr int kFdMaxD = 1280;     // d_model
constexpr int kCqPasses = 6;      // cross: key passes of a split, all loaded before the wait
constexpr int kSqPasses = 2;      // self: key passes of a split (after the wait)

// 16 bytes global -> shared without registers (cp.async, L2 only); completion per thread.
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_addr(smem)), "l"(gmem) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }

// One residual term added to x: round(acc * 2^-32 + bias + x) (ResidualTerms, common.h).
template <typename T>
__device__ __forceinline__ float residual_term(float x, long long a, float bias) {
  float v = (a >= kResidualNonFinite / 2 || a <= -kResidualNonFinite / 2)
                ? NAN
                : __ll2float_rn(a) * (1.0f / 4294967296.0f);  // 2^-kResidualFracBits
  v += bias;
  return to_float(from_float<T>(v + x));
}

// x + the residual terms for the kFdV elements of a pack at columns c0.. of a row (row_off = row
// * d; c0 a multiple of kFdV), as the sub-layers' products would have written it one after
// another. Every load (16 bytes each) is issued before the arithmetic: one L2 round trip, not
// one a term and element. Constant indices keep res in registers.
template <typename T>
__device__ __forceinline__ void residual_pack(Pack<T>& xv, const ResidualTerms& res, int64_t row_off, int c0) {
  longlong2 a[2][kFdV / 2];
  Pack<T> b[2];
#pragma unroll
  for (int t = 0; t < 2; ++t) {
    *reinterpret_cast<uint4*>(&b[t]) = make_uint4(0, 0, 0, 0);
#pragma unroll
    for (int j = 0; j < kFdV / 2; ++j) a[t][j] = make_longlong2(0, 0);
    if (t < res.terms) {
      const longlong2* src = reinterpret_cast<const longlong2*>(res.acc[t] + row_off + c0);
#pragma unroll
      for (int j = 0; j < kFdV / 2; ++j) a[t][j] = __ldcg(src + j);
      if (res.bias[t])
        *reinterpret_cast<uint4*>(&b[t]) =
            __ldg(reinterpret_cast<const uint4*>(static_cast<const T*>(res.bias[t]) + c0));
    }
  }
#pragma unroll
  for (int i = 0; i < kFdV; ++i) {
    float x = to_float(xv.v[i]);
#pragma unroll
    for (int t = 0; t < 2; ++t) {
      const long long ai = (i & 1) ? a[t][i / 2].y : a[t][i / 2].x;
      if (t < res.terms) x = residual_term<T>(x, ai, to_float(b[t].v[i]));
    }
    xv.v[i] = from_float<T>(x);
  }
}

// A partial output feature into its fixed-point accumulator (order-independent integer add).
__device__ __forceinline__ void residual_add(int64_t* acc, float v) {
  static_assert(kResidualFracBits == 32, "the scale below is 2^32");
  const long long q = isfinite(v) ? __float2ll_rn(fminf(fmaxf(v, -kResidualClamp), kResidualClamp) * 4294967296.0f)
                                  : static_cast<long long>(kResidualNonFinite);
  atomicAdd(reinterpret_cast<unsigned long long*>(acc), static_cast<unsigned long long>(q));
}

template <typename T>
__device__ __forceinline__ void unpack(const uint4& u, float* f) {
  const T* e = reinterpret_cast<const T*>(&u);
#pragma unroll
  for (int i = 0; i < kFdV; ++i) f[i] = to_float(e[i]);
}

// The layer norm's block reductions.
struct LnShared {
  float part[kLnStatThreads / 32], mean, inv;
};

// Shared memory of the attention kernels besides the dynamic region.
struct FdShared {
  LnShared ln;
  float q[8], qall[kFdDim];
  float m[kFdGroups], l[kFdGroups];
  float o[kFdGroups][kFdDim];
  float M, L, O[kFdDim];  // this split's partial, read by the cluster
};

// Before the wait: `rows` weight rows of d elements (the warp's row of each product, row_of(i)
// for i < rows) into ws[(i * 8 + warp) * d], and gamma/beta into gs/bs, by cp.async. Each lane
// later reads only the packs it copied (weights) or the thread its own packs (gamma/beta).
template <typename T, typename RowOf>
__device__ __forceinline__ void copy_weights(const T* w, int rows, RowOf&& row_of, const T* gamma, const T* beta,
                                             T* ws, T* gs, T* bs, int d) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nacc = d / kFdV;
  for (int i = 0; i < rows; ++i) {
    const T* wrow = w + static_cast<int64_t>(row_of(i)) * d;
    T* dst = ws + (i * 8 + warp) * d;
    for (int a = lane; a < nacc; a += 32) cp_async16(dst + a * kFdV, wrow + a * kFdV);
  }
  for (int a = threadIdx.x; a < nacc; a += kFdThreads) {
    cp_async16(gs + a * kFdV, gamma + a * kFdV);
    cp_async16(bs + a * kFdV, beta + a * kFdV);
  }
  cp_async_commit();
}

// Before the wait (OutputFold): this block's eighth of the output product's rows, the head's 64
// columns of each, into wos[o * 64] (d / 8 rows: 8 d elements). Committed by copy_weights.
template <typename T>
__device__ __forceinline__ void copy_out_slice(const T* wo, int d, int h, int split, T* wos) {
  const int per = d / kFdBlocks;
  for (int e = threadIdx.x; e < per * kFdTpk; e += kFdThreads) {
    const int o = e / kFdTpk, c = e % kFdTpk;
    cp_async16(wos + o * kFdDim + c * kFdV,
               wo + static_cast<int64_t>(split * per + o) * d + h * kFdDim + c * kFdV);
  }
}

// After the wait: x's row (plus the residual terms of row_off = row * d, if any) into xs,
// normalized in place exactly as gemv()'s fused layer norm does (layer_norm()'s statistics
// order, the rounding to T).
template <typename T, bool kTerms = false>
__device__ __forceinline__ void layer_norm_row(const T* x, const T* gs, const T* bs, T* xs, int d, float eps,
                                               LnShared& sh, const ResidualTerms* res = nullptr,
                                               int64_t row_off = 0) {
  constexpr int kLnWarps = kLnStatThreads / 32;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, nacc = d / kFdV;
  if constexpr (kTerms) {  // res non-null
    for (int a = tid; a < nacc; a += kFdThreads) {
      Pack<T> xv;
      *reinterpret_cast<uint4*>(&xv) = __ldcg(reinterpret_cast<const uint4*>(x + a * kFdV));
      if (res->terms > 0) residual_pack(xv, *res, row_off, a * kFdV);
      store_pack(xs + a * kFdV, xv);
    }
  } else {
    for (int a = tid; a < nacc; a += kFdThreads)
      *reinterpret_cast<uint4*>(xs + a * kFdV) = __ldcg(reinterpret_cast<const uint4*>(x + a * kFdV));
  }
  __syncthreads();
  float mean = 0.0f;
  for (int pass = 0; pass < 2; ++pass) {  // 0: sums, 1: squared deviations from the mean
    if (warp < kLnWarps) {
      const float sum =
          ln_warp_stat<kFdV>([&](int a) { return load_pack(xs + a * kFdV); }, nacc, warp, lane, pass, mean);
      if (lane == 0) sh.part[warp] = sum;
    }
    __syncthreads();
    if (tid == 0) {
      const float tot = ln_block_stat(sh.part, d);
      if (pass) sh.inv = 1.0f / sqrtf(tot + eps);
      else sh.mean = tot;
    }
    __syncthreads();
    mean = sh.mean;
  }
  const float inv = sh.inv;
  cp_async_wait_all();  // this thread's gamma/beta packs (and its lane's weight packs)
  for (int c0 = tid; c0 < nacc; c0 += kFdThreads) {
    const Pack<T> g = load_pack(gs + c0 * kFdV), bt = load_pack(bs + c0 * kFdV);
    Pack<T> xv = load_pack(xs + c0 * kFdV);
#pragma unroll
    for (int i = 0; i < kFdV; ++i)
      xv.v[i] = from_float<T>((to_float(xv.v[i]) - mean) * inv * to_float(g.v[i]) + to_float(bt.v[i]));
    store_pack(xs + c0 * kFdV, xv);
  }
  __syncthreads();
}

// The row xs . the weight row wrow (both in shared memory) in gemv()'s order: lane-strided
// packs, elements in order, then the xor-tree warp sum (every lane gets it).
template <typename T>
__device__ __forceinline__ float dot_row(const T* xs, const T* wrow, int d) {
  const int lane = threadIdx.x & 31, nacc = d / kFdV;
  float acc = 0.0f;
  for (int a = lane; a < nacc; a += 32) {
    const Pack<T> xv = load_pack(xs + a * kFdV);
    const Pack<T> w = load_pack(wrow + a * kFdV);
#pragma unroll
    for (int i = 0; i < kFdV; ++i) acc = fmaf(to_float(xv.v[i]), to_float(w.v[i]), acc);
  }
  return warp_sum(acc);
}

// One feature of a product: dot_row plus bias, rounded to T (as gemv() stores it).
template <typename T>
__device__ __forceinline__ T feature(const T* xs, const T* wrow, int d, float bias) {
  return from_float<T>(dot_row(xs, wrow, d) + bias);
}

// The head's 64 query features from the cluster's blocks (8 each, in sh.q) into sh.qall.
__device__ __forceinline__ void gather_query(cg::cluster_group& cluster, FdShared& sh) {
  cluster.sync();  // every split's features written (and, for the self-attention, its K/V row)
  if (threadIdx.x < kFdDim) sh.qall[threadIdx.x] = *cluster.map_shared_rank(&sh.q[threadIdx.x % 8], threadIdx.x / 8);
  __syncthreads();
}

// This split's partial over the keys k_begin + u * kFdGroups + grp < k_end of the P passes in
// kr/vr (zeroed past k_end by the caller): sh.M, sh.L, sh.O (unnormalized), as the decode kernel.
template <typename T, int P>
__device__ __forceinline__ void split_partial(const uint4 (&kr)[P], const uint4 (&vr)[P], int k_begin, int k_end,
                                              float scale_log2, FdShared& sh) {
  const int tid = threadIdx.x, grp = tid / kFdTpk, sub = tid % kFdTpk;
  float qf[kFdV];
#pragma unroll
  for (int i = 0; i < kFdV; ++i) qf[i] = sh.qall[sub * kFdV + i] * scale_log2;
  float sc[P];
  float mx = -INFINITY;
#pragma unroll
  for (int u = 0; u < P; ++u) {
    float kf[kFdV];
    unpack<T>(kr[u], kf);
    float dot = 0.f;
#pragma unroll
    for (int i = 0; i < kFdV; ++i) dot = fmaf(qf[i], kf[i], dot);
#pragma unroll
    for (int off = kFdTpk / 2; off > 0; off >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, off);
    sc[u] = (k_begin + u * kFdGroups + grp < k_end) ? dot : -INFINITY;
    mx = fmaxf(mx, sc[u]);
  }
  const float m_use = mx == -INFINITY ? 0.f : mx;
  float l_run = 0.f, o[kFdV];
#pragma unroll
  for (int i = 0; i < kFdV; ++i) o[i] = 0.f;
#pragma unroll
  for (int u = 0; u < P; ++u) {
    const float pu = exp2f(sc[u] - m_use);
    l_run += pu;
    float vf[kFdV];
    unpack<T>(vr[u], vf);
#pragma unroll
    for (int i = 0; i < kFdV; ++i) o[i] = fmaf(pu, vf[i], o[i]);
  }
  if (sub == 0) {
    sh.m[grp] = mx;
    sh.l[grp] = l_run;
  }
#pragma unroll
  for (int i = 0; i < kFdV; ++i) sh.o[grp][sub * kFdV + i] = o[i];
  __syncthreads();
  if (tid < kFdDim) {  // the block's partial over its key groups
    float M = -INFINITY;
#pragma unroll
    for (int g = 0; g < kFdGroups; ++g) M = fmaxf(M, sh.m[g]);
    float L = 0.f, acc = 0.f;
    if (M != -INFINITY) {
#pragma unroll
      for (int g = 0; g < kFdGroups; ++g) {
        const float w = exp2f(sh.m[g] - M);
        L = fmaf(w, sh.l[g], L);
        acc = fmaf(w, sh.o[g][tid], acc);
      }
    }
    sh.O[tid] = acc;
    if (tid == 0) {
      sh.M = M;
      sh.L = L;
    }
  }
}

// The head's output feature dd: the splits' partials (in the cluster's shared memory) merged in
// split order, rounded to T.
template <typename T>
__device__ __forceinline__ T merged_feature(cg::cluster_group& cluster, FdShared& sh, int dd) {
  float Mx = -INFINITY;
#pragma unroll
  for (int s = 0; s < kFdBlocks; ++s) Mx = fmaxf(Mx, *cluster.map_shared_rank(&sh.M, s));
  float Ls = 0.f, acc = 0.f;
  if (Mx != -INFINITY) {
#pragma unroll
    for (int s = 0; s < kFdBlocks; ++s) {
      const float w = exp2f(*cluster.map_shared_rank(&sh.M, s) - Mx);
      Ls = fmaf(w, *cluster.map_shared_rank(&sh.L, s), Ls);
      acc = fmaf(w, *cluster.map_shared_rank(&sh.O[dd], s), acc);
    }
  }
  return from_float<T>(Ls > 0.f ? acc / Ls : 0.f);
}

// The splits' partials merged; this block writes the head's output features [8 split, 8 split +
// 8) to out (the head's 64 columns). Ends with a cluster barrier, so that no block leaves while
// the others still read its shared memory.
template <typename T>
__device__ __forceinline__ void merge_splits(cg::cluster_group& cluster, FdShared& sh, int split, T* out) {
  cluster.sync();  // every split's partial written
  if (threadIdx.x < 8) {
    const int dd = split * 8 + threadIdx.x;
    out[dd] = merged_feature<T>(cluster, sh, dd);
  }
  cluster.sync();
}

// OutputFold: the splits' partials merged in every block (all 64 of the head's outputs, rounded
// to T as out would hold them), then this block's d / 8 output features of the head's share of
// the output product, wos . att, added to acc_row as fixed point. Two cluster barriers: the
// partials written, then read (no block leaves while the others read its shared memory).
template <typename T>
__device__ __forceinline__ void merge_fold(cg::cluster_group& cluster, FdShared& sh, int split, const T* wos, int d,
                                           int64_t* acc_row) {
  cluster.sync();
  const int tid = threadIdx.x;
  if (tid < kFdDim) sh.qall[tid] = to_float(merged_feature<T>(cluster, sh, tid));  // the query is no longer read
  cluster.sync();
  const int per = d / kFdBlocks, sub = tid % kFdTpk;
  float a[kFdV];
#pragma unroll
  for (int i = 0; i < kFdV; ++i) a[i] = sh.qall[sub * kFdV + i];
  // per is a multiple of 8, so each warp's 4 key groups take the same trips (full-warp shuffles)
  for (int o = tid / kFdTpk; o < per; o += kFdGroups) {
    const Pack<T> w = load_pack(wos + o * kFdDim + sub * kFdV);
    float dot = 0.f;
#pragma unroll
    for (int i = 0; i < kFdV; ++i) dot = fmaf(a[i], to_float(w.v[i]), dot);
#pragma unroll
    for (int off = kFdTpk / 2; off > 0; off >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, off);
    if (sub == 0) residual_add(acc_row + split * per + o, dot);
  }
}

// ---- cross-attention: query product + attention over static K/V ----------------------------

template <typename T>
struct CqParams {
  const T* x;       // [rows, d]
  const T* gamma;   // [d]
  const T* beta;    // [d]
  const T* wq;      // [d, d]
  const T* bq;      // [d] or null
  const T* k;       // slot s, key j, head h: k + s * kv_bs + j * ld_kv + h * 64
  const T* v;
  int64_t ld_kv, kv_bs;
  const int32_t* kv_index;    // [rows] slot of each row
  const int32_t* kv_lengths;  // [rows]
  T* out;                     // [rows, ldo], head h at column h * 64
  int64_t ldo;
  int d, max_kv_len, chunk;
  float eps, scale_log2;
};

// The folded instances' parameters (the plain ones keep theirs as measured).
template <typename T, typename Base>
struct FoldParams : Base {
  ResidualTerms xres;  // x read through these terms (cross only; terms 0: none)
  const T* wo;         // OutputFold: [d, d]
  int64_t* acc;        // [rows, d]
};
template <typename T, bool kFold>
using CqArgs = std::conditional_t<kFold, FoldParams<T, CqParams<T>>, CqParams<T>>;

// kFold: OutputFold and the x residual terms (the plain instance stays as it was measured).
template <typename T, bool kFold>
__global__ void __cluster_dims__(kFdBlocks, 1, 1) __launch_bounds__(kFdThreads, 2)
    cross_query_attention_kernel(const CqArgs<T, kFold> p) {
  extern __shared__ __align__(16) unsigned char fd_smem[];
  T* xs = reinterpret_cast<T*>(fd_smem);  // [d]
  T* ws = xs + p.d;                       // [8][d]: the block's query-weight rows
  T* gs = ws + 8 * p.d;                   // [d] gamma, then [d] beta
  T* bs = gs + p.d;
  T* wos = bs + p.d;                      // OutputFold: [d / 8][64]
  __shared__ FdShared sh;
  cg::cluster_group cluster = cg::this_cluster();
  const int split = static_cast<int>(cluster.block_rank());
  const int h = blockIdx.y, r = blockIdx.z;
  const int tid = threadIdx.x, warp = tid >> 5, grp = tid / kFdTpk, sub = tid % kFdTpk;
  const int k_begin = split * p.chunk;

  // 1. Before the wait: this split's K/V (registers), the query-weight rows, gamma/beta, bias.
  const int64_t slot = p.kv_index[r];
  const T* kb = p.k + slot * p.kv_bs + static_cast<int64_t>(h) * kFdDim + sub * kFdV;
  const T* vb = p.v + slot * p.kv_bs + static_cast<int64_t>(h) * kFdDim + sub * kFdV;
  const int lim = min(k_begin + p.chunk, p.max_kv_len);
  uint4 kr[kCqPasses], vr[kCqPasses];
#pragma unroll
  for (int u = 0; u < kCqPasses; ++u) {
    const int j = k_begin + u * kFdGroups + grp;
    if (j < lim) {
      kr[u] = __ldg(reinterpret_cast<const uint4*>(kb + static_cast<int64_t>(j) * p.ld_kv));
      vr[u] = __ldg(reinterpret_cast<const uint4*>(vb + static_cast<int64_t>(j) * p.ld_kv));
    } else {
      kr[u] = make_uint4(0, 0, 0, 0);
      vr[u] = make_uint4(0, 0, 0, 0);
    }
  }
  const int qrow = h * kFdDim + split * 8 + warp;  // this warp's query feature
  if constexpr (kFold) copy_out_slice(p.wo, p.d, h, split, wos);
  copy_weights(p.wq, 1, [&](int) { return qrow; }, p.gamma, p.beta, ws, gs, bs, p.d);
  const float bias = p.bq ? to_float(p.bq[qrow]) : 0.0f;

  pdl_wait();  // x comes from the previous kernel
  pdl_trigger();
  int len = p.kv_lengths[r];  // used after the products: its load overlaps them

  // 2. The layer norm and the query features.
  if constexpr (kFold)
    layer_norm_row<T, true>(p.x + static_cast<int64_t>(r) * p.d, gs, bs, xs, p.d, p.eps, sh.ln, &p.xres,
                            static_cast<int64_t>(r) * p.d);
  else
    layer_norm_row(p.x + static_cast<int64_t>(r) * p.d, gs, bs, xs, p.d, p.eps, sh.ln);
  const T q = feature(xs, ws + warp * p.d, p.d, bias);
  if ((tid & 31) == 0) sh.q[warp] = to_float(q);
  gather_query(cluster, sh);

  // 3. Attention over this split's keys, merged over the cluster.
  len = len < 0 ? 0 : (len > p.max_kv_len ? p.max_kv_len : len);
  const int k_end = min(k_begin + p.chunk, len);
#pragma unroll
  for (int u = 0; u < kCqPasses; ++u) {  // keys loaded past the length take no part (0 * NaN)
    if (k_begin + u * kFdGroups + grp >= k_end) {
      kr[u] = make_uint4(0, 0, 0, 0);
      vr[u] = make_uint4(0, 0, 0, 0);
    }
  }
  split_partial<T>(kr, vr, k_begin, k_end, p.scale_log2, sh);
  if constexpr (kFold) merge_fold(cluster, sh, split, wos, p.d, p.acc + static_cast<int64_t>(r) * p.d);
  else merge_splits(cluster, sh, split, p.out + static_cast<int64_t>(r) * p.ldo + h * kFdDim);
}

// ---- self-attention: layer norm + QKV product (K/V into the cache) + attention --------------

template <typename T>
struct SqParams {
  const T* x;       // [rows, d]
  const T* gamma;   // [d]
  const T* beta;    // [d]
  const T* w;       // [3d, d]: q | k | v
  const T* bias;    // [3d] or null
  T* kv;            // the layer's cache: row i at kv + i * 2d, K | V
  const int32_t* kv_rows;     // [rows] the cache row of the new key/value
  const int32_t* kv_lengths;  // [rows] keys to attend over (the new one included)
  const int32_t* kv_index;    // [rows] sequence slot (contiguous cache: row j at slot * max_kv_len + j)
  const int32_t* block_table;  // paged cache (null: contiguous): [rows, table_stride]
  int64_t table_stride;
  int block_size;
  T* out;                     // [rows, ldo]
  int64_t ldo;
  int d, max_kv_len;
  float eps, scale_log2;
};
template <typename T, bool kFold>
using SqArgs = std::conditional_t<kFold, FoldParams<T, SqParams<T>>, SqParams<T>>;

template <typename T, bool kFold>
__global__ void __cluster_dims__(kFdBlocks, 1, 1) __launch_bounds__(kFdThreads, 2)
    self_qkv_attention_kernel(const SqArgs<T, kFold> p) {
  extern __shared__ __align__(16) unsigned char fd_smem[];
  T* xs = reinterpret_cast<T*>(fd_smem);  // [d]
  T* ws = xs + p.d;                       // [3][8][d]: the block's q, k and v weight rows
  T* gs = ws + 24 * p.d;                  // [d] gamma, then [d] beta
  T* bs = gs + p.d;
  T* wos = bs + p.d;                      // OutputFold: [d / 8][64]
  __shared__ FdShared sh;
  cg::cluster_group cluster = cg::this_cluster();
  const int split = static_cast<int>(cluster.block_rank());
  const int h = blockIdx.y, r = blockIdx.z;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, grp = tid / kFdTpk, sub = tid % kFdTpk;
  const int d = p.d;

  // 1. Before the wait: the weight rows of this warp's q, k and v features, gamma/beta, biases.
  const int col = h * kFdDim + split * 8 + warp;  // this warp's feature within each of q, k, v
  if constexpr (kFold) copy_out_slice(p.wo, d, h, split, wos);
  copy_weights(p.w, 3, [&](int i) { return i * d + col; }, p.gamma, p.beta, ws, gs, bs, d);
  float bias[3];
#pragma unroll
  for (int i = 0; i < 3; ++i) bias[i] = p.bias ? to_float(p.bias[i * d + col]) : 0.0f;

  pdl_wait();  // x and the step's inputs come from earlier kernels and copies
  pdl_trigger();

  // The keys this split attends over, and the earlier ones' K/V (written by earlier steps) loaded
  // now, through L2, so that they arrive during the layer norm and the products. The new key
  // (len - 1) is written by this kernel's blocks: its K/V are loaded after the cluster barrier.
  const int64_t new_row = p.kv_rows[r];
  int len = p.kv_lengths[r];
  len = len < 0 ? 0 : (len > p.max_kv_len ? p.max_kv_len : len);
  const int chunk = (len + kFdBlocks - 1) / kFdBlocks;
  const int k_begin = split * chunk, k_end = min(k_begin + chunk, len);
  const int32_t* table = p.block_table ? p.block_table + static_cast<int64_t>(r) * p.table_stride : nullptr;
  const int64_t seq0 = p.block_table ? 0 : static_cast<int64_t>(p.kv_index[r]) * p.max_kv_len;
  auto key_row = [&](int j) -> const T* {
    const int64_t row =
        table ? static_cast<int64_t>(table[j / p.block_size]) * p.block_size + j % p.block_size : seq0 + j;
    return p.kv + row * 2 * d + h * kFdDim + sub * kFdV;
  };
  uint4 kr[kSqPasses], vr[kSqPasses];
#pragma unroll
  for (int u = 0; u < kSqPasses; ++u) {
    const int j = k_begin + u * kFdGroups + grp;
    kr[u] = make_uint4(0, 0, 0, 0);
    vr[u] = make_uint4(0, 0, 0, 0);
    if (j < k_end && j != len - 1) {
      const T* kp = key_row(j);
      kr[u] = __ldcg(reinterpret_cast<const uint4*>(kp));
      vr[u] = __ldcg(reinterpret_cast<const uint4*>(kp + d));
    }
  }

  // 2. The layer norm and the features; the new key and value into the cache row.
  layer_norm_row(p.x + static_cast<int64_t>(r) * d, gs, bs, xs, d, p.eps, sh.ln);
  T f[3];
#pragma unroll
  for (int i = 0; i < 3; ++i) f[i] = feature(xs, ws + (i * 8 + warp) * d, d, bias[i]);
  if (lane == 0) {
    sh.q[warp] = to_float(f[0]);
    T* row = p.kv + new_row * 2 * d;
    row[col] = f[1];
    row[d + col] = f[2];
  }
  gather_query(cluster, sh);  // its cluster barrier also publishes the new K/V row to the cluster

  // 3. Attention over this split's share of the keys, merged over the cluster.
#pragma unroll
  for (int u = 0; u < kSqPasses; ++u) {
    const int j = k_begin + u * kFdGroups + grp;
    if (j < k_end && j == len - 1) {
      const T* kp = key_row(j);
      kr[u] = __ldcg(reinterpret_cast<const uint4*>(kp));
      vr[u] = __ldcg(reinterpret_cast<const uint4*>(kp + d));
    }
  }
  split_partial<T>(kr, vr, k_begin, k_end, p.scale_log2, sh);
  if constexpr (kFold) merge_fold(cluster, sh, split, wos, d, p.acc + static_cast<int64_t>(r) * d);
  else merge_splits(cluster, sh, split, p.out + static_cast<int64_t>(r) * p.ldo + h * kFdDim);
}

// ---- one-row products with whole weight rows in shared memory -----------------------------

constexpr int kRpMaxPerWarp = 4;  // features a warp of the prefetching one-row product

template <typename T, typename OutT>
struct RpParams {
  const T* x;      // [k]
  const T* w;      // [n, k]
  const T* bias;   // [n] or null
  OutT* y;         // [n]
  const T* gamma;  // layer norm of x (null: none)
  const T* beta;
  int n, k, per_warp;
  bool accumulate, gelu;
  float eps;
  ResidualTerms res;  // x (layer norm) or y (accumulate) read through these terms
};

// gemv() for one row (the same result bit for bit), with each warp's per_warp weight rows copied
// whole into shared memory before the dependency wait: the products of a one-row step then have
// all their weight bytes in flight while the previous kernel runs (gemv's registers hold 4 packs
// a lane). Block b's warp w computes features (8 b + w) * per_warp + f.
// kTerms: the residual is read through p.res (a 4-kernel layer's fc1 and fc2; 96 registers
// against 40, so the plain products keep their own instance).
template <typename T, typename OutT, bool kTerms>
__global__ void __launch_bounds__(kFdThreads) gemv_row_prefetch_kernel(const RpParams<T, OutT> p) {
  extern __shared__ __align__(16) unsigned char fd_smem[];
  const int k = p.k, nacc = k / kFdV, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  T* xs = reinterpret_cast<T*>(fd_smem);  // [k]
  T* ws = xs + k;                         // [8 per_warp][k]
  T* gs = ws + 8 * p.per_warp * k;        // [k] gamma, [k] beta (layer norm only)
  T* bs = gs + k;
  __shared__ LnShared ln;
  const int col0 = (blockIdx.x * 8 + warp) * p.per_warp;
  for (int f = 0; f < p.per_warp && col0 + f < p.n; ++f) {
    const T* wrow = p.w + static_cast<int64_t>(col0 + f) * k;
    T* dst = ws + (warp * p.per_warp + f) * k;
    for (int a = lane; a < nacc; a += 32) cp_async16(dst + a * kFdV, wrow + a * kFdV);
  }
  if (p.gamma)
    for (int a = threadIdx.x; a < nacc; a += kFdThreads) {
      cp_async16(gs + a * kFdV, p.gamma + a * kFdV);
      cp_async16(bs + a * kFdV, p.beta + a * kFdV);
    }
  cp_async_commit();

  pdl_wait();  // x and the residual y come from earlier kernels
  pdl_trigger();

  // fc2 of a 4-kernel layer (accumulate through residual terms): lane 0 loads its columns'
  // residual and terms now, into registers, so that the loads overlap the staging of x and the
  // products (kRpMaxPerWarp constant trips: the arrays stay in registers).
  const bool terms = kTerms && p.accumulate && !p.gamma && p.res.terms > 0;
  float ry[kRpMaxPerWarp], rb0[kRpMaxPerWarp], rb1[kRpMaxPerWarp];
  long long ra0[kRpMaxPerWarp], ra1[kRpMaxPerWarp];
  if (kTerms && terms && lane == 0) {
#pragma unroll
    for (int f = 0; f < kRpMaxPerWarp; ++f) {
      const int col = col0 + f;
      if (f >= p.per_warp || col >= p.n) break;
      ry[f] = to_float(p.y[col]);
      ra0[f] = __ldcg(reinterpret_cast<const long long*>(p.res.acc[0] + col));
      rb0[f] = p.res.bias[0] ? to_float(__ldg(static_cast<const T*>(p.res.bias[0]) + col)) : 0.f;
      ra1[f] = p.res.terms > 1 ? __ldcg(reinterpret_cast<const long long*>(p.res.acc[1] + col)) : 0;
      rb1[f] = p.res.terms > 1 && p.res.bias[1] ? to_float(__ldg(static_cast<const T*>(p.res.bias[1]) + col)) : 0.f;
    }
  }

  if (p.gamma) {
    layer_norm_row<T, kTerms>(p.x, gs, bs, xs, k, p.eps, ln, &p.res);  // waits for this thread's copies
  } else {
    for (int a = threadIdx.x; a < nacc; a += kFdThreads)
      *reinterpret_cast<uint4*>(xs + a * kFdV) = __ldcg(reinterpret_cast<const uint4*>(p.x + a * kFdV));
    cp_async_wait_all();
    __syncthreads();
  }
  if constexpr (kTerms) {
#pragma unroll
    for (int f = 0; f < kRpMaxPerWarp; ++f) {
      const int col = col0 + f;
      if (f >= p.per_warp || col >= p.n) break;
      const float acc = dot_row(xs, ws + (warp * p.per_warp + f) * k, k);
      if (lane == 0) {  // gemv_store's epilogue for one row
        float v = acc + (p.bias ? to_float(p.bias[col]) : 0.0f);
        if (p.gelu) v = gelu_erf(v);
        if (terms) {  // the residual materialized (T == OutT, checked); its only reader zeroes the terms
          float yr = residual_term<T>(ry[f], ra0[f], rb0[f]);
          if (p.res.terms > 1) yr = residual_term<T>(yr, ra1[f], rb1[f]);
          if (p.res.zero) {
            p.res.acc[0][col] = 0;
            if (p.res.terms > 1) p.res.acc[1][col] = 0;
          }
          v += yr;
        }
        p.y[col] = from_float<OutT>(v);
      }
    }
  } else {
    for (int f = 0; f < p.per_warp && col0 + f < p.n; ++f) {
      const int col = col0 + f;
      const float acc = dot_row(xs, ws + (warp * p.per_warp + f) * k, k);
      if (lane == 0) {  // gemv_store's epilogue for one row
        float v = acc + (p.bias ? to_float(p.bias[col]) : 0.0f);
        if (p.gelu) v = gelu_erf(v);
        if (p.accumulate) v += to_float(p.y[col]);
        p.y[col] = from_float<OutT>(v);
      }
    }
  }
}

float scale_log2_of_head() { return static_cast<float>(1.4426950408889634 / std::sqrt(static_cast<double>(kFdDim))); }

// `rows_of_d` rows of d_model elements of dynamic shared memory; the kernel is allowed that much
// for the largest d_model once (past the 48 KiB default).
template <typename T, typename K>
size_t dynamic_smem(K kernel, int rows_of_d, int d_model) {
  static const cudaError_t set = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                      static_cast<int>(sizeof(T) * kFdMaxD * rows_of_d));
  check(set, "fused decode kernel: shared memory attribute", __FILE__, __LINE__);
  return sizeof(T) * static_cast<size_t>(d_model) * rows_of_d;
}

// Launches a one-kernel sub-layer over a cluster of kFdBlocks blocks per (row, head): the plain
// instance with rows_of_d rows of d_model elements of shared memory, or (fold non-null) the
// folded one with its extra parameters and 8 more rows (the output product's slice).
template <typename T, typename P, typename KPlain, typename KFold>
void launch_sublayer(KPlain plain, KFold folded, const P& p, const OutputFold* fold, const ResidualTerms* x_terms,
                     int rows_of_d, int d_model, int heads, int rows, cudaStream_t stream, const char* name) {
  const dim3 grid(kFdBlocks, static_cast<unsigned>(heads), static_cast<unsigned>(rows));
  if (!fold) {
    launch(plain, grid, dim3(kFdThreads), dynamic_smem<T>(plain, rows_of_d, d_model), stream, name, p);
    return;
  }
  FoldParams<T, P> fp{};
  static_cast<P&>(fp) = p;
  if (x_terms) fp.xres = *x_terms;
  fp.wo = static_cast<const T*>(fold->w_out);
  fp.acc = fold->acc;
  launch(folded, grid, dim3(kFdThreads), dynamic_smem<T>(folded, rows_of_d + 8, d_model), stream, name, fp);
}

}  // namespace

namespace detail {

// Features per warp of the prefetching one-row product: the fewest whose blocks are all resident
// at once with their shared memory (so no block waits for a second wave); 0: none fits.
template <typename T, typename OutT, bool kTerms>
int row_prefetch_per_warp(int64_t n, int64_t k, bool ln, size_t* smem_out) {
  const auto kernel = gemv_row_prefetch_kernel<T, OutT, kTerms>;
  constexpr int kMaxSmem = 200 * 1024;
  static const cudaError_t set = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kMaxSmem);
  if (set != cudaSuccess || k % kFdV != 0 || k > 16384 || n < 1 || n >= (int64_t(1) << 30)) return 0;
  for (int per_warp = 1; per_warp <= kRpMaxPerWarp; ++per_warp) {
    const size_t smem = sizeof(T) * static_cast<size_t>(k) * (1 + 8 * per_warp + (ln ? 2 : 0));
    if (smem > static_cast<size_t>(kMaxSmem)) break;
    const int64_t blocks = (n + 8 * per_warp - 1) / (8 * per_warp);
    if (blocks > resident_blocks(reinterpret_cast<const void*>(kernel), kFdThreads, smem)) continue;
    if (smem_out) *smem_out = smem;
    return per_warp;
  }
  return 0;
}

// The prefetching one-row product for gemv() (gemv.cu), when its shapes fit: returns false
// (nothing launched) otherwise. res: the residual terms (GemvFusion::residual; checked there).
bool gemv_row_prefetch(DataType dt, const void* x, const void* w, const void* bias, void* y, bool y_float32, int64_t n,
                       int64_t k, bool accumulate, bool gelu, const void* ln_gamma, const void* ln_beta, float ln_eps,
                       const ResidualTerms* res, cudaStream_t stream) {
  if (dt == DataType::kFloat32) return false;
  if (!aligned16(x) || !aligned16(w) || (ln_gamma && (!aligned16(ln_gamma) || !aligned16(ln_beta)))) return false;
  bool launched = false;
  dispatch_type(dt, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (!std::is_same_v<T, float>) {
      auto go = [&](auto* yp) {
        using OutT = std::remove_pointer_t<decltype(yp)>;
        const bool with_terms = res && res->terms > 0;
        size_t smem = 0;
        const int per_warp = with_terms ? row_prefetch_per_warp<T, OutT, true>(n, k, ln_gamma != nullptr, &smem)
                                        : row_prefetch_per_warp<T, OutT, false>(n, k, ln_gamma != nullptr, &smem);
        if (per_warp == 0) return;
        RpParams<T, OutT> p{};
        p.x = static_cast<const T*>(x);
        p.w = static_cast<const T*>(w);
        p.bias = static_cast<const T*>(bias);
        p.y = yp;
        p.gamma = static_cast<const T*>(ln_gamma);
        p.beta = static_cast<const T*>(ln_beta);
        p.n = static_cast<int>(n);
        p.k = static_cast<int>(k);
        p.per_warp = per_warp;
        p.accumulate = accumulate;
        p.gelu = gelu;
        p.eps = ln_eps;
        if (res) p.res = *res;
        const int64_t blocks = (n + 8 * per_warp - 1) / (8 * per_warp);
        if (with_terms)
          launch(gemv_row_prefetch_kernel<T, OutT, true>, dim3(static_cast<unsigned>(blocks)), dim3(kFdThreads), smem,
                 stream, "gemv (prefetched row, residual terms)", p);
        else
          launch(gemv_row_prefetch_kernel<T, OutT, false>, dim3(static_cast<unsigned>(blocks)), dim3(kFdThreads), smem,
                 stream, "gemv (prefetched row)", p);
        launched = true;
      };
      if (y_float32) go(static_cast<float*>(y));
      else go(static_cast<T*>(y));
    }
  });
  return launched;
}

}  // namespace detail

bool gemv_row_prefetch_fits(DataType dt, int64_t n, int64_t k, bool layer_norm) {
  int per_warp = 0;
  dispatch_type(dt, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (!std::is_same_v<T, float>) per_warp = detail::row_prefetch_per_warp<T, T, true>(n, k, layer_norm, nullptr);
  });
  return per_warp > 0;
}

// Thread-block clusters need compute capability 9.0.
bool clusters_available() {
  static const bool on = current_device_major() >= 9;
  return on;
}

bool cross_query_attention_supported(DataType dt, int d_model, int heads, int64_t max_kv_len) {
  return dt != DataType::kFloat32 && heads >= 1 && d_model == heads * kFdDim && d_model <= kFdMaxD &&
         max_kv_len >= 1 && max_kv_len <= int64_t(kFdBlocks) * kCqPasses * kFdGroups && clusters_available();
}

bool self_qkv_attention_supported(DataType dt, int d_model, int heads, int64_t max_kv_len) {
  return dt != DataType::kFloat32 && heads >= 1 && d_model == heads * kFdDim && d_model <= kFdMaxD &&
         max_kv_len >= 1 && max_kv_len <= int64_t(kFdBlocks) * kSqPasses * kFdGroups && clusters_available();
}

void cross_query_attention(DataType dt, const void* x, const void* ln_gamma, const void* ln_beta, float ln_eps,
                           const void* wq, const void* bq, const void* k, const void* v, int64_t ld_kv,
                           int64_t kv_batch_stride, const int32_t* kv_index, const int32_t* kv_lengths,
                           int64_t max_kv_len, void* out, int64_t ldo, int rows, int d_model, int heads,
                           cudaStream_t stream, const ResidualTerms* x_terms, const OutputFold* fold) {
  require(cross_query_attention_supported(dt, d_model, heads, max_kv_len),
          "cross_query_attention: needs float16/bfloat16, d_model = heads * 64 <= ", kFdMaxD, " and 1 <= max_kv_len <= ",
          kFdBlocks * kCqPasses * kFdGroups, "; got d_model ", d_model, ", heads ", heads, ", max_kv_len ", max_kv_len);
  require(rows >= 0 && ld_kv >= d_model && ldo >= d_model && kv_batch_stride >= 0,
          "cross_query_attention: bad rows / strides");
  if (rows == 0) return;
  const bool folding = fold && fold->w_out;
  require(x && ln_gamma && ln_beta && wq && k && v && kv_index && kv_lengths && (out || folding),
          "cross_query_attention: null pointer");
  require(!folding || (fold->acc && aligned16(fold->w_out)), "cross_query_attention: fold without acc / unaligned");
  require(!x_terms || x_terms->terms == 0 || (folding && x_terms->terms <= 2 && !x_terms->zero),
          "cross_query_attention: x_terms: 1 or 2 terms, with a fold, not zeroed here");
  require(aligned16(x) && aligned16(ln_gamma) && aligned16(ln_beta) && aligned16(wq) && aligned16(k) &&
              aligned16(v) && ld_kv % 8 == 0 && kv_batch_stride % 8 == 0,
          "cross_query_attention: operands must be 16-byte aligned");
  dispatch_type(dt, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (!std::is_same_v<T, float>) {
      CqParams<T> p{};
      p.x = static_cast<const T*>(x);
      p.gamma = static_cast<const T*>(ln_gamma);
      p.beta = static_cast<const T*>(ln_beta);
      p.wq = static_cast<const T*>(wq);
      p.bq = static_cast<const T*>(bq);
      p.k = static_cast<const T*>(k);
      p.v = static_cast<const T*>(v);
      p.ld_kv = ld_kv;
      p.kv_bs = kv_batch_stride;
      p.kv_index = kv_index;
      p.kv_lengths = kv_lengths;
      p.out = static_cast<T*>(out);
      p.ldo = ldo;
      p.d = d_model;
      p.max_kv_len = static_cast<int>(max_kv_len);
      const int64_t chunk = (max_kv_len + kFdBlocks - 1) / kFdBlocks;
      p.chunk = static_cast<int>((chunk + kFdGroups - 1) / kFdGroups * kFdGroups);
      p.eps = ln_eps;
      p.scale_log2 = scale_log2_of_head();
      // x, 8 weight rows, gamma, beta
      launch_sublayer<T>(cross_query_attention_kernel<T, false>, cross_query_attention_kernel<T, true>, p,
                         folding ? fold : nullptr, x_terms, 11, d_model, heads, rows, stream, "cross_query_attention");
    }
  });
}

void self_qkv_attention(DataType dt, const void* x, const void* ln_gamma, const void* ln_beta, float ln_eps,
                        const void* w_qkv, const void* b_qkv, void* kv, const int32_t* kv_rows,
                        const int32_t* kv_lengths, const int32_t* kv_index, const PagedKV* paged, int64_t max_kv_len,
                        void* out, int64_t ldo, int rows, int d_model, int heads, cudaStream_t stream,
                        const OutputFold* fold) {
  require(self_qkv_attention_supported(dt, d_model, heads, max_kv_len),
          "self_qkv_attention: needs float16/bfloat16, d_model = heads * 64 <= ", kFdMaxD, " and 1 <= max_kv_len <= ",
          kFdBlocks * kSqPasses * kFdGroups, "; got d_model ", d_model, ", heads ", heads, ", max_kv_len ", max_kv_len);
  require(rows >= 0 && ldo >= d_model, "self_qkv_attention: bad rows / strides");
  if (rows == 0) return;
  const bool is_paged = paged && paged->block_table;
  const bool folding = fold && fold->w_out;
  require(x && ln_gamma && ln_beta && w_qkv && kv && kv_rows && kv_lengths && (out || folding) &&
              (is_paged || kv_index),
          "self_qkv_attention: null pointer");
  require(!folding || (fold->acc && aligned16(fold->w_out)), "self_qkv_attention: fold without acc / unaligned");
  require(!is_paged || (paged->block_size >= 1 && paged->table_stride * paged->block_size >= max_kv_len),
          "self_qkv_attention: paged block_size / table_stride too small for max_kv_len");
  require(aligned16(x) && aligned16(ln_gamma) && aligned16(ln_beta) && aligned16(w_qkv) && aligned16(kv),
          "self_qkv_attention: operands must be 16-byte aligned");
  dispatch_type(dt, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (!std::is_same_v<T, float>) {
      SqParams<T> p{};
      p.x = static_cast<const T*>(x);
      p.gamma = static_cast<const T*>(ln_gamma);
      p.beta = static_cast<const T*>(ln_beta);
      p.w = static_cast<const T*>(w_qkv);
      p.bias = static_cast<const T*>(b_qkv);
      p.kv = static_cast<T*>(kv);
      p.kv_rows = kv_rows;
      p.kv_lengths = kv_lengths;
      p.kv_index = kv_index;
      p.block_table = is_paged ? paged->block_table : nullptr;
      p.table_stride = is_paged ? paged->table_stride : 0;
      p.block_size = is_paged ? paged->block_size : 0;
      p.out = static_cast<T*>(out);
      p.ldo = ldo;
      p.d = d_model;
      p.max_kv_len = static_cast<int>(max_kv_len);
      p.eps = ln_eps;
      p.scale_log2 = scale_log2_of_head();
      // x, 24 weight rows, gamma, beta
      launch_sublayer<T>(self_qkv_attention_kernel<T, false>, self_qkv_attention_kernel<T, true>, p,
                         folding ? fold : nullptr, nullptr, 27, d_model, heads, rows, stream, "self_qkv_attention");
    }
  });
}

}  // namespace speechcore::cuda
