// One-row decode steps: the cross-attention's query product and the attention in one kernel.
//
// The fused step runs a layer's cross-attention as two dependent kernels: the query product
// (layer norm fused, gemv.cu) and the decode attention over the window's static K/V. Each costs a
// dependent round trip (benchmarks/pdl_chain.cu: ~2 us a phase on the H200). Here a cluster of
// kCqBlocks blocks per (row, head) does both:
//   1. every block loads its share of the head's K/V (kCqBlocks key splits) and its 8 rows of the
//      query weights before the dependency wait (nothing of the step writes them);
//   2. after the wait, each block stages x, recomputes the layer norm and computes 8 query
//      features exactly as gemv() with its fused layer norm does (the same float32 order, the
//      same rounding to T), and the 64 features of the head are gathered through distributed
//      shared memory;
//   3. each block attends over its keys (online softmax, as the decode kernel) and the splits
//      are merged through distributed shared memory, each block writing 8 output features.
// float16/bfloat16, head size 64, at most kCqBlocks * kCqPrePasses * 32 keys (Whisper's 1,500).
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

constexpr int kCqBlocks = 8;      // cluster: key splits of one head, and 8 query features each
constexpr int kCqThreads = 256;   // 8 warps: one query feature each
constexpr int kCqDim = 64;        // head size
constexpr int kCqPrePasses = 6;   // key passes of a split, all loaded before the wait
constexpr int kCqMaxD = 1280;     // d_model: x, 8 query-weight rows, gamma, beta: 28 KB of shared memory

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

// 16 bytes global -> shared without registers (cp.async, L2 only); completion per thread.
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_addr(smem)), "l"(gmem) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }

template <typename T>
__device__ __forceinline__ void unpack(const uint4& u, float* f) {
  const T* e = reinterpret_cast<const T*>(&u);
#pragma unroll
  for (int i = 0; i < 8; ++i) f[i] = to_float(e[i]);
}

template <typename T>
__global__ void __cluster_dims__(kCqBlocks, 1, 1) __launch_bounds__(kCqThreads, 2)
    cross_query_attention_kernel(const CqParams<T> p) {
  constexpr int V = 8;                  // elements of a 16-byte pack
  constexpr int TPK = kCqDim / V;       // threads per key row
  constexpr int GROUPS = kCqThreads / TPK;
  constexpr int kLnWarps = kLnStatThreads / 32;
  extern __shared__ __align__(16) unsigned char cq_smem[];
  T* xs = reinterpret_cast<T*>(cq_smem);  // [d]
  T* ws = xs + p.d;                       // [8][d]: the block's query-weight rows
  T* gs = ws + 8 * p.d;                   // [d]: gamma, then [d] beta
  T* bs = gs + p.d;
  __shared__ float s_part[kLnWarps], s_mean, s_inv;
  __shared__ float s_q[8], s_qall[kCqDim];
  __shared__ float s_m[GROUPS], s_l[GROUPS];
  __shared__ float s_o[GROUPS][kCqDim];
  __shared__ float s_M, s_L, s_O[kCqDim];  // this split's partial, read by the cluster

  cg::cluster_group cluster = cg::this_cluster();
  const int split = static_cast<int>(cluster.block_rank());
  const int h = blockIdx.y, r = blockIdx.z;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int grp = tid / TPK, sub = tid % TPK;
  const int d = p.d, nacc = d / V;
  const int k_begin = split * p.chunk;

  // 1. Before the wait: this split's K/V, the warp's query-weight row, gamma/beta's first packs.
  const int64_t slot = p.kv_index[r];
  const T* kb = p.k + slot * p.kv_bs + static_cast<int64_t>(h) * kCqDim + sub * V;
  const T* vb = p.v + slot * p.kv_bs + static_cast<int64_t>(h) * kCqDim + sub * V;
  const int lim = min(k_begin + p.chunk, p.max_kv_len);
  uint4 kr[kCqPrePasses], vr[kCqPrePasses];
#pragma unroll
  for (int u = 0; u < kCqPrePasses; ++u) {
    const int j = k_begin + u * GROUPS + grp;
    if (j < lim) {
      kr[u] = __ldg(reinterpret_cast<const uint4*>(kb + static_cast<int64_t>(j) * p.ld_kv));
      vr[u] = __ldg(reinterpret_cast<const uint4*>(vb + static_cast<int64_t>(j) * p.ld_kv));
    } else {
      kr[u] = make_uint4(0, 0, 0, 0);
      vr[u] = make_uint4(0, 0, 0, 0);
    }
  }
  // The warp's query-weight row into shared memory (no registers held across the wait); each
  // lane later reads only the packs it copied, so its own cp.async wait suffices.
  const int qrow = h * kCqDim + split * 8 + warp;  // the query feature of this warp
  const T* wrow = p.wq + static_cast<int64_t>(qrow) * d;
  T* wsr = ws + warp * d;
  for (int a = lane; a < nacc; a += 32) cp_async16(wsr + a * V, wrow + a * V);
  cp_async_commit();
  for (int a = tid; a < nacc; a += kCqThreads) {  // gamma and beta too (read by the same thread)
    cp_async16(gs + a * V, p.gamma + a * V);
    cp_async16(bs + a * V, p.beta + a * V);
  }
  cp_async_commit();

  pdl_wait();  // x comes from the previous kernel
  pdl_trigger();

  // 2. The layer norm of x, as gemv()'s fused layer norm (bit for bit), then the query features.
  for (int a = tid; a < nacc; a += kCqThreads) {
    const uint4 u = __ldcg(reinterpret_cast<const uint4*>(p.x + static_cast<int64_t>(r) * d + a * V));
    *reinterpret_cast<uint4*>(xs + a * V) = u;
  }
  __syncthreads();
  float mean = 0.0f;
  for (int pass = 0; pass < 2; ++pass) {  // 0: sums, 1: squared deviations from the mean
    if (warp < kLnWarps) {
      const float sum =
          ln_warp_stat<V>([&](int a) { return load_pack(xs + a * V); }, nacc, warp, lane, pass, mean);
      if (lane == 0) s_part[warp] = sum;
    }
    __syncthreads();
    if (tid == 0) {
      const float tot = ln_block_stat(s_part, d);
      if (pass) s_inv = 1.0f / sqrtf(tot + p.eps);
      else s_mean = tot;
    }
    __syncthreads();
    mean = s_mean;
  }
  {
    const float inv = s_inv;
    cp_async_wait_all();  // this thread's gamma/beta packs (and its warp's weight packs)
    for (int c0 = tid; c0 < nacc; c0 += kCqThreads) {
      const Pack<T> g = load_pack(gs + c0 * V), bt = load_pack(bs + c0 * V);
      Pack<T> xv = load_pack(xs + c0 * V);
#pragma unroll
      for (int i = 0; i < V; ++i)
        xv.v[i] = from_float<T>((to_float(xv.v[i]) - mean) * inv * to_float(g.v[i]) + to_float(bt.v[i]));
      store_pack(xs + c0 * V, xv);
    }
  }
  __syncthreads();
  {
    float acc = 0.0f;  // gemv's order: packs lane, lane + 32, ...; elements in order
    for (int a = lane; a < nacc; a += 32) {
      const Pack<T> xv = load_pack(xs + a * V);
      const Pack<T> w = load_pack(wsr + a * V);
#pragma unroll
      for (int i = 0; i < V; ++i) acc = fmaf(to_float(xv.v[i]), to_float(w.v[i]), acc);
    }
    acc = warp_sum(acc);
    if (lane == 0) {
      const float b = p.bq ? to_float(p.bq[qrow]) : 0.0f;
      s_q[warp] = to_float(from_float<T>(acc + b));  // rounded to T, as gemv stores it
    }
  }
  cluster.sync();  // every split's 8 query features written
  if (tid < kCqDim) s_qall[tid] = *cluster.map_shared_rank(&s_q[tid % 8], tid / 8);
  __syncthreads();

  // 3. Attention over this split's keys (the decode kernel's arithmetic).
  int len = p.kv_lengths[r];
  len = len < 0 ? 0 : (len > p.max_kv_len ? p.max_kv_len : len);
  const int k_end = min(k_begin + p.chunk, len);
#pragma unroll
  for (int u = 0; u < kCqPrePasses; ++u) {  // keys loaded past the length take no part (0 * NaN)
    if (k_begin + u * GROUPS + grp >= k_end) {
      kr[u] = make_uint4(0, 0, 0, 0);
      vr[u] = make_uint4(0, 0, 0, 0);
    }
  }
  float qf[V];
#pragma unroll
  for (int i = 0; i < V; ++i) qf[i] = s_qall[sub * V + i] * p.scale_log2;
  float sc[kCqPrePasses];
  float mx = -INFINITY;
#pragma unroll
  for (int u = 0; u < kCqPrePasses; ++u) {
    float kf[V];
    unpack<T>(kr[u], kf);
    float dot = 0.f;
#pragma unroll
    for (int i = 0; i < V; ++i) dot = fmaf(qf[i], kf[i], dot);
#pragma unroll
    for (int off = TPK / 2; off > 0; off >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, off);
    sc[u] = (k_begin + u * GROUPS + grp < k_end) ? dot : -INFINITY;
    mx = fmaxf(mx, sc[u]);
  }
  const float m_use = mx == -INFINITY ? 0.f : mx;
  float l_run = 0.f, o[V];
#pragma unroll
  for (int i = 0; i < V; ++i) o[i] = 0.f;
#pragma unroll
  for (int u = 0; u < kCqPrePasses; ++u) {
    const float pu = exp2f(sc[u] - m_use);
    l_run += pu;
    float vf[V];
    unpack<T>(vr[u], vf);
#pragma unroll
    for (int i = 0; i < V; ++i) o[i] = fmaf(pu, vf[i], o[i]);
  }
  if (sub == 0) {
    s_m[grp] = mx;
    s_l[grp] = l_run;
  }
#pragma unroll
  for (int i = 0; i < V; ++i) s_o[grp][sub * V + i] = o[i];
  __syncthreads();
  if (tid < kCqDim) {  // the block's partial over its key groups
    float M = -INFINITY;
#pragma unroll
    for (int g = 0; g < GROUPS; ++g) M = fmaxf(M, s_m[g]);
    float L = 0.f, acc = 0.f;
    if (M != -INFINITY) {
#pragma unroll
      for (int g = 0; g < GROUPS; ++g) {
        const float w = exp2f(s_m[g] - M);
        L = fmaf(w, s_l[g], L);
        acc = fmaf(w, s_o[g][tid], acc);
      }
    }
    s_O[tid] = acc;
    if (tid == 0) {
      s_M = M;
      s_L = L;
    }
  }
  cluster.sync();  // every split's partial written
  if (tid < 8) {   // this block's 8 output features, merged over the splits in split order
    const int dd = split * 8 + tid;
    float Mx = -INFINITY;
#pragma unroll
    for (int s = 0; s < kCqBlocks; ++s) Mx = fmaxf(Mx, *cluster.map_shared_rank(&s_M, s));
    float Ls = 0.f, acc = 0.f;
    if (Mx != -INFINITY) {
#pragma unroll
      for (int s = 0; s < kCqBlocks; ++s) {
        const float w = exp2f(*cluster.map_shared_rank(&s_M, s) - Mx);
        Ls = fmaf(w, *cluster.map_shared_rank(&s_L, s), Ls);
        acc = fmaf(w, *cluster.map_shared_rank(&s_O[dd], s), acc);
      }
    }
    p.out[static_cast<int64_t>(r) * p.ldo + h * kCqDim + dd] = from_float<T>(Ls > 0.f ? acc / Ls : 0.f);
  }
  cluster.sync();  // no block leaves while the others still read its shared memory
}

}  // namespace

bool cross_query_attention_supported(DataType dt, int d_model, int heads, int64_t max_kv_len) {
  return dt != DataType::kFloat32 && heads >= 1 && d_model == heads * kCqDim && d_model <= kCqMaxD &&
         max_kv_len >= 1 && max_kv_len <= int64_t(kCqBlocks) * kCqPrePasses * 32;
}

void cross_query_attention(DataType dt, const void* x, const void* ln_gamma, const void* ln_beta, float ln_eps,
                           const void* wq, const void* bq, const void* k, const void* v, int64_t ld_kv,
                           int64_t kv_batch_stride, const int32_t* kv_index, const int32_t* kv_lengths,
                           int64_t max_kv_len, void* out, int64_t ldo, int rows, int d_model, int heads,
                           cudaStream_t stream) {
  require(cross_query_attention_supported(dt, d_model, heads, max_kv_len),
          "cross_query_attention: needs float16/bfloat16, d_model = heads * 64 <= 1280 and "
          "1 <= max_kv_len <= ", kCqBlocks * kCqPrePasses * 32, "; got d_model ", d_model, ", heads ", heads,
          ", max_kv_len ", max_kv_len);
  require(rows >= 0 && ld_kv >= d_model && ldo >= d_model && kv_batch_stride >= 0,
          "cross_query_attention: bad rows / strides");
  if (rows == 0) return;
  require(x && ln_gamma && ln_beta && wq && k && v && kv_index && kv_lengths && out,
          "cross_query_attention: null pointer");
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
      const int groups = kCqThreads / (kCqDim / 8);
      const int64_t chunk = (max_kv_len + kCqBlocks - 1) / kCqBlocks;
      p.chunk = static_cast<int>((chunk + groups - 1) / groups * groups);
      p.eps = ln_eps;
      p.scale_log2 = static_cast<float>(1.4426950408889634 / std::sqrt(static_cast<double>(kCqDim)));
      launch(cross_query_attention_kernel<T>, dim3(kCqBlocks, static_cast<unsigned>(heads), static_cast<unsigned>(rows)),
             dim3(kCqThreads), sizeof(T) * static_cast<size_t>(d_model) * 11, stream, "cross_query_attention", p);
    }
  });
}

}  // namespace speechcore::cuda
