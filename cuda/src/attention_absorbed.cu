// Cross-attention over the encoder output with the K/V projections absorbed (attention.h:
// attention_absorbed). One block per (query row, key split), 8 warps, 16 keys a tile:
//   A. S^T[16 keys, heads] = X_tile . QA^T: each warp contracts its own dim/8 slice of the
//      model dimension (mma m16n8k16, keys as M, heads as N padded to 8; its QA slice stays in
//      registers), partials to shared;
//   B. the partials summed, online softmax per head (8 threads a head), P [heads, 16] to shared;
//   C. O^T[dims, heads] += X_tile^T . P^T: each warp owns the same dim slice of the output
//      (ldmatrix.trans of the X tile), its accumulators rescaled only when a head's max moved by
//      more than kAbsSlack.
// A of the next tile is interleaved with C of this one (two block barriers a tile). X tiles
// arrive by bulk copies (TMA, one per key row) into a 4-stage ring counted on mbarriers.
// Splits (few rows) write unnormalized partials that a second kernel merges.
#include <algorithm>

#include "attention_kernels.cuh"
#include "speechcore_cuda/attention.h"

namespace speechcore::cuda {

namespace {

using namespace attn;
using detail::bulk_copy;
using detail::fence_proxy_async;
using detail::mbar_expect_tx;
using detail::mbar_init;
using detail::mbar_init_fence;
using detail::mbar_wait;
using detail::pdl_trigger;
using detail::pdl_wait;

constexpr int kAbsThreads = 256;  // (16 warps of 128 registers measured no faster for large-v3)
constexpr int kAbsWarps = kAbsThreads / 32;
constexpr int kAbsKeys = 16;   // keys per tile
constexpr int kAbsStages = 4;  // X tiles in flight
constexpr int kAbsPStride = 24;  // P row stride (elements): 48 B rows, ldmatrix conflict-free
constexpr int kAbsTargetBlocks = 132;  // one block per SM of an H100/H200 (split policy)

template <int KS> constexpr int abs_dim() { return kAbsWarps * 16 * KS; }
template <int KS> constexpr int abs_stride() { return abs_dim<KS>() + 8; }  // +16 B a row
template <int KS, int NT> constexpr size_t abs_smem_bytes() {
  return static_cast<size_t>(kAbsStages * kAbsKeys) * abs_stride<KS>() * 2 +  // X ring
         2 * static_cast<size_t>(kAbsWarps) * kAbsKeys * NT * 8 * 4 +         // S partials, 2 buffers
         2 * static_cast<size_t>(NT) * 8 * kAbsPStride * 2 +                  // P, 2 buffers
         static_cast<size_t>(NT) * 8 * 4 * 4 +                                // m, l, alpha x 2
         16 + kAbsStages * 8;                                                 // flags, mbarriers
}

struct AbsParams {
  const void* qa;
  int64_t ld_qa;
  const void* x;
  int64_t x_slot_stride;
  void* out;
  int64_t ld_out;
  const int32_t* lens;
  const int32_t* index;
  int rows_per_slot;
  int heads;
  int64_t max_len;
  int splits;
  int64_t chunk;  // keys per split, a multiple of kAbsKeys
  float scale_log2;
  float* part;  // [rows, splits, heads, dim] (splits > 1)
  float* ml;    // [rows, splits, heads, 2]: running max (log2 units) and sum
  bool x_static;
};

// Lazy rescaling: a head's running max moves only when a tile's scores exceed it by more than
// this (log2 units), so most tiles skip rescaling the accumulators; P stays <= 2^kAbsSlack.
constexpr float kAbsSlack = 8.0f;

// Software pipeline, per iteration t (two block barriers):
//   [barrier 1]  C(t): O^T = alpha(t) O^T + X_t^T P_t, interleaved with A(t+1): partial S of
//                tile t+1 -> sS[(t+1)&1]
//   [barrier 2]  tile t's stage refilled (tile t + stages); B(t+1): softmax -> P[(t+1)&1], alpha
template <typename T, int KS, int NT>
__global__ void __launch_bounds__(kAbsThreads, 1) absorbed_kernel(const AbsParams p) {
  constexpr int D = abs_dim<KS>(), S = abs_stride<KS>(), H8 = NT * 8;
  constexpr unsigned kTileBytes = kAbsKeys * D * 2;
  extern __shared__ __align__(16) unsigned char smem[];
  T* sX = reinterpret_cast<T*>(smem);                                   // [stages][16][S]
  float* sS = reinterpret_cast<float*>(sX + kAbsStages * kAbsKeys * S);  // [2][warps][16][H8]
  T* sP = reinterpret_cast<T*>(sS + 2 * kAbsWarps * kAbsKeys * H8);     // [2][H8][kAbsPStride]
  float* sM = reinterpret_cast<float*>(sP + 2 * H8 * kAbsPStride);
  float* sL = sM + H8;
  float* sA = sL + H8;                                 // [2][H8]
  int* sFlag = reinterpret_cast<int*>(sA + 2 * H8);    // [2]: some head of that tile rescales
  uint64_t* mbar = reinterpret_cast<uint64_t*>(sFlag + 4);

  const int row = blockIdx.x, split = blockIdx.y, tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  if (!p.x_static) pdl_wait();
  const int slot = p.index ? p.index[row] : row / p.rows_per_slot;
  int64_t len = p.lens ? p.lens[row] : p.max_len;
  len = len < 0 ? 0 : (len > p.max_len ? p.max_len : len);
  const int64_t k0 = static_cast<int64_t>(split) * p.chunk;
  const int64_t k1 = k0 + p.chunk < len ? k0 + p.chunk : len;
  const int ntiles = k1 > k0 ? static_cast<int>((k1 - k0 + kAbsKeys - 1) / kAbsKeys) : 0;
  const T* xs = static_cast<const T*>(p.x) + static_cast<int64_t>(slot) * p.x_slot_stride;

  // Tile t -> stage t % stages: 16 row copies, one by each of lanes 0-15 of the calling warp
  // (rows past the keys repeat the last key: finite values that P = 0 cancels).
  auto issue_tile = [&](int t) {
    const int st = t % kAbsStages;
    if (lane == 0) {
      fence_proxy_async();
      mbar_expect_tx(&mbar[st], kTileBytes);
    }
    __syncwarp();
    if (lane < kAbsKeys) {
      const int64_t key = k0 + static_cast<int64_t>(t) * kAbsKeys + lane;
      bulk_copy(sX + (st * kAbsKeys + lane) * S, xs + (key < k1 ? key : k1 - 1) * D, D * 2, &mbar[st]);
    }
  };
  constexpr int kIssueWarp = kAbsWarps - 1;  // no softmax work (H8 * 8 <= 192 threads)
  if (warp == kIssueWarp) {
    if (lane == 0) {
      for (int i = 0; i < kAbsStages; ++i) mbar_init(&mbar[i]);
      mbar_init_fence();
    }
    __syncwarp();
    if (p.x_static)
      for (int t = 0; t < kAbsStages && t < ntiles; ++t) issue_tile(t);
  }
  if (tid < H8) {
    sM[tid] = -INFINITY;
    sL[tid] = 0.0f;
  }
  if (tid < 2) sFlag[tid] = 0;
  if (p.x_static) pdl_wait();
  __syncthreads();
  if (!p.x_static && warp == kIssueWarp)
    for (int t = 0; t < kAbsStages && t < ntiles; ++t) issue_tile(t);

  // This warp's slice of QA as mma B fragments, in registers for the whole block (the padded heads
  // zero): fragment (ks, nt) holds heads nt*8 + lane/4, dims dim0 + ks*16 + 2*(lane%4) + {0, 1, 8, 9}.
  const int dim0 = warp * KS * 16;  // this warp's slice of the model dimension
  uint32_t qb[KS][NT][2];
  {
    const T* qa = static_cast<const T*>(p.qa) + static_cast<int64_t>(row) * p.ld_qa;
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
      const int h = nt * 8 + (lane >> 2);
      const uint32_t* qh = reinterpret_cast<const uint32_t*>(qa + static_cast<int64_t>(h) * D + dim0 + 2 * (lane & 3));
#pragma unroll
      for (int ks = 0; ks < KS; ++ks) {
        qb[ks][nt][0] = h < p.heads ? qh[ks * 8] : 0u;
        qb[ks][nt][1] = h < p.heads ? qh[ks * 8 + 4] : 0u;
      }
    }
  }
  pdl_trigger();

  float acc[KS][NT][4];
#pragma unroll
  for (int mt = 0; mt < KS; ++mt)
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int c = 0; c < 4; ++c) acc[mt][nt][c] = 0.0f;

  // A(u): this warp's partial S^T[key, head] of tile u into sS[u & 1].
  auto partial_scores_store = [&](int u, float (&s)[NT][4]) {
    float* sw = sS + ((u & 1) * kAbsWarps + warp) * kAbsKeys * H8;
    const int key = lane >> 2;
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
      const int h = nt * 8 + 2 * (lane & 3);
      *reinterpret_cast<float2*>(sw + key * H8 + h) = make_float2(s[nt][0], s[nt][1]);
      *reinterpret_cast<float2*>(sw + (key + 8) * H8 + h) = make_float2(s[nt][2], s[nt][3]);
    }
  };
  // B(u): partials summed, online softmax with lazy rescaling; 8 threads a head, keys j and j + 8.
  auto softmax = [&](int u) {
    const int b = u & 1;
    if (tid >= H8 * 8) return;
    const int h = tid >> 3, j = tid & 7;
    float v0 = 0.0f, v1 = 0.0f;
#pragma unroll
    for (int w = 0; w < kAbsWarps; ++w) {
      v0 += sS[((b * kAbsWarps + w) * kAbsKeys + j) * H8 + h];
      v1 += sS[((b * kAbsWarps + w) * kAbsKeys + j + 8) * H8 + h];
    }
    const int64_t key0 = k0 + static_cast<int64_t>(u) * kAbsKeys;
    const bool ok0 = h < p.heads && key0 + j < k1, ok1 = h < p.heads && key0 + j + 8 < k1;
    v0 = ok0 ? v0 * p.scale_log2 : -INFINITY;
    v1 = ok1 ? v1 * p.scale_log2 : -INFINITY;
    float mx = fmaxf(v0, v1);
#pragma unroll
    for (int o = 4; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    const float m_old = sM[h];
    const bool move = mx > m_old + kAbsSlack;  // false for -inf tiles
    const float m_new = move ? mx : m_old;
    const float p0 = ok0 ? ex2_ftz(v0 - m_new) : 0.0f, p1 = ok1 ? ex2_ftz(v1 - m_new) : 0.0f;
    float sum = p0 + p1;
#pragma unroll
    for (int o = 4; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
    sP[(b * H8 + h) * kAbsPStride + j] = from_f32<T>(p0);
    sP[(b * H8 + h) * kAbsPStride + j + 8] = from_f32<T>(p1);
    if (j == 0) {
      const float alpha = move ? ex2_ftz(m_old - m_new) : 1.0f;  // 0 from -inf
      sM[h] = m_new;
      sL[h] = sL[h] * alpha + sum;
      sA[b * H8 + h] = alpha;
      if (move) sFlag[b] = 1;
    }
  };

  if (ntiles > 0) {  // prologue: A(0), B(0)
    mbar_wait(&mbar[0], 0);
    float s[NT][4] = {};
#pragma unroll
    for (int ks = 0; ks < KS; ++ks) {
      uint32_t a[4];
      ldmatrix_x4(a, sX + (lane & 15) * S + dim0 + ks * 16 + (lane >> 4) * 8);
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) mma_16816<T>(s[nt], a, qb[ks][nt][0], qb[ks][nt][1]);
    }
    partial_scores_store(0, s);
    __syncthreads();
    softmax(0);
  }
  for (int t = 0; t < ntiles; ++t) {
    const bool next = t + 1 < ntiles;
    if (next) mbar_wait(&mbar[(t + 1) % kAbsStages], ((t + 1) / kAbsStages) & 1);
    __syncthreads();  // barrier 1: P[t&1], alpha, flag of tile t; tile t+1 landed
    if (tid == 0) sFlag[(t + 1) & 1] = 0;  // read last by C(t-1), written next by B(t+1)
    const int b = t & 1;
    if (sFlag[b]) {
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        const float a0 = sA[b * H8 + nt * 8 + 2 * (lane & 3)], a1 = sA[b * H8 + nt * 8 + 2 * (lane & 3) + 1];
#pragma unroll
        for (int mt = 0; mt < KS; ++mt) {
          acc[mt][nt][0] *= a0;
          acc[mt][nt][1] *= a1;
          acc[mt][nt][2] *= a0;
          acc[mt][nt][3] *= a1;
        }
      }
    }
    const T* xt = sX + (t % kAbsStages) * kAbsKeys * S;
    const T* xn = sX + ((t + 1) % kAbsStages) * kAbsKeys * S;
    uint32_t bp[NT][2];
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
      ldmatrix_x2(bp[nt], sP + (b * H8 + nt * 8 + (lane & 7)) * kAbsPStride + ((lane >> 3) & 1) * 8);
    float s[NT][4] = {};
#pragma unroll
    for (int k = 0; k < KS; ++k) {
      if (next) {  // A(t+1), step k
        uint32_t a[4];
        ldmatrix_x4(a, xn + (lane & 15) * S + dim0 + k * 16 + (lane >> 4) * 8);
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) mma_16816<T>(s[nt], a, qb[k][nt][0], qb[k][nt][1]);
      }
      {  // C(t), m-tile k
        uint32_t a[4];
        ldmatrix_x4_trans(a, xt + (((lane >> 4) & 1) * 8 + (lane & 7)) * S + dim0 + k * 16 + ((lane >> 3) & 1) * 8);
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) mma_16816<T>(acc[k][nt], a, bp[nt][0], bp[nt][1]);
      }
    }
    if (next) partial_scores_store(t + 1, s);
    __syncthreads();  // barrier 2: tile t consumed by every warp; partials of t+1 complete
    if (warp == kIssueWarp && t + kAbsStages < ntiles) issue_tile(t + kAbsStages);
    if (next) softmax(t + 1);
  }
  __syncthreads();  // sM / sL final (also when there were no tiles)

  // Accumulator element c of (mt, nt): dim dim0 + mt*16 + lane/4 (+8 for c >= 2),
  // head nt*8 + 2*(lane%4) (+1 for odd c).
  const int64_t base_split = static_cast<int64_t>(row) * p.splits + split;
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      const int h = nt * 8 + 2 * (lane & 3) + (c & 1);
      if (h >= p.heads) continue;
      const float l = sL[h];
      const float inv = l > 0.0f ? 1.0f / l : 0.0f;
#pragma unroll
      for (int mt = 0; mt < KS; ++mt) {
        const int dim = dim0 + mt * 16 + (lane >> 2) + (c >> 1) * 8;
        if (p.splits == 1) {
          static_cast<T*>(p.out)[static_cast<int64_t>(row) * p.ld_out + static_cast<int64_t>(h) * D + dim] =
              from_f32<T>(acc[mt][nt][c] * inv);
        } else {
          p.part[(base_split * p.heads + h) * D + dim] = acc[mt][nt][c];
        }
      }
    }
  }
  if (p.splits > 1 && tid < p.heads) {
    p.ml[(base_split * p.heads + tid) * 2] = sM[tid];
    p.ml[(base_split * p.heads + tid) * 2 + 1] = sL[tid];
  }
}

// Merges the splits of each (row, head): out = sum_s w_s part_s / sum_s w_s l_s, w_s = 2^(m_s - m).
template <typename T>
__global__ void __launch_bounds__(256) absorbed_merge_kernel(const AbsParams p, int dim) {
  pdl_wait();
  pdl_trigger();
  const int row = blockIdx.x, h = blockIdx.y;
  const int64_t first = static_cast<int64_t>(row) * p.splits;
  float m = -INFINITY;
  for (int s = 0; s < p.splits; ++s) m = fmaxf(m, p.ml[((first + s) * p.heads + h) * 2]);
  float l = 0.0f;
  for (int s = 0; s < p.splits; ++s) {
    const float ms = p.ml[((first + s) * p.heads + h) * 2];
    if (ms != -INFINITY) l += exp2f(ms - m) * p.ml[((first + s) * p.heads + h) * 2 + 1];
  }
  const float inv = l > 0.0f ? 1.0f / l : 0.0f;
  for (int d = threadIdx.x; d < dim; d += blockDim.x) {
    float v = 0.0f;
    for (int s = 0; s < p.splits; ++s) {
      const float ms = p.ml[((first + s) * p.heads + h) * 2];
      if (ms != -INFINITY) v += exp2f(ms - m) * p.part[((first + s) * p.heads + h) * dim + d];
    }
    static_cast<T*>(p.out)[static_cast<int64_t>(row) * p.ld_out + static_cast<int64_t>(h) * dim + d] =
        from_f32<T>(v * inv);
  }
}

template <typename T, int KS, int NT>
void run_absorbed(const AbsParams& p, int rows, cudaStream_t stream) {
  constexpr size_t smem = abs_smem_bytes<KS, NT>();
  static const bool configured = [] {
    check(cudaFuncSetAttribute(absorbed_kernel<T, KS, NT>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       static_cast<int>(smem)),
                  "attention_absorbed: shared memory", __FILE__, __LINE__);
    return true;
  }();
  (void)configured;
  detail::launch(absorbed_kernel<T, KS, NT>, dim3(static_cast<unsigned>(rows), static_cast<unsigned>(p.splits)),
                 dim3(kAbsThreads), smem, stream, "attention_absorbed", p);
  if (p.splits > 1)
    detail::launch(absorbed_merge_kernel<T>, dim3(static_cast<unsigned>(rows), static_cast<unsigned>(p.heads)),
                   dim3(256), 0, stream, "attention_absorbed merge", p, abs_dim<KS>());
}

// The instantiated (dim, heads) shapes: Whisper tiny, base, small, medium, large.
int shape_nt(int heads, int dim) {
  switch (dim) {
    case 384: case 512: return heads <= 8 ? 1 : 0;
    case 768: case 1024: return heads <= 16 ? 2 : 0;
    case 1280: return heads <= 24 ? 3 : 0;
    default: return 0;
  }
}

}  // namespace

bool attention_absorbed_supported(DataType dtype, int heads, int dim) {
  return (dtype == DataType::kFloat16 || dtype == DataType::kBFloat16) && heads >= 1 && shape_nt(heads, dim) > 0;
}

AttentionDecodeSplit attention_absorbed_split(int rows, int64_t max_kv_len) {
  const int64_t tiles = std::max<int64_t>(1, detail::ceil_div(max_kv_len, kAbsKeys));
  int64_t splits = rows >= kAbsTargetBlocks / 2 ? 1 : std::min<int64_t>(kAbsTargetBlocks / std::max(rows, 1), tiles / 4);
  splits = std::max<int64_t>(splits, 1);
  const int64_t chunk = detail::ceil_div(tiles, splits) * kAbsKeys;
  return {static_cast<int>(detail::ceil_div(std::max<int64_t>(max_kv_len, 1), chunk)), chunk};
}

size_t attention_absorbed_scratch_bytes(int rows, int heads, int dim, int64_t max_kv_len) {
  const AttentionDecodeSplit sp = attention_absorbed_split(rows, max_kv_len);
  if (sp.splits <= 1) return 0;
  const size_t parts = static_cast<size_t>(rows) * sp.splits * heads;
  return parts * static_cast<size_t>(dim) * sizeof(float) + parts * 2 * sizeof(float) + 16;
}

void attention_absorbed(DataType dtype, const void* qa, int64_t ld_qa, const void* x, int64_t x_slot_stride,
                        void* out, int64_t ld_out, const int32_t* kv_lengths, const int32_t* kv_index,
                        int rows_per_slot, int rows, int heads, int dim, int64_t max_kv_len, float scale,
                        void* scratch, cudaStream_t stream, bool x_static) {
  using detail::require;
  if (!attention_absorbed_supported(dtype, heads, dim))
    detail::fail(ErrorCode::kUnsupported, "attention_absorbed: ", data_type_name(dtype), " with ", heads,
                 " heads of model dimension ", dim, " is not supported (float16/bfloat16, Whisper's shapes)");
  require(rows >= 0 && max_kv_len >= 0, "attention_absorbed: negative sizes");
  if (rows == 0) return;
  require(qa && x && out, "attention_absorbed: null pointer");
  require(detail::aligned16(qa) && detail::aligned16(x) && detail::aligned16(out),
          "attention_absorbed: qa, x and out must be 16-byte aligned");
  const int64_t width = static_cast<int64_t>(heads) * dim;
  require(ld_qa >= width && ld_qa % 8 == 0 && ld_out >= width, "attention_absorbed: row strides below heads * dim");
  require(x_slot_stride >= 0 && x_slot_stride % 8 == 0, "attention_absorbed: bad slot stride");
  require(kv_index != nullptr || rows_per_slot >= 1, "attention_absorbed: rows_per_slot must be >= 1");
  require(rows <= 2147483647 && max_kv_len < (int64_t{1} << 30), "attention_absorbed: too large");
  AbsParams p{};
  p.qa = qa;
  p.ld_qa = ld_qa;
  p.x = x;
  p.x_slot_stride = x_slot_stride;
  p.out = out;
  p.ld_out = ld_out;
  p.lens = kv_lengths;
  p.index = kv_index;
  p.rows_per_slot = rows_per_slot;
  p.heads = heads;
  p.max_len = max_kv_len;
  const AttentionDecodeSplit sp = attention_absorbed_split(rows, max_kv_len);
  p.splits = sp.splits;
  p.chunk = sp.chunk;
  p.scale_log2 = scale * 1.4426950408889634f;
  p.x_static = x_static;
  if (p.splits > 1) {
    require(scratch != nullptr && detail::aligned16(scratch), "attention_absorbed: scratch needed (16-byte aligned)");
    const size_t parts = static_cast<size_t>(rows) * p.splits * heads;
    p.part = static_cast<float*>(scratch);
    p.ml = p.part + parts * dim;
  }
  auto go = [&](auto tag) {
    using T = decltype(tag);
    switch (dim) {
      case 384: return run_absorbed<T, 3, 1>(p, rows, stream);
      case 512: return run_absorbed<T, 4, 1>(p, rows, stream);
      case 768: return run_absorbed<T, 6, 2>(p, rows, stream);
      case 1024: return run_absorbed<T, 8, 2>(p, rows, stream);
      default: return run_absorbed<T, 10, 3>(p, rows, stream);
    }
  };
  if (dtype == DataType::kFloat16) go(__half{});
  else go(__nv_bfloat16{});
}

}  // namespace speechcore::cuda
