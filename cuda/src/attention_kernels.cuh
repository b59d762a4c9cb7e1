// Internal: attention kernels (included by attention_*.cu only). Launch wrappers are explicitly
// instantiated per element type in separate translation units; attention.cu validates arguments
// and dispatches.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdlib>
#include <string>
#include <type_traits>

#include "attention_internal.h"
#include "kernel_utils.cuh"
#include "speechcore_cuda/common.h"

namespace speechcore::cuda::attn {

// ---------------------------------------------------------------------------------------------
// Small device helpers
// ---------------------------------------------------------------------------------------------
__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16-byte async copy global -> shared; src_bytes = 0 writes 16 zero bytes (no global read).
__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem, bool valid) {
  const int src_bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(smem)), "l"(gmem),
               "r"(src_bytes)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N> __device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* smem) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_u32(smem)));
}
__device__ __forceinline__ void ldmatrix_x2(uint32_t (&r)[2], const void* smem) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1])
               : "r"(smem_u32(smem)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* smem) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_u32(smem)));
}

// 2^x by the special-function unit alone (exp2f adds a denormal-range fix-up around it); for
// softmax weights in half-precision kernels, where results below 2^-126 may flush to zero.
__device__ __forceinline__ float ex2_ftz(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// D(16x8, f32) += A(16x16, row) * B(16x8, col), A/B in T (half or bf16).
template <typename T> __device__ __forceinline__ void mma_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                                              uint32_t b1);
template <> __device__ __forceinline__ void mma_16816<__half>(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                                             uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
template <> __device__ __forceinline__ void mma_16816<__nv_bfloat16>(float (&d)[4], const uint32_t (&a)[4],
                                                                    uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Two floats -> packed pair of T (first in the low 16 bits = lower column index).
template <typename T> __device__ __forceinline__ uint32_t pack2(float lo, float hi);
template <> __device__ __forceinline__ uint32_t pack2<__half>(float lo, float hi) {
  __half2 h = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&h);
}
template <> __device__ __forceinline__ uint32_t pack2<__nv_bfloat16>(float lo, float hi) {
  __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&h);
}

template <typename T> __device__ __forceinline__ float to_f32(T x);
template <> __device__ __forceinline__ float to_f32<float>(float x) { return x; }
template <> __device__ __forceinline__ float to_f32<__half>(__half x) { return __half2float(x); }
template <> __device__ __forceinline__ float to_f32<__nv_bfloat16>(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T> __device__ __forceinline__ T from_f32(float x);
template <> __device__ __forceinline__ float from_f32<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_f32<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

// 16 bytes of T -> 16 / sizeof(T) floats.
template <typename T> __device__ __forceinline__ void unpack16(const uint4& u, float* f);
template <> __device__ __forceinline__ void unpack16<float>(const uint4& u, float* f) {
  f[0] = __uint_as_float(u.x); f[1] = __uint_as_float(u.y); f[2] = __uint_as_float(u.z); f[3] = __uint_as_float(u.w);
}
template <> __device__ __forceinline__ void unpack16<__half>(const uint4& u, float* f) {
  const __half2* h = reinterpret_cast<const __half2*>(&u);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 t = __half22float2(h[i]);
    f[2 * i] = t.x;
    f[2 * i + 1] = t.y;
  }
}
template <> __device__ __forceinline__ void unpack16<__nv_bfloat16>(const uint4& u, float* f) {
  const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&u);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 t = __bfloat1622float2(h[i]);
    f[2 * i] = t.x;
    f[2 * i + 1] = t.y;
  }
}

// Sequence b's head h in a prefill's Q, K, V and output (head h at column h * head_dim).
template <typename T> struct PrefillHead {
  const T *q, *k, *v;
  T* out;
  __device__ __forceinline__ PrefillHead(const PrefillParams& p, int b, int h, int head_dim)
      : q(static_cast<const T*>(p.q) + b * p.q_bs + static_cast<int64_t>(h) * head_dim),
        k(static_cast<const T*>(p.k) + b * p.k_bs + static_cast<int64_t>(h) * head_dim),
        v(static_cast<const T*>(p.v) + b * p.v_bs + static_cast<int64_t>(h) * head_dim),
        out(static_cast<T*>(p.out) + b * p.o_bs + static_cast<int64_t>(h) * head_dim) {}
};

// Keys a block of queries [m0, m0 + rows) needs: all tk, or fewer under a causal mask
// (query i sees keys j <= i + causal). rows_valid >= 1 so the result is >= 1.
__device__ __forceinline__ int prefill_kv_end(int tk, int causal, int m0, int rows_valid) {
  if (causal < 0) return tk;
  const int64_t last = static_cast<int64_t>(m0) + rows_valid - 1 + causal + 1;
  return last < tk ? static_cast<int>(last) : tk;
}

// ---------------------------------------------------------------------------------------------
// Prefill, float16 / bfloat16: flash-attention-2 style with mma.sync m16n8k16.
// Block = 4 warps, each owning MT m-tiles of 16 queries (64 * MT queries a block), key tiles of
// 64 double-buffered in shared memory via cp.async. Grid (ceil(tq / (64 * MT)), heads, batch).
// Every warp reads the whole K and V tile from shared memory for its queries, so shared-memory
// traffic per multiply-add falls as 1 / MT, but MT = 2 needs ~250 registers a thread (2 blocks
// an SM against 3). MT = 2 for long query runs with few blocks (one or two windows of the
// encoder: fewer, fuller waves); MT = 1 for many blocks, short prompts and wide heads. On Hopper
// in an sm_90a build the encoder's unmasked runs go to prefill_wgmma_kernel instead (2.2x this
// kernel); these remain for masks, short runs, head size 128, other builds and
// SPEECHCORE_PREFILL_WGMMA=0.
// ---------------------------------------------------------------------------------------------
constexpr int kMmaWarps = 4;
constexpr int kMmaThreads = 32 * kMmaWarps;
constexpr int kMmaBlockN = 64;
template <int MT> constexpr int mma_block_m() { return 16 * kMmaWarps * MT; }
// m-tiles a warp for long query runs: 0 = by grid size (below), or $SPEECHCORE_PREFILL_MT=1|2
// forces one kernel (measurements). Read once.
inline int prefill_mt_forced() {
  static const int mt = [] {
    const char* e = std::getenv("SPEECHCORE_PREFILL_MT");
    return e && std::string(e) == "1" ? 1 : e && std::string(e) == "2" ? 2 : 0;
  }();
  return mt;
}
// MT = 1 blocks up to which MT = 2 runs instead. Measured on the H200 (large-v3 encoder, 1500
// frames, 20 heads, bf16, attention_prefill_benchmark): 1 window (480 blocks of MT = 1, 1.2
// waves) 0.076 ms with MT = 2 against 0.088; 2 windows 0.150 against 0.151; 4 windows 0.298
// against 0.264; 8 windows 0.585 against 0.519: over several waves the MT = 1 kernel's 3
// blocks an SM hide latency better than MT = 2's 2 (~250 registers a thread).
constexpr int64_t kPrefillMt2MaxBlocks = 600;

template <int D> constexpr int mma_smem_stride() { return D + 8; }  // +16 B per row: ldmatrix conflict-free
template <int D, int MT> constexpr size_t mma_smem_bytes() {
  return static_cast<size_t>(mma_block_m<MT>() + 4 * kMmaBlockN) * mma_smem_stride<D>() * 2;  // Q + 2 x (K, V)
}

// rows x D tile from global (row r at g + r * ld) into shared (row stride STRIDE); rows with
// index >= rows_valid are zero-filled (their global address is never read).
template <int D, int ROWS>
__device__ __forceinline__ void mma_load_tile(void* smem, const void* gmem, int64_t ld, int rows_valid, int tid) {
  constexpr int kChunksPerRow = D / 8;  // 16-byte chunks of 8 elements
  constexpr int kStride = mma_smem_stride<D>();
  const uint16_t* g = static_cast<const uint16_t*>(gmem);
  uint16_t* s = static_cast<uint16_t*>(smem);
  static_assert((ROWS * kChunksPerRow) % kMmaThreads == 0, "tile chunks must split evenly over the block");
#pragma unroll
  for (int it = 0; it < ROWS * kChunksPerRow / kMmaThreads; ++it) {
    const int c = it * kMmaThreads + tid;
    const int r = c / kChunksPerRow;
    const int cc = c % kChunksPerRow;
    const bool valid = r < rows_valid;
    const uint16_t* src = g + static_cast<int64_t>(valid ? r : 0) * ld + cc * 8;
    cp_async_16(s + r * kStride + cc * 8, src, valid);
  }
}

template <typename T, int D, int MT>
__global__ void __launch_bounds__(kMmaThreads) prefill_mma_kernel(const PrefillParams p) {
  constexpr int BM = mma_block_m<MT>(), BN = kMmaBlockN, S = mma_smem_stride<D>();
  constexpr int kNT = BN / 8;   // key n-tiles of 8 per key tile (S accumulators)
  constexpr int kDT = D / 8;    // dim n-tiles of 8 (O accumulators)
  constexpr int kKS = D / 16;   // k-steps over head_dim for Q K^T
  static_assert(kKS % 2 == 0 && kDT % 2 == 0 && BN % 16 == 0, "tile shapes");

  extern __shared__ __align__(128) unsigned char smem_raw[];
  T* sQ = reinterpret_cast<T*>(smem_raw);
  T* sK = sQ + BM * S;       // [2][BN][S]
  T* sV = sK + 2 * BN * S;   // [2][BN][S]

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int g = lane / 4, tig = lane % 4;  // mma fragment group / thread-in-group
  const int m0 = blockIdx.x * BM;
  const int h = blockIdx.y, b = blockIdx.z;

  const PrefillHead<T> hp(p, b, h, D);
  const T *q = hp.q, *k = hp.k, *v = hp.v;
  T* out = hp.out;

  const int rows_valid = min(BM, p.tq - m0);
  const int kv_end = prefill_kv_end(p.tk, p.causal, m0, rows_valid);
  const int n_tiles = (kv_end + BN - 1) / BN;

  // Group 0: Q tile; group 1: K/V tile 0.
  mma_load_tile<D, BM>(sQ, q + static_cast<int64_t>(m0) * p.ldq, p.ldq, rows_valid, tid);
  cp_async_commit();
  mma_load_tile<D, BN>(sK, k, p.ldk, kv_end, tid);
  mma_load_tile<D, BN>(sV, v, p.ldv, kv_end, tid);
  cp_async_commit();
  cp_async_wait<1>();
  __syncthreads();

  // This warp's query rows: m-tile mt covers [m0 + (warp * MT + mt) * 16, + 16).
  const int wrow0 = m0 + warp * 16 * MT;
  uint32_t qf[MT][kKS][4];  // as A fragments
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int kk = 0; kk < kKS; ++kk)
      ldmatrix_x4(qf[mt][kk], sQ + ((warp * MT + mt) * 16 + (lane % 16)) * S + kk * 16 + (lane / 16) * 8);

  float o[MT][kDT][4];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int j = 0; j < kDT; ++j) o[mt][j][0] = o[mt][j][1] = o[mt][j][2] = o[mt][j][3] = 0.f;
  float m_run[MT][2], l_run[MT][2];  // rows g, g + 8 of each m-tile (log2 domain, scaled); partial sums
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
    m_run[mt][0] = m_run[mt][1] = -INFINITY;
    l_run[mt][0] = l_run[mt][1] = 0.f;
  }

  for (int t = 0; t < n_tiles; ++t) {
    const int st = t & 1;
    if (t + 1 < n_tiles) {  // prefetch the next tile into the other stage (freed at the end of t-1)
      const int n1 = (t + 1) * BN;
      mma_load_tile<D, BN>(sK + (st ^ 1) * BN * S, k + static_cast<int64_t>(n1) * p.ldk, p.ldk, kv_end - n1, tid);
      mma_load_tile<D, BN>(sV + (st ^ 1) * BN * S, v + static_cast<int64_t>(n1) * p.ldv, p.ldv, kv_end - n1, tid);
    }
    cp_async_commit();  // possibly empty group keeps the wait count uniform
    cp_async_wait<1>();
    __syncthreads();

    const T* sKt = sK + st * BN * S;
    const T* sVt = sV + st * BN * S;
    const int n0 = t * BN;

    // S = Q K^T (16 x 64 per m-tile); each K fragment feeds every m-tile
    float s[MT][kNT][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int j = 0; j < kNT; ++j) s[mt][j][0] = s[mt][j][1] = s[mt][j][2] = s[mt][j][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < kKS; kk += 2) {
#pragma unroll
      for (int j = 0; j < kNT; ++j) {
        uint32_t bf[4];
        ldmatrix_x4(bf, sKt + (j * 8 + (lane % 8)) * S + kk * 16 + (lane / 8) * 8);
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          mma_16816<T>(s[mt][j], qf[mt][kk], bf[0], bf[1]);
          mma_16816<T>(s[mt][j], qf[mt][kk + 1], bf[2], bf[3]);
        }
      }
    }

    // Scale into the log2 domain; mask keys past kv_end (tail / zero-filled rows) and causal ones.
    const bool need_mask = (n0 + BN > kv_end) || (p.causal >= 0 && n0 + BN - 1 > wrow0 + p.causal);
    float alpha[MT][2];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      const int row_a = wrow0 + mt * 16 + g;  // absolute query rows of c0/c1 and c2/c3
      const int row_b = row_a + 8;
#pragma unroll
      for (int j = 0; j < kNT; ++j) {
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          float x = s[mt][j][c] * p.scale_log2;
          if (need_mask) {
            const int key = n0 + j * 8 + tig * 2 + (c & 1);
            const int row = c < 2 ? row_a : row_b;
            if (key >= kv_end || (p.causal >= 0 && key > row + p.causal)) x = -INFINITY;
          }
          s[mt][j][c] = x;
        }
      }

      // Online softmax: new row maxima over the quad (4 threads share a row).
      float mx[2] = {m_run[mt][0], m_run[mt][1]};
#pragma unroll
      for (int j = 0; j < kNT; ++j) {
        mx[0] = fmaxf(mx[0], fmaxf(s[mt][j][0], s[mt][j][1]));
        mx[1] = fmaxf(mx[1], fmaxf(s[mt][j][2], s[mt][j][3]));
      }
      float m_use[2];
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
        m_use[r] = mx[r] == -INFINITY ? 0.f : mx[r];  // a row with nothing visible yet: keep zeros
        alpha[mt][r] = ex2_ftz(m_run[mt][r] - m_use[r]);  // exp2(-inf) = 0 on the first tile
        m_run[mt][r] = mx[r];
        l_run[mt][r] *= alpha[mt][r];
      }
#pragma unroll
      for (int j = 0; j < kNT; ++j) {
        s[mt][j][0] = ex2_ftz(s[mt][j][0] - m_use[0]);
        s[mt][j][1] = ex2_ftz(s[mt][j][1] - m_use[0]);
        s[mt][j][2] = ex2_ftz(s[mt][j][2] - m_use[1]);
        s[mt][j][3] = ex2_ftz(s[mt][j][3] - m_use[1]);
        l_run[mt][0] += s[mt][j][0] + s[mt][j][1];
        l_run[mt][1] += s[mt][j][2] + s[mt][j][3];
      }
#pragma unroll
      for (int j = 0; j < kDT; ++j) {
        o[mt][j][0] *= alpha[mt][0];
        o[mt][j][1] *= alpha[mt][0];
        o[mt][j][2] *= alpha[mt][1];
        o[mt][j][3] *= alpha[mt][1];
      }
    }

    // O += P V: the S accumulator layout of key n-tiles (2kk, 2kk+1) is the A layout of k-step kk;
    // each V fragment feeds every m-tile.
#pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk) {
      uint32_t pa[MT][4];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        pa[mt][0] = pack2<T>(s[mt][2 * kk][0], s[mt][2 * kk][1]);
        pa[mt][1] = pack2<T>(s[mt][2 * kk][2], s[mt][2 * kk][3]);
        pa[mt][2] = pack2<T>(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
        pa[mt][3] = pack2<T>(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
      }
#pragma unroll
      for (int j = 0; j < kDT; j += 2) {
        uint32_t bf[4];
        ldmatrix_x4_trans(bf, sVt + (kk * 16 + (lane % 8) + ((lane / 8) & 1) * 8) * S + (j + lane / 16) * 8);
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          mma_16816<T>(o[mt][j], pa[mt], bf[0], bf[1]);
          mma_16816<T>(o[mt][j + 1], pa[mt], bf[2], bf[3]);
        }
      }
    }
    __syncthreads();  // everyone is done with stage st before iteration t+1 refills it
  }

  // Row sums over the quad, normalize, store pairs.
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      l_run[mt][r] += __shfl_xor_sync(0xffffffffu, l_run[mt][r], 1);
      l_run[mt][r] += __shfl_xor_sync(0xffffffffu, l_run[mt][r], 2);
    }
    const float inv_a = l_run[mt][0] > 0.f ? 1.f / l_run[mt][0] : 0.f;
    const float inv_b = l_run[mt][1] > 0.f ? 1.f / l_run[mt][1] : 0.f;
    const int row_a = wrow0 + mt * 16 + g;
    const int row_b = row_a + 8;
#pragma unroll
    for (int j = 0; j < kDT; ++j) {
      const int col = j * 8 + tig * 2;
      if (row_a < p.tq)
        *reinterpret_cast<uint32_t*>(out + static_cast<int64_t>(row_a) * p.ldo + col) =
            pack2<T>(o[mt][j][0] * inv_a, o[mt][j][1] * inv_a);
      if (row_b < p.tq)
        *reinterpret_cast<uint32_t*>(out + static_cast<int64_t>(row_b) * p.ldo + col) =
            pack2<T>(o[mt][j][2] * inv_b, o[mt][j][3] * inv_b);
    }
  }
}

}  // namespace speechcore::cuda::attn

#include "attention_wgmma.cuh"

namespace speechcore::cuda::attn {

// ---------------------------------------------------------------------------------------------
// Prefill, float32 (parity path): FFMA. Block = 4 warps, 32 queries (8 per warp), key tiles of
// 32 (one key per lane for the scores; one output dim per lane and 32-dim step for P V).
// Grid (ceil(tq / 32), heads, batch).
// ---------------------------------------------------------------------------------------------
constexpr int kF32Threads = 128;
constexpr int kF32RowsPerWarp = 8;
constexpr int kF32BlockM = 4 * kF32RowsPerWarp;
constexpr int kF32BlockN = 32;

template <int D> constexpr size_t f32_smem_bytes() {
  // sQ [BM][D], sK [BN][D + 1] (padded: lanes read different rows), sV [BN][D], sP [4][8][32]
  return sizeof(float) * (static_cast<size_t>(kF32BlockM) * D + kF32BlockN * (D + 1) + kF32BlockN * D +
                          4 * kF32RowsPerWarp * 32);
}

template <int D>
__global__ void __launch_bounds__(kF32Threads) prefill_f32_kernel(const PrefillParams p) {
  constexpr int BM = kF32BlockM, BN = kF32BlockN, R = kF32RowsPerWarp, KS = D + 1;
  constexpr int kDPL = D / 32;  // output dims per lane
  extern __shared__ __align__(128) unsigned char smem_raw[];
  float* sQ = reinterpret_cast<float*>(smem_raw);
  float* sK = sQ + BM * D;
  float* sV = sK + BN * KS;
  float* sP = sV + BN * D;

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int m0 = blockIdx.x * BM;
  const int h = blockIdx.y, b = blockIdx.z;
  const PrefillHead<float> hp(p, b, h, D);
  const float *q = hp.q, *k = hp.k, *v = hp.v;
  float* out = hp.out;

  const int rows_valid = min(BM, p.tq - m0);
  const int kv_end = prefill_kv_end(p.tk, p.causal, m0, rows_valid);
  const int n_tiles = (kv_end + BN - 1) / BN;

  for (int e = tid; e < BM * D; e += kF32Threads) {
    const int r = e / D, c = e % D;
    sQ[e] = r < rows_valid ? q[static_cast<int64_t>(m0 + r) * p.ldq + c] : 0.f;
  }

  float o[R][kDPL];
  float m_run[R], l_part[R];  // l_part: this lane's share of the row sum (its keys)
#pragma unroll
  for (int r = 0; r < R; ++r) {
    m_run[r] = -INFINITY;
    l_part[r] = 0.f;
#pragma unroll
    for (int i = 0; i < kDPL; ++i) o[r][i] = 0.f;
  }
  float* sPw = sP + warp * R * 32;

  for (int t = 0; t < n_tiles; ++t) {
    const int n0 = t * BN;
    __syncthreads();  // previous tile fully consumed (and sQ written, on t == 0)
    for (int e = tid; e < BN * D; e += kF32Threads) {
      const int r = e / D, c = e % D;
      const bool valid = n0 + r < kv_end;
      sK[r * KS + c] = valid ? k[static_cast<int64_t>(n0 + r) * p.ldk + c] : 0.f;
      sV[r * D + c] = valid ? v[static_cast<int64_t>(n0 + r) * p.ldv + c] : 0.f;
    }
    __syncthreads();

    float s[R];
#pragma unroll
    for (int r = 0; r < R; ++r) s[r] = 0.f;
    const float* qw = sQ + warp * R * D;
#pragma unroll 8
    for (int c = 0; c < D; ++c) {
      const float kc = sK[lane * KS + c];
#pragma unroll
      for (int r = 0; r < R; ++r) s[r] = fmaf(qw[r * D + c], kc, s[r]);
    }
    const int key = n0 + lane;
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const int row = m0 + warp * R + r;
      float x = s[r] * p.scale_log2;
      if (key >= kv_end || (p.causal >= 0 && key > row + p.causal)) x = -INFINITY;
      float mx = x;
#pragma unroll
      for (int off = 16; off > 0; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
      mx = fmaxf(mx, m_run[r]);
      const float m_use = mx == -INFINITY ? 0.f : mx;
      const float alpha = exp2f(m_run[r] - m_use);
      m_run[r] = mx;
      const float pr = exp2f(x - m_use);
      l_part[r] = l_part[r] * alpha + pr;
      sPw[r * 32 + lane] = pr;
#pragma unroll
      for (int i = 0; i < kDPL; ++i) o[r][i] *= alpha;
    }
    __syncwarp();
#pragma unroll 4
    for (int j = 0; j < BN; ++j) {
      float vj[kDPL];
#pragma unroll
      for (int i = 0; i < kDPL; ++i) vj[i] = sV[j * D + lane + 32 * i];
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const float pj = sPw[r * 32 + j];
#pragma unroll
        for (int i = 0; i < kDPL; ++i) o[r][i] = fmaf(pj, vj[i], o[r][i]);
      }
    }
    __syncwarp();  // sPw is rewritten next tile
  }

#pragma unroll
  for (int r = 0; r < R; ++r) {
    float l = l_part[r];
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) l += __shfl_xor_sync(0xffffffffu, l, off);
    const int row = m0 + warp * R + r;
    if (row < p.tq) {
      const float inv = l > 0.f ? 1.f / l : 0.f;
#pragma unroll
      for (int i = 0; i < kDPL; ++i) out[static_cast<int64_t>(row) * p.ldo + lane + 32 * i] = o[r][i] * inv;
    }
  }
}

// kernel over a (ceil(tq / block_m), heads, batch) grid with `smem` bytes of dynamic shared memory.
inline void run_prefill_kernel(void (*kernel)(PrefillParams), size_t smem, int block_m, int threads,
                               const PrefillParams& p, int batch, int heads, cudaStream_t s, const char* what) {
  if (smem > 48 * 1024)
    SC_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  const dim3 grid((p.tq + block_m - 1) / block_m, heads, batch);
  kernel<<<grid, threads, smem, s>>>(p);
  SC_CUDA_CHECK_LAUNCH(what);
}

template <typename T, int D> void launch_prefill(const PrefillParams& p, int batch, int heads, cudaStream_t s) {
  if constexpr (std::is_same_v<T, float>) {
    run_prefill_kernel(prefill_f32_kernel<D>, f32_smem_bytes<D>(), kF32BlockM, kF32Threads, p, batch, heads, s,
                       "attention_prefill (float32)");
  } else {
    if constexpr (D == 64) {
      if (p.causal < 0 && p.tq >= kWgMinQueries && wgmma_prefill_enabled())
        return run_prefill_kernel(prefill_wgmma_kernel<T>, kWgSmemBytes, kWgBlockM, kWgThreads, p, batch, heads, s,
                                  "attention_prefill (wgmma)");
    }
    auto go = [&](auto mt_tag) {
      constexpr int MT = decltype(mt_tag)::value;
      run_prefill_kernel(prefill_mma_kernel<T, D, MT>, mma_smem_bytes<D, MT>(), mma_block_m<MT>(), kMmaThreads, p,
                         batch, heads, s, "attention_prefill (tensor cores)");
    };
    // Two m-tiles a warp for long query runs over few blocks, heads of <= 64 (registers); one
    // otherwise (kPrefillMt2MaxBlocks).
    if constexpr (D <= 64) {
      const int64_t blocks1 = static_cast<int64_t>((p.tq + mma_block_m<1>() - 1) / mma_block_m<1>()) * heads * batch;
      const int forced = prefill_mt_forced();
      if (p.tq > 64 && (forced == 2 || (forced == 0 && blocks1 <= kPrefillMt2MaxBlocks)))
        return go(std::integral_constant<int, 2>{});
    }
    go(std::integral_constant<int, 1>{});
  }
}

// ---------------------------------------------------------------------------------------------
// Decode (one query per sequence): flash-decoding. Grid (splits, heads, batch), 128 threads.
// A key row of D elements is read by TPK = D / VEC threads with 16-byte loads; the block streams
// GROUPS = 128 / TPK keys at a time (x kUnroll loads in flight per thread), each thread group
// keeps its own online-softmax state, merged through shared memory at the end. With splits > 1
// the block writes unnormalized partials, and the last block of the (sequence, head) to finish
// (a counter per (sequence, head), reset to 0 by that block) merges them: one kernel, no combine
// launch. Launched with programmatic dependent launch: waits for the previous kernel before it
// reads anything, then lets the next kernel start loading its weights.
// ---------------------------------------------------------------------------------------------
constexpr int kDecThreads = 128;
constexpr int kDecUnroll = 4;
// Key groups of static K/V loaded before the dependency wait: one loop iteration, or two (a
// whole split of kDecodeMinChunk keys at 64-wide heads in half precision) in the PRE2 variant,
// which holds 115 registers (72 otherwise) and so runs for grids of one wave at 4 blocks an SM.
constexpr int kDecPre2 = 2 * kDecUnroll;

// PAGED: key j's row is block_table[b][j / block_size] * block_size + j % block_size (no batch
// offset, no kv_index); otherwise row j of the sequence's K/V. PRE2: static K/V (p.kv_static),
// two iterations' worth loaded before the wait.
template <typename T, int D, bool PAGED, bool PRE2>
__global__ void __launch_bounds__(kDecThreads) decode_kernel(const DecodeParams p) {
  static_assert(!(PAGED && PRE2), "paged K/V are not static");
  constexpr int NPRE = PRE2 ? kDecPre2 : kDecUnroll;
  constexpr int N2 = PRE2 ? kDecUnroll : 1;  // the second iteration's groups (PRE2)
  constexpr int VEC = 16 / sizeof(T);
  constexpr int TPK = D / VEC;
  constexpr int GROUPS = kDecThreads / TPK;
  static_assert(TPK >= 1 && TPK <= 32 && (TPK & (TPK - 1)) == 0, "threads per key must divide a warp");
  __shared__ float s_m[GROUPS], s_l[GROUPS];
  __shared__ float s_o[GROUPS][D];
  __shared__ bool s_last;

  const int tid = threadIdx.x, grp = tid / TPK, sub = tid % TPK;
  const int split = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int k_begin = split * p.chunk;
  // Static K/V (p.kv_static: the cross-attention K/V of encoded windows, and their kv_index,
  // which no kernel of the step writes): the first NPRE key groups of this split (one or two
  // loop iterations) are loaded before the wait, bounded by max_kv_len (the length is known only
  // after the wait; loads past it are zeroed below, as the loop leaves them), so the K/V stream
  // overlaps the previous kernel like the weights of the products.
  const bool pre = PRE2 || (!PAGED && p.kv_static);
  uint4 kr[kDecUnroll], vr[kDecUnroll], k2[N2], v2[N2];
  auto pre_k = [&](int u) -> uint4& { return u < kDecUnroll ? kr[u] : k2[(u - kDecUnroll) % N2]; };
  auto pre_v = [&](int u) -> uint4& { return u < kDecUnroll ? vr[u] : v2[(u - kDecUnroll) % N2]; };
  const T* k = nullptr;
  const T* v = nullptr;
  if (pre) {
    const int64_t kvb = p.kv_index ? p.kv_index[b] : b;
    k = static_cast<const T*>(p.k) + kvb * p.k_bs + static_cast<int64_t>(h) * D + sub * VEC;
    v = static_cast<const T*>(p.v) + kvb * p.v_bs + static_cast<int64_t>(h) * D + sub * VEC;
    const int lim = min(k_begin + p.chunk, p.max_kv_len);
#pragma unroll
    for (int u = 0; u < NPRE; ++u) {
      const int j = k_begin + u * GROUPS + grp;
      if (j < lim) {
        pre_k(u) = __ldg(reinterpret_cast<const uint4*>(k + static_cast<int64_t>(j) * p.ldk));
        pre_v(u) = __ldg(reinterpret_cast<const uint4*>(v + static_cast<int64_t>(j) * p.ldv));
      } else {
        pre_k(u) = make_uint4(0, 0, 0, 0);
        pre_v(u) = make_uint4(0, 0, 0, 0);
      }
    }
  }

  detail::pdl_wait();  // q, K/V and the lengths may come from the previous kernels
  detail::pdl_trigger();
  int len = p.kv_lengths[b];
  len = len < 0 ? 0 : (len > p.max_kv_len ? p.max_kv_len : len);
  const int k_end = min(k_begin + p.chunk, len);

  const T* q = static_cast<const T*>(p.q) + b * p.q_bs + static_cast<int64_t>(h) * D + sub * VEC;
  if (!pre) {
    const int64_t kvb = PAGED ? 0 : (p.kv_index ? p.kv_index[b] : b);
    k = static_cast<const T*>(p.k) + kvb * p.k_bs + static_cast<int64_t>(h) * D + sub * VEC;
    v = static_cast<const T*>(p.v) + kvb * p.v_bs + static_cast<int64_t>(h) * D + sub * VEC;
  } else {
#pragma unroll
    for (int u = 0; u < NPRE; ++u) {
      if (k_begin + u * GROUPS + grp >= k_end) {
        pre_k(u) = make_uint4(0, 0, 0, 0);
        pre_v(u) = make_uint4(0, 0, 0, 0);
      }
    }
  }
  const int32_t* table = PAGED ? p.block_table + b * p.table_stride : nullptr;

  float qf[VEC];
  unpack16<T>(__ldg(reinterpret_cast<const uint4*>(q)), qf);
#pragma unroll
  for (int i = 0; i < VEC; ++i) qf[i] *= p.scale_log2;

  float m_run = -INFINITY, l_run = 0.f, o[VEC];
#pragma unroll
  for (int i = 0; i < VEC; ++i) o[i] = 0.f;

  // Uniform trip count for all threads (the shuffles below need the whole warp).
  for (int base = k_begin; base < k_end; base += GROUPS * kDecUnroll) {
#pragma unroll
    for (int u = 0; u < kDecUnroll; ++u) {
      if (pre && base == k_begin) break;  // loaded before the wait
      if (PRE2 && base == k_begin + GROUPS * kDecUnroll) {  // so was the second iteration
        kr[u] = k2[u % N2];
        vr[u] = v2[u % N2];
        continue;
      }
      const int j = base + u * GROUPS + grp;
      if (j < k_end) {
        int64_t row = j;
        if constexpr (PAGED) row = static_cast<int64_t>(table[j / p.block_size]) * p.block_size + j % p.block_size;
        kr[u] = __ldg(reinterpret_cast<const uint4*>(k + row * p.ldk));
        vr[u] = __ldg(reinterpret_cast<const uint4*>(v + row * p.ldv));
      } else {
        kr[u] = make_uint4(0, 0, 0, 0);
        vr[u] = make_uint4(0, 0, 0, 0);
      }
    }
    float sc[kDecUnroll];
#pragma unroll
    for (int u = 0; u < kDecUnroll; ++u) {
      float kf[VEC];
      unpack16<T>(kr[u], kf);
      float d = 0.f;
#pragma unroll
      for (int i = 0; i < VEC; ++i) d = fmaf(qf[i], kf[i], d);
#pragma unroll
      for (int off = TPK / 2; off > 0; off >>= 1) d += __shfl_xor_sync(0xffffffffu, d, off);
      sc[u] = (base + u * GROUPS + grp < k_end) ? d : -INFINITY;
    }
    float mx = m_run;
#pragma unroll
    for (int u = 0; u < kDecUnroll; ++u) mx = fmaxf(mx, sc[u]);
    const float m_use = mx == -INFINITY ? 0.f : mx;
    const float alpha = exp2f(m_run - m_use);
    m_run = mx;
    l_run *= alpha;
#pragma unroll
    for (int i = 0; i < VEC; ++i) o[i] *= alpha;
#pragma unroll
    for (int u = 0; u < kDecUnroll; ++u) {
      const float pu = exp2f(sc[u] - m_use);
      l_run += pu;
      float vf[VEC];
      unpack16<T>(vr[u], vf);
#pragma unroll
      for (int i = 0; i < VEC; ++i) o[i] = fmaf(pu, vf[i], o[i]);
    }
  }

  if (sub == 0) {
    s_m[grp] = m_run;
    s_l[grp] = l_run;
  }
#pragma unroll
  for (int i = 0; i < VEC; ++i) s_o[grp][sub * VEC + i] = o[i];
  __syncthreads();

  float M = -INFINITY;
#pragma unroll
  for (int gi = 0; gi < GROUPS; ++gi) M = fmaxf(M, s_m[gi]);
  float L = 0.f;
  if (M != -INFINITY) {
#pragma unroll
    for (int gi = 0; gi < GROUPS; ++gi) L += exp2f(s_m[gi] - M) * s_l[gi];
  }
  const int64_t bh = static_cast<int64_t>(b) * gridDim.y + h;
  for (int d = tid; d < D; d += kDecThreads) {
    float acc = 0.f;
    if (M != -INFINITY) {
#pragma unroll
      for (int gi = 0; gi < GROUPS; ++gi) acc = fmaf(exp2f(s_m[gi] - M), s_o[gi][d], acc);
    }
    if (p.splits == 1) {
      T* out = static_cast<T*>(p.out) + b * p.o_bs + static_cast<int64_t>(h) * D;
      out[d] = from_f32<T>(L > 0.f ? acc / L : 0.f);
    } else {
      p.partial_o[(bh * p.splits + split) * D + d] = acc;
    }
  }
  if (p.splits == 1) return;
  if (tid == 0) {
    p.partial_ml[(bh * p.splits + split) * 2] = M;
    p.partial_ml[(bh * p.splits + split) * 2 + 1] = L;
  }
  // The last split of (b, h) to get here merges them all: every writer fences its partials
  // before the block counts itself; the counter goes back to 0 for the next call.
  __threadfence();
  __syncthreads();
  if (tid == 0) {
    const unsigned done = atomicAdd(p.counters + bh, 1u);
    s_last = done == static_cast<unsigned>(p.splits - 1);
    if (s_last) p.counters[bh] = 0;
  }
  __syncthreads();
  if (!s_last) return;
  __threadfence();
  // Merge (as a separate combine pass would): weights exp2(m_s - M), in split order. The other
  // blocks' partials are read through L2 (__ldcg), never a stale L1 line.
  const float* ml = p.partial_ml + bh * p.splits * 2;
  const float* po = p.partial_o + bh * p.splits * D;
  for (int d = tid; d < D; d += kDecThreads) {
    float Mx = -INFINITY;
    for (int s = 0; s < p.splits; ++s) Mx = fmaxf(Mx, __ldcg(ml + 2 * s));
    float Ls = 0.f, acc = 0.f;
    if (Mx != -INFINITY) {
      for (int s = 0; s < p.splits; ++s) {
        const float w = exp2f(__ldcg(ml + 2 * s) - Mx);  // 0 for empty splits (max -inf)
        Ls = fmaf(w, __ldcg(ml + 2 * s + 1), Ls);
        acc = fmaf(w, __ldcg(po + static_cast<int64_t>(s) * D + d), acc);
      }
    }
    T* out = static_cast<T*>(p.out) + b * p.o_bs + static_cast<int64_t>(h) * D;
    out[d] = from_f32<T>(Ls > 0.f ? acc / Ls : 0.f);
  }
}

// The PRE2 variant for static K/V when the grid is one wave at its occupancy (4 blocks an SM:
// kDecodeTargetBlocks), unless SPEECHCORE_DECODE_PRE2=0.
inline bool decode_pre2_enabled() {
  static const bool on = [] {
    const char* e = std::getenv("SPEECHCORE_DECODE_PRE2");
    return !(e != nullptr && std::strcmp(e, "0") == 0);
  }();
  return on;
}

template <typename T, int D> void launch_decode(const DecodeParams& p, int batch, int heads, cudaStream_t s) {
  const dim3 grid(p.splits, heads, batch);
  const int64_t blocks = static_cast<int64_t>(p.splits) * heads * batch;
  if (p.block_table)
    detail::launch(decode_kernel<T, D, true, false>, grid, dim3(kDecThreads), 0, s, "attention_decode", p);
  else if (p.kv_static && blocks <= kDecodeTargetBlocks && decode_pre2_enabled())
    detail::launch(decode_kernel<T, D, false, true>, grid, dim3(kDecThreads), 0, s, "attention_decode", p);
  else
    detail::launch(decode_kernel<T, D, false, false>, grid, dim3(kDecThreads), 0, s, "attention_decode", p);
}

}  // namespace speechcore::cuda::attn

// Explicit instantiations of both launchers for one element type and both head sizes.
#define SC_ATTENTION_INSTANTIATE_PREFILL(T)                                                                  \
  template void speechcore::cuda::attn::launch_prefill<T, 64>(const PrefillParams&, int, int, cudaStream_t);  \
  template void speechcore::cuda::attn::launch_prefill<T, 128>(const PrefillParams&, int, int, cudaStream_t);
#define SC_ATTENTION_INSTANTIATE_DECODE(T)                                                                   \
  template void speechcore::cuda::attn::launch_decode<T, 64>(const DecodeParams&, int, int, cudaStream_t);    \
  template void speechcore::cuda::attn::launch_decode<T, 128>(const DecodeParams&, int, int, cudaStream_t);
