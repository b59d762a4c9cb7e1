// The persistent one-row decoder step (speechcore_cuda/decoder_step.h).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#include "kernel_utils.cuh"
#include "speechcore_cuda/decoder_step.h"

namespace speechcore::cuda {

namespace {

using namespace detail;

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kHead = 64;           // head size
constexpr int kLnWarps = kLnStatThreads / 32;  // layer_norm()'s block, replayed by warps 0-3
constexpr int kPartial = kHead + 4; // floats per cross-attention split state: o[64], m, l (+ pad)

struct StepConsts {
  int wbuf_bytes, splits, chunk, score_cap;
  int rows_cap;  // most rows of one product a block owns (ceil(max(3d, ffn) / grid))
  int wslice;    // bytes of the largest weight slice; a buffer holds it, then gamma, beta, bias
  int trace;  // SPEECHCORE_PERSISTENT_TRACE: block 0 prints its phase timings on one launch
};

// Phase timing (diagnostics): clock64() of block 0 at the start and end of each phase, summed
// over the layers and launches into the workspace; printed on the 50th launch.
constexpr int kPhases = 8;

// ---- device helpers -------------------------------------------------------------------------

// Weight slices move by the bulk-copy (TMA) engine (kernel_utils.cuh: bulk_copy, mbar_*): one
// instruction a slice, completion counted in bytes on a shared-memory mbarrier, so the stream of
// the next product's weights does not queue in the SM's load pipeline ahead of the current
// phase's latency-critical loads.

__device__ __forceinline__ unsigned ld_acquire(const unsigned* p) {
  unsigned v;
  asm volatile("ld.acquire.gpu.global.u32 %0, [%1];\n" : "=r"(v) : "l"(p) : "memory");
  return v;
}

// Grid-wide barrier over a counter that only grows within a launch: arrival number `target`
// (a multiple of gridDim.x) is reached when every block has arrived that many times / gridDim.x.
// The release add (after the block barrier) and the acquire loads make every write of the block
// before the barrier visible to every block after it (readers use .cg loads, which skip the
// non-coherent L1).
__device__ __forceinline__ void grid_sync(unsigned* counter, unsigned& target) {
  __syncthreads();
  target += gridDim.x;
  if (threadIdx.x == 0) {
    asm volatile("red.release.gpu.global.add.u32 [%0], 1;\n" ::"l"(counter) : "memory");
    while (ld_acquire(counter) < target) {
    }
  }
  __syncthreads();
}

template <typename T>
__device__ __forceinline__ Pack<T> ldcg_pack(const T* p) {
  const uint4 u = __ldcg(reinterpret_cast<const uint4*>(p));
  return *reinterpret_cast<const Pack<T>*>(&u);
}

// n rows split over the grid: block b owns [n * b / G, n * (b + 1) / G).
__device__ __forceinline__ int slice_begin(int n, int b, int g) { return static_cast<int>(static_cast<int64_t>(n) * b / g); }

// vin = x (global, k elements) into shared memory.
template <typename T>
__device__ __forceinline__ void stage_vector(const T* x, int k, T* vin) {
  constexpr int V = Pack<T>::kSize;
#pragma unroll 4
  for (int a = threadIdx.x; a < k / V; a += kThreads) store_pack(vin + a * V, ldcg_pack(x + a * V));
}

// vin = layer_norm(x) rounded to T, the statistics in layer_norm()'s float32 order (as gemv()'s
// fused layer norm): warp j < 4 sums the packs j * 32 + lane, + 128, ...; ((w0 + w2) + (w1 + w3)).
template <typename T>
__device__ __noinline__ void stage_layer_norm(const T* x, const T* g, const T* b, int k, float eps, T* vin, float* part) {
  constexpr int V = Pack<T>::kSize;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nacc = k / V;
  // gamma and beta (shared memory, with the weights): this thread's first packs, read early
  Pack<T> g0, b0;
  if (static_cast<int>(threadIdx.x) < nacc) {
    g0 = load_pack(g + threadIdx.x * V);
    b0 = load_pack(b + threadIdx.x * V);
  }
  stage_vector(x, k, vin);
  __syncthreads();
  float mean = 0.0f, inv = 0.0f;
  for (int pass = 0; pass < 2; ++pass) {
    if (warp < kLnWarps) {
      const float sum = ln_warp_stat<V>([&](int a) { return load_pack(vin + a * V); }, nacc, warp, lane, pass, mean);
      if (lane == 0) part[pass * kLnWarps + warp] = sum;
    }
    __syncthreads();
    const float tot = ln_block_stat(part + pass * kLnWarps, k);
    if (pass) inv = 1.0f / sqrtf(tot + eps);
    else mean = tot;
  }
  for (int a = threadIdx.x; a < nacc; a += kThreads) {
    Pack<T> xv = load_pack(vin + a * V);
    const bool first = a == static_cast<int>(threadIdx.x);
    const Pack<T> gv = first ? g0 : load_pack(g + a * V), bv = first ? b0 : load_pack(b + a * V);
#pragma unroll
    for (int i = 0; i < V; ++i)
      xv.v[i] = from_float<T>((to_float(xv.v[i]) - mean) * inv * to_float(gv.v[i]) + to_float(bv.v[i]));
    store_pack(vin + a * V, xv);
  }
  __syncthreads();
}

// Where a slice's products go: column col = r0 + r to out + col, or (out2 and col >= split) to
// out2 + col - split; plus bias[r] (null: none), GELU, + own[r] (the residual) when own.
template <typename T>
struct SliceOut {
  T* out = nullptr;
  T* out2 = nullptr;
  int split = 0;
  int r0 = 0;
  const T* bias = nullptr;
  bool gelu = false;
  float* own = nullptr;
};

// gemv()'s epilogue: v = acc + bias, GELU, + the old value (residual, *own: the block's copy of
// it in shared memory, updated too), one rounding.
template <typename T>
__device__ __forceinline__ void store_out(T* out, float acc, float bias, bool gelu, float* own) {
  float v = acc + bias;
  if (gelu) v = gelu_erf(v);
  if (own) v += *own;
  const T r = from_float<T>(v);
  *out = r;
  if (own) *own = to_float(r);
}

// out[r] = dot(w row r, vin) for the rows of a shared-memory slice, one warp a row; each lane's
// FMA order as gemv() (packs lane, lane + 32, ...), then the xor-tree warp sum; the epilogue on
// lane 0. Not inlined: the kernel runs it six times a layer, and one copy keeps the kernel's code
// inside the instruction cache.
template <typename T>
__device__ __noinline__ void slice_products(const unsigned char* wbuf, int rows, int k, const T* vin, SliceOut<T> o) {
  constexpr int V = Pack<T>::kSize;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const T* w = reinterpret_cast<const T*>(wbuf);
  for (int r = warp; r < rows; r += kWarps) {
    const T* wr = w + static_cast<int64_t>(r) * k;
    float acc = 0.0f;
    for (int kk = lane * V; kk < k; kk += 32 * V) {
      const Pack<T> wv = load_pack(wr + kk), xv = load_pack(vin + kk);
#pragma unroll
      for (int i = 0; i < V; ++i) acc = fmaf(to_float(xv.v[i]), to_float(wv.v[i]), acc);
    }
    acc = warp_sum(acc);
    if (lane == 0) {
      const int col = o.r0 + r;
      T* dst = o.out2 && col >= o.split ? o.out2 + (col - o.split) : o.out + col;
      store_out(dst, acc, o.bias ? to_float(o.bias[r]) : 0.0f, o.gelu, o.own ? o.own + r : nullptr);
    }
  }
}

// Row of key j: through a block table (paged), else base + j.
struct KeyRows {
  const int32_t* table = nullptr;
  int block_size = 1;
  int64_t base = 0;
  __device__ __forceinline__ int64_t operator()(int j) const {
    return table ? static_cast<int64_t>(__ldcg(table + j / block_size)) * block_size + j % block_size : base + j;
  }
};

// Pulls rows [0, n) of one head (row_bytes from kv + row_of(j) * ld, for K and for V at + vofs)
// into L2 for a later phase.
template <typename T>
__device__ __noinline__ void prefetch_head_l2(const T* kv, int64_t ld, int64_t vofs, int n, KeyRows row_of) {
  constexpr int kLines = kHead * static_cast<int>(sizeof(T)) / 128;  // 128-byte lines a row
  for (int i = threadIdx.x; i < n * 2 * kLines; i += kThreads) {
    const int j = i / (2 * kLines), rest = i % (2 * kLines);
    const T* p = kv + row_of(j) * ld + (rest >= kLines ? vofs : 0);
    asm volatile("prefetch.global.L2 [%0];\n" ::"l"(reinterpret_cast<const char*>(p) + (rest % kLines) * 128));
  }
}

// Softmax attention of one head's query (q: 64 floats in shared memory, scale folded in) over
// keys [0, n): key j's K row at kv + row_of(j) * ld, V at + vofs (global memory, read through L2). One key a thread for the
// scores (scores in sc), then V packs x key groups.
// Leaves o[64] (unnormalized), m and l in shared memory (res[0..63], res[64], res[65]).
template <typename T>
__device__ __noinline__ void attend(const float* q, const T* kv, int64_t ld, int64_t vofs, int n, KeyRows row_of, float* sc,
                       float* red, float* red2, float* res) {
  constexpr int V = Pack<T>::kSize;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  float mx = -INFINITY;
  for (int j = threadIdx.x; j < n; j += kThreads) {
    const T* kr = kv + row_of(j) * ld;
    float s = 0.0f;
#pragma unroll
    for (int a = 0; a < kHead / V; ++a) {
      const Pack<T> kp = ldcg_pack(kr + a * V);
#pragma unroll
      for (int i = 0; i < V; ++i) s = fmaf(q[a * V + i], to_float(kp.v[i]), s);
    }
    sc[j] = s;
    mx = fmaxf(mx, s);
  }
  mx = block_max(mx, red);
  float l = 0.0f;
  for (int j = threadIdx.x; j < n; j += kThreads) {
    const float p = n > 0 ? __expf(sc[j] - mx) : 0.0f;
    sc[j] = p;
    l += p;
  }
  l = block_sum(l, red);  // its barriers also publish sc
  constexpr int P = kHead / V;  // packs a V row: P packs x (kThreads / P) key groups
  const int pk = threadIdx.x % P, grp = threadIdx.x / P;
  float acc[V];
#pragma unroll
  for (int i = 0; i < V; ++i) acc[i] = 0.0f;
#pragma unroll 4
  for (int j = grp; j < n; j += kThreads / P) {
    const Pack<T> vp = ldcg_pack(kv + row_of(j) * ld + vofs + pk * V);
    const float p = sc[j];
#pragma unroll
    for (int i = 0; i < V; ++i) acc[i] = fmaf(p, to_float(vp.v[i]), acc[i]);
  }
#pragma unroll
  for (int o = P; o < 32; o <<= 1)
#pragma unroll
    for (int i = 0; i < V; ++i) acc[i] += __shfl_xor_sync(0xffffffffu, acc[i], o);
  if (lane < P)
#pragma unroll
    for (int i = 0; i < V; ++i) red2[warp * kHead + pk * V + i] = acc[i];
  __syncthreads();
  if (threadIdx.x < kHead) {
    float o = 0.0f;
    for (int w = 0; w < kWarps; ++w) o += red2[w * kHead + threadIdx.x];
    res[threadIdx.x] = o;
  }
  if (threadIdx.x == 0) {
    res[kHead] = mx;
    res[kHead + 1] = l;
  }
  __syncthreads();
}

// Stage `stage` (product stage % 6 of layer stage / 6) of this block: its weight slice, the layer
// norm's gamma and beta (products 0, 2, 4) and the slice's bias, by bulk copies into buffer
// (stage % 6) & 1, counted on that buffer's mbarrier (an empty stage just arrives). Thread 0.
template <typename T>
__device__ __noinline__ void issue_stage(int stage, int n_layers, int d, int ffn, int G, int bid, int wslice,
                                         const DecoderLayerWeights* layers, unsigned char* wbuf0,
                                         unsigned char* wbuf1, uint64_t* mbar) {
  constexpr int V = Pack<T>::kSize;
  const int es = static_cast<int>(sizeof(T));
  const int l = stage / 6, p = stage % 6;
  if (l >= n_layers) return;
  const DecoderLayerWeights& L = layers[l & 1];
  const void* w = p == 0 ? L.qkv_w : p == 1 ? L.out_w : p == 2 ? L.q_w : p == 3 ? L.cout_w : p == 4 ? L.fc1_w : L.fc2_w;
  const void* b = p == 0 ? L.qkv_b : p == 1 ? L.out_b : p == 2 ? L.q_b : p == 3 ? L.cout_b : p == 4 ? L.fc1_b : L.fc2_b;
  const void* g = p == 0 ? L.ln1_g : p == 2 ? L.ln2_g : p == 4 ? L.ln3_g : nullptr;
  const void* be = p == 0 ? L.ln1_b : p == 2 ? L.ln2_b : p == 4 ? L.ln3_b : nullptr;
  const int n = p == 0 ? 3 * d : p == 4 ? ffn : d, k = p == 5 ? ffn : d;
  const int r0 = slice_begin(n, bid, G), r1 = slice_begin(n, bid + 1, G);
  const int rb0 = r0 & ~(V - 1), rb1 = (r1 + V - 1) & ~(V - 1);  // <= n: n is a multiple of V
  const unsigned wbytes = static_cast<unsigned>((r1 - r0) * k * es);
  const unsigned gbytes = g ? static_cast<unsigned>(2 * d * es) : 0u;
  const unsigned bbytes = b && r1 > r0 ? static_cast<unsigned>((rb1 - rb0) * es) : 0u;
  uint64_t* bar = &mbar[p & 1];
  unsigned char* dst = (p & 1) ? wbuf1 : wbuf0;
  if (wbytes + gbytes + bbytes == 0) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(smem_addr(bar)) : "memory");
    return;
  }
  fence_proxy_async();  // earlier generic reads of dst first
  mbar_expect_tx(bar, wbytes + gbytes + bbytes);
  if (wbytes) bulk_copy(dst, static_cast<const T*>(w) + static_cast<int64_t>(r0) * k, wbytes, bar);
  if (gbytes) {
    bulk_copy(dst + wslice, g, gbytes / 2, bar);
    bulk_copy(dst + wslice + d * es, be, gbytes / 2, bar);
  }
  if (bbytes) bulk_copy(dst + wslice + 2 * d * es, static_cast<const T*>(b) + rb0, bbytes, bar);
}

template <typename T>
__global__ void __launch_bounds__(kThreads, 1) persistent_step_kernel(const PersistentStepArgs a, const StepConsts c,
                                                                      unsigned* counters, float* partials) {
  extern __shared__ __align__(16) unsigned char smem[];
  const int d = a.d, ffn = a.ffn, G = gridDim.x, bid = blockIdx.x;
  unsigned char* wbuf[2] = {smem, smem + c.wbuf_bytes};
  T* vin = reinterpret_cast<T*>(smem + 2 * c.wbuf_bytes);               // [ffn]
  uint64_t* mbar = reinterpret_cast<uint64_t*>(vin + ffn);              // [2]: weight buffers
  DecoderLayerWeights* layers = reinterpret_cast<DecoderLayerWeights*>(mbar + 2);  // [2]: layers l, l + 1
  long long* tsum = reinterpret_cast<long long*>(layers + 2);           // [2 * kPhases + 1]: trace
  float* sc = reinterpret_cast<float*>(tsum + 2 * kPhases + 2);         // [score_cap]
  float* red2 = sc + c.score_cap;                                       // [kWarps * 64]
  float* res = red2 + kWarps * kHead;                                   // [68]
  float* qs = res + kPartial;                                           // [64]
  float* red = qs + kHead;                                              // [32]
  float* part = red + 32;                                               // [8]
  float* x_own = part + 8;                                              // [rows_cap]: x of the d-slice
  float* wgt = x_own + c.rows_cap;                                      // [grid]: split merge weights

  T* x = static_cast<T*>(a.x);
  T* qkv = static_cast<T*>(a.qkv);
  T* att = static_cast<T*>(a.att);
  T* ff = static_cast<T*>(a.ff);
  // Diagnostics (c.trace): block 0's thread 0 sums, per phase, the cycles from the phase's start
  // to its barrier (work) and from there to the next phase's start (barrier wait + prefetch wait).
  long long t_start = 0, t_end = 0;
  int prev_phase = -1;
  long long* tsum_g = reinterpret_cast<long long*>(counters + 4);  // [2 * kPhases], launches
  const bool tracer = c.trace && bid == 0 && threadIdx.x == 0;
  auto mark_start = [&](int phase) {
    if (!tracer) return;
    t_start = clock64();
    if (prev_phase >= 0) tsum[2 * prev_phase + 1] += t_start - t_end;
    (void)phase;
  };
  auto mark_end = [&](int phase) {
    if (!tracer) return;
    t_end = clock64();
    tsum[2 * phase] += t_end - t_start;
    prev_phase = phase;
  };
  const int slot = a.slot[0];
  const int kv_row = a.kv_row[0];
  const int self_n = min(max(a.self_len[0], 0), a.self_max);
  const int cross_n = min(max(a.cross_len[0], 0), a.t_enc);
  // The d-slice (rows of the out, cross-out and fc2 products) is the same for all three: the block
  // keeps its rows of x, which only it writes, in shared memory for the residual adds.
  const int d0 = slice_begin(d, bid, G), d1 = slice_begin(d, bid + 1, G);
  for (int i = threadIdx.x; i < d1 - d0; i += kThreads) x_own[i] = to_float(__ldcg(x + d0 + i));
  unsigned target = 0;

  // The six products of a layer in order; product p of layer l is stage 6 l + p, in buffer p & 1.
  // This block owns rows [r0, r1) of product p's [n, k] weight.
  auto rows_of = [&](int p, int& r0, int& r1, int& k) {
    const int n = p == 0 ? 3 * d : p == 4 ? ffn : d;
    k = p == 5 ? ffn : d;
    r0 = slice_begin(n, bid, G);
    r1 = slice_begin(n, bid + 1, G);
  };
  // Buffer b's mbarrier completes once a use: stage s is buffer (s % 6) & 1's use number
  // (6 (s / 6) + s % 6) / 2 = 3 (s / 6) + (s % 6) / 2, so its phase parity is that number's.
  // A stage's buffer: the weight slice at 0, the layer norm's gamma and beta (stages 0, 2, 4) at
  // wslice and wslice + d, the bias of rows [r0 & ~(V - 1), r1 rounded up) after them: everything
  // the phase reads that is not an activation arrives with its weights.
  constexpr int V = Pack<T>::kSize;
  const int es = static_cast<int>(sizeof(T));
  auto prefetch = [&](int stage) {
    if (threadIdx.x == 0) issue_stage<T>(stage, a.n_layers, d, ffn, G, bid, c.wslice, layers, wbuf[0], wbuf[1], mbar);
  };
  // The layer norm's gamma and beta of stage p, in its buffer (products() finds the bias there).
  auto gamma_of = [&](int p) { return reinterpret_cast<const T*>(wbuf[p & 1] + c.wslice); };
  auto beta_of = [&](int p) { return reinterpret_cast<const T*>(wbuf[p & 1] + c.wslice + d * es); };
  // Enter product stage s: start loading stage s + 1, wait for stage s's slice.
  auto enter = [&](int stage) {
    prefetch(stage + 1);
    const int p = stage % 6;
    mbar_wait(&mbar[p & 1], static_cast<unsigned>((3 * (stage / 6) + p / 2) & 1));
  };

  // Layer l's pointers in layers[l & 1]; layer l + 1's are loaded at the start of layer l (the
  // last product of layer l prefetches its first).
  constexpr int kLayerWords = static_cast<int>(sizeof(DecoderLayerWeights) / 8);
  auto load_layer = [&](int l) {
    if (l < a.n_layers && static_cast<int>(threadIdx.x) < kLayerWords)
      reinterpret_cast<uint64_t*>(&layers[l & 1])[threadIdx.x] =
          reinterpret_cast<const uint64_t*>(a.layers + l)[threadIdx.x];
  };
  load_layer(0);
  load_layer(1);
  if (tracer)
    for (int i = 0; i < 2 * kPhases; ++i) tsum[i] = 0;
  if (threadIdx.x == 0) {
    mbar_init(&mbar[0]);
    mbar_init(&mbar[1]);
    mbar_init_fence();
  }
  __syncthreads();
  KeyRows self_rows;  // the row's self-attention keys
  if (a.paged.block_table) {
    self_rows.table = a.paged.block_table;
    self_rows.block_size = a.paged.block_size;
  } else {
    self_rows.base = static_cast<int64_t>(slot) * (a.self_batch_stride / (2 * d));
  }
  prefetch(0);
  // The products of stage p (its input in vin) through the block's slice in buffer p & 1, with
  // the slice's bias when the layer has one (has_bias); see SliceOut for out / out2 / own.
  auto products = [&](int p, bool has_bias, T* out, T* out2, int split, bool gelu, float* own) {
    int r0, r1, k;
    rows_of(p, r0, r1, k);
    SliceOut<T> o;
    o.out = out;
    o.out2 = out2;
    o.split = split;
    o.r0 = r0;
    o.bias = has_bias ? reinterpret_cast<const T*>(wbuf[p & 1] + c.wslice + 2 * d * es) + (r0 & (V - 1)) : nullptr;
    o.gelu = gelu;
    o.own = own;
    slice_products(wbuf[p & 1], r1 - r0, k, vin, o);
  };
  // Phase `phase` of layer l that runs product stage p: its slice is waited for.
  auto begin_product = [&](int l, int p, int phase) {
    enter(6 * l + p);
    mark_start(phase);
  };
  auto end_phase = [&](int phase) {
    mark_end(phase);
    grid_sync(counters, target);
  };
  for (int l = 0; l < a.n_layers; ++l) {
    const DecoderLayerWeights& L = layers[l & 1];
    if (l > 0) load_layer(l + 1);  // into the slot of layer l - 1, whose last use is behind a barrier
    T* kv_self = static_cast<T*>(a.self_kv) + l * a.self_layer;
    const T* kv_cross = static_cast<const T*>(a.cross) + l * a.cross_layer + slot * a.cross_batch_stride;

    // 1. layer norm + QKV: q -> qkv[0, d), K | V -> the cache row.
    begin_product(l, 0, 0);
    stage_layer_norm(x, gamma_of(0), beta_of(0), d, a.ln_eps, vin, part);
    products(0, L.qkv_b != nullptr, qkv, kv_self + static_cast<int64_t>(kv_row) * 2 * d, d, false, nullptr);
    // the past K/V of this block's head (phase 2) into L2 while the grid meets at the barrier
    for (int h = bid; h < a.heads; h += G) prefetch_head_l2(kv_self + h * kHead, 2 * d, d, self_n - 1, self_rows);
    end_phase(0);

    // 2. self-attention: head h on block h.
    mark_start(1);
    for (int h = bid; h < a.heads; h += G) {
      if (threadIdx.x < kHead) qs[threadIdx.x] = to_float(__ldcg(qkv + h * kHead + threadIdx.x)) * 0.125f;
      __syncthreads();
      attend<T>(qs, kv_self + h * kHead, 2 * d, d, self_n, self_rows, sc, red, red2, res);
      if (threadIdx.x < kHead) {
        const float lsum = res[kHead + 1];
        att[h * kHead + threadIdx.x] = from_float<T>(lsum > 0.0f ? res[threadIdx.x] / lsum : 0.0f);
      }
      __syncthreads();
    }
    end_phase(1);

    // 3. self-attention output product + residual.
    begin_product(l, 1, 2);
    stage_vector(att, d, vin);
    __syncthreads();
    products(1, L.out_b != nullptr, x, nullptr, 0, false, x_own);
    end_phase(2);

    // 4. layer norm + cross-attention query -> qkv[0, d).
    begin_product(l, 2, 3);
    // this block's cross-attention keys (phase 5) into L2 during this phase
    for (int item = bid; item < a.heads * c.splits; item += G) {
      const int h = item / c.splits, sp = item % c.splits;
      const int j0 = min(sp * c.chunk, cross_n), j1 = min(j0 + c.chunk, cross_n);
      prefetch_head_l2(kv_cross + static_cast<int64_t>(j0) * 2 * d + h * kHead, 2 * d, d, j1 - j0, KeyRows{});
    }
    stage_layer_norm(x, gamma_of(2), beta_of(2), d, a.ln_eps, vin, part);
    products(2, L.q_b != nullptr, qkv, nullptr, 0, false, nullptr);
    end_phase(3);

    // 5. cross-attention: (head, split) items, partial states to the workspace.
    mark_start(4);
    for (int item = bid; item < a.heads * c.splits; item += G) {
      const int h = item / c.splits, sp = item % c.splits;
      const int j0 = min(sp * c.chunk, cross_n), j1 = min(j0 + c.chunk, cross_n);
      if (threadIdx.x < kHead) qs[threadIdx.x] = to_float(__ldcg(qkv + h * kHead + threadIdx.x)) * 0.125f;
      __syncthreads();
      const T* kvh = kv_cross + static_cast<int64_t>(j0) * 2 * d + h * kHead;
      attend<T>(qs, kvh, 2 * d, d, j1 - j0, KeyRows{}, sc, red, red2, res);
      if (threadIdx.x < kHead + 2) partials[item * kPartial + threadIdx.x] = res[threadIdx.x];
      __syncthreads();
    }
    end_phase(4);

    // 6. merge the splits (every block, into vin) + output product + residual.
    begin_product(l, 3, 5);
    // weight of split s of head h: exp(m_s - M) / sum_s' exp(m_s' - M) l_s' (a warp a head)
    {
      const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
      for (int h = warp; h < a.heads; h += kWarps) {
        const float* ph = partials + h * c.splits * kPartial;
        float m = -INFINITY, ls = 0.0f;
        if (lane < c.splits) {
          m = __ldcg(ph + lane * kPartial + kHead);
          ls = __ldcg(ph + lane * kPartial + kHead + 1);
        }
        const float mx = warp_max(ls > 0.0f ? m : -INFINITY);
        const float f = ls > 0.0f ? __expf(m - mx) : 0.0f;
        const float lsum = warp_sum(f * ls);
        if (lane < c.splits) wgt[h * c.splits + lane] = lsum > 0.0f ? f / lsum : 0.0f;
      }
    }
    __syncthreads();
    for (int c4 = threadIdx.x; c4 < d / 4; c4 += kThreads) {  // 4 columns a thread, the splits' loads together
      const int h = c4 * 4 / kHead, e = c4 * 4 % kHead;
      const float* ph = partials + h * c.splits * kPartial + e;
      const float* wh = wgt + h * c.splits;
      float4 o = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll 8
      for (int s = 0; s < c.splits; ++s) {
        const float4 v = __ldcg(reinterpret_cast<const float4*>(ph + s * kPartial));
        const float w = wh[s];
        o.x += w * v.x, o.y += w * v.y, o.z += w * v.z, o.w += w * v.w;
      }
      vin[c4 * 4 + 0] = from_float<T>(o.x);
      vin[c4 * 4 + 1] = from_float<T>(o.y);
      vin[c4 * 4 + 2] = from_float<T>(o.z);
      vin[c4 * 4 + 3] = from_float<T>(o.w);
    }
    __syncthreads();
    products(3, L.cout_b != nullptr, x, nullptr, 0, false, x_own);
    end_phase(5);

    // 7. layer norm + fc1 + GELU -> ff.
    begin_product(l, 4, 6);
    stage_layer_norm(x, gamma_of(4), beta_of(4), d, a.ln_eps, vin, part);
    products(4, L.fc1_b != nullptr, ff, nullptr, 0, true, nullptr);
    end_phase(6);

    // 8. fc2 + residual.
    begin_product(l, 5, 7);
    stage_vector(ff, ffn, vin);
    __syncthreads();
    products(5, L.fc2_b != nullptr, x, nullptr, 0, false, x_own);
    mark_end(7);
    if (l + 1 < a.n_layers) grid_sync(counters, target);
  }
  if (tracer) {
    for (int i = 0; i < 2 * kPhases; ++i) tsum_g[i] += tsum[i];
    if (++tsum_g[2 * kPhases] == 50) {
      const double per = 50.0 * a.n_layers;
      printf("[persistent step] cycles a layer (block 0, 50 launches): phase work / wait after\n");
      for (int ph = 0; ph < kPhases; ++ph)
        printf("  phase %d: %8.0f / %8.0f\n", ph, tsum_g[2 * ph] / per, tsum_g[2 * ph + 1] / per);
    }
  }
  // The last block out resets the counters for the next launch (every block has passed its last
  // barrier before it counts itself out).
  if (threadIdx.x == 0) {
    __threadfence();
    if (atomicAdd(counters + 1, 1u) == static_cast<unsigned>(G) - 1) {
      atomicExch(counters, 0u);
      atomicExch(counters + 1, 0u);
    }
  }
}

template <typename T>
void* kernel_of() {
  return reinterpret_cast<void*>(&persistent_step_kernel<T>);
}

int wbuf_bytes_for(int d, int ffn, int g, int es) {
  auto slice = [&](int n, int k) { return static_cast<int>(ceil_div(n, g)) * k * es; };
  return std::max({slice(3 * d, d), slice(d, d), slice(ffn, d), slice(d, ffn)});
}

size_t smem_bytes(int wbuf_bytes, int ffn, int score_cap, int es, int rows_cap, int grid) {
  return static_cast<size_t>(2) * wbuf_bytes + static_cast<size_t>(ffn) * es +
         sizeof(DecoderLayerWeights) * 2 + sizeof(long long) * (2 * kPhases + 2) +
         sizeof(float) * static_cast<size_t>(score_cap + kWarps * kHead + kPartial + kHead + 32 + 8 + rows_cap +
                                             ((grid + 1) & ~1)) +
         2 * sizeof(uint64_t);
}

}  // namespace

PersistentStepPlan persistent_step_plan(DataType dtype, int n_layers, int d, int heads, int ffn, int self_max,
                                        int t_enc) {
  PersistentStepPlan plan;
  // Opt-in (SPEECHCORE_PERSISTENT_STEP=1): on the H200 it is still slower than the fused
  // kernel-per-operation step (benchmarks/RESULTS.md, session 9).
  const char* env = std::getenv("SPEECHCORE_PERSISTENT_STEP");
  if (env == nullptr || std::strcmp(env, "1") != 0) return plan;
  if (heads < 1 || d != heads * kHead || ffn % 64 != 0 || self_max < 1 ||
      t_enc < 1)
    return plan;
  int dev = 0, major = 0, sms = 0, coop = 0, optin = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) return plan;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess || major < 9) return plan;
  if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&coop, cudaDevAttrCooperativeLaunch, dev) != cudaSuccess || !coop ||
      cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess)
    return plan;
  const int g = sms;
  const int es = static_cast<int>(data_type_size(dtype));
  const int rows_cap = static_cast<int>(ceil_div(std::max(3 * d, ffn), g));
  const int wslice = wbuf_bytes_for(d, ffn, g, es);
  const int vpack = 16 / es;
  const int wbuf = wslice + 2 * d * es + static_cast<int>(ceil_div((rows_cap + vpack) * es, 16)) * 16;
  // splits of a head's keys: one (head, split) a block, at most 32 (a warp merges them)
  const int splits = std::max(1, std::min({g / heads, static_cast<int>(ceil_div(t_enc, 64)), 32}));
  const int chunk = static_cast<int>(ceil_div(t_enc, splits));
  const int score_cap = std::max(self_max, chunk);
  const size_t smem = smem_bytes(wbuf, ffn, score_cap, es, rows_cap, g);
  if (smem > static_cast<size_t>(optin)) return plan;
  void* k = dtype == DataType::kFloat16    ? kernel_of<__half>()
            : dtype == DataType::kBFloat16 ? kernel_of<__nv_bfloat16>()
                                           : kernel_of<float>();
  if (cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)) != cudaSuccess) {
    cudaGetLastError();
    return plan;
  }
  int per_sm = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, k, kThreads, smem) != cudaSuccess || per_sm < 1) {
    cudaGetLastError();
    return plan;
  }
  plan.grid = g;
  plan.smem = smem;
  plan.cross_splits = splits;
  plan.chunk = chunk;
  plan.score_cap = score_cap;
  plan.wbuf_bytes = wbuf;
  plan.rows_cap = rows_cap;
  plan.wslice = wslice;
  plan.n_layers = n_layers;
  plan.d = d;
  plan.ffn = ffn;
  plan.heads = heads;
  plan.self_max = self_max;
  plan.t_enc = t_enc;
  plan.workspace_bytes = 256 + sizeof(float) * static_cast<size_t>(heads) * splits * kPartial;
  return plan;
}

void persistent_step_init(void* workspace, size_t bytes, cudaStream_t stream) {
  if (bytes > 0) check(cudaMemsetAsync(workspace, 0, bytes, stream), "persistent_step_init", __FILE__, __LINE__);
}

void persistent_step(DataType dtype, const PersistentStepArgs& a, const PersistentStepPlan& plan, void* workspace,
                     cudaStream_t stream) {
  require(plan.grid > 0, "persistent_step: no plan for this device and shape");
  require(a.d == a.heads * kHead && a.ffn % 64 == 0 && a.n_layers >= 1, "persistent_step: d ",
          a.d, ", heads ", a.heads, ", ffn ", a.ffn, " unsupported");
  require(workspace != nullptr && aligned16(workspace), "persistent_step: workspace must be 16-byte aligned");
  require(a.d == plan.d && a.ffn == plan.ffn && a.heads == plan.heads && a.self_max <= plan.self_max &&
              a.n_layers == plan.n_layers &&
              a.t_enc == plan.t_enc,
          "persistent_step: the plan was made for other sizes");
  const int g = plan.grid;
  StepConsts c;
  c.wbuf_bytes = plan.wbuf_bytes;
  c.splits = plan.cross_splits;
  c.chunk = plan.chunk;
  c.score_cap = plan.score_cap;
  c.rows_cap = plan.rows_cap;
  c.wslice = plan.wslice;
  static const bool trace = [] {
    const char* e = std::getenv("SPEECHCORE_PERSISTENT_TRACE");
    return e != nullptr && std::strcmp(e, "1") == 0;
  }();
  c.trace = trace ? 1 : 0;
  unsigned* counters = static_cast<unsigned*>(workspace);
  float* partials = reinterpret_cast<float*>(static_cast<char*>(workspace) + 256);
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(g);
  cfg.blockDim = dim3(kThreads);
  cfg.dynamicSmemBytes = plan.smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeCooperative;
  attr[0].val.cooperative = 1;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  dispatch_type(dtype, [&](auto t) {
    using T = decltype(t);
    check(cudaLaunchKernelEx(&cfg, persistent_step_kernel<T>, a, c, counters, partials), "persistent_step",
          __FILE__, __LINE__);
  });
}

}  // namespace speechcore::cuda
