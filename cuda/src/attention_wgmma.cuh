// Internal (included by attention_kernels.cuh): encoder self-attention on Hopper's warpgroup
// tensor-core instructions (wgmma), for the unmasked, head-size-64, float16/bfloat16 case.
//
// Why: the mma.sync prefill kernel tops out near 180 TFLOP/s on the large-v3 encoder, bound by
// shared-memory traffic (every warp reads the whole K and V tile through ldmatrix for its 16
// queries) and by instruction issue. A wgmma reads its B operand from shared memory once for a
// warpgroup's 64 queries, with no ldmatrix and no register staging.
//
// Block = 2 warpgroups (256 threads), 64 queries each (128 a block), key tiles of 128 rows in a
// two-stage cp.async ring. Tiles are stored with 128-byte rows (one head of 64 16-bit elements)
// in Hopper's 128-byte swizzle (16-byte chunk c of row r at chunk c ^ (r % 8), atoms of 8 rows =
// 1024 bytes), the canonical layout wgmma's shared-memory descriptors describe:
//   S = Q K^T : m64n128k16 x 4 (head dims), A = Q (K-major), B = K tile (K-major);
//   O += P V  : m64n64k16 x 8 (keys), A = P from registers (the S accumulators' layout is the A
//               fragment layout), B = V tile read "transposed" (MN-major: dims contiguous).
// Online softmax in the log2 domain with the scale folded into one FFMA before ex2; keys past
// tk (the last tile's tail, zero-filled) are masked. Grid (ceil(tq / 128), heads, batch).
#pragma once

namespace speechcore::cuda::attn {

constexpr int kWgBlockM = 128;  // 2 warpgroups x 64 queries
constexpr int kWgBlockN = 128;  // keys a tile
constexpr int kWgThreads = 256;
constexpr int kWgTileBytes = 128 * 128;  // 128 rows x 64 elements x 2 bytes
// Q + 2 stages x (K, V), plus slack to align the base to the 1024-byte swizzle atom.
constexpr size_t kWgSmemBytes = 1024 + static_cast<size_t>(kWgTileBytes) * 5;

// Unmasked runs of at least this many queries take this kernel (shorter ones, prompts, and
// causal masks stay on prefill_mma_kernel).
constexpr int kWgMinQueries = 128;

// The kernel exists only in an sm_90a build (SPEECHCORE_CUDA_SM90A, set by CMake when the
// architectures include 90a) and runs only on a compute-capability-9 device;
// $SPEECHCORE_PREFILL_WGMMA=0 turns it off (measurements). Read once.
inline bool wgmma_prefill_enabled() {
#if defined(SPEECHCORE_CUDA_SM90A)
  static const bool on = [] {
    const char* e = std::getenv("SPEECHCORE_PREFILL_WGMMA");
    if (e != nullptr && std::strcmp(e, "0") == 0) return false;
    return detail::current_device_major() == 9;
  }();
  return on;
#else
  return false;
#endif
}

// Byte offset of 16-byte chunk c (0..7) of row r in a 128-byte-swizzled tile.
__device__ __forceinline__ uint32_t sw128_offset(int r, int c) {
  return static_cast<uint32_t>(r * 128 + ((c ^ (r & 7)) << 4));
}

// wgmma shared-memory matrix descriptor, 128-byte swizzle: start address, leading and stride
// byte offsets (all in 16-byte units; the swizzle mode sits in bits 62-63).
__device__ __forceinline__ uint64_t sw128_desc(uint32_t smem_addr, uint32_t lbo_bytes, uint32_t sbo_bytes) {
  return static_cast<uint64_t>((smem_addr & 0x3FFFFu) >> 4) | (static_cast<uint64_t>(lbo_bytes >> 4) << 16) |
         (static_cast<uint64_t>(sbo_bytes >> 4) << 32) | (uint64_t{1} << 62);
}

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_wait_all() { asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory"); }
// Keeps the compiler from touching accumulator registers across the asynchronous wgmma (reads
// after the wait stay after it).
template <int N> __device__ __forceinline__ void wgmma_pin(float (&d)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

// The accumulator operands of the wgmma wrappers below: registers d[0..31] (%0-%31), and
// d[32..63] (%32-%63) for the 64-register shapes.
#define SC_WG_ACC_LO \
  "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), \
  "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), \
  "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), \
  "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), \
  "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), \
  "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), \
  "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), \
  "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
#define SC_WG_ACC_HI \
  "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), \
  "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), \
  "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), \
  "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), \
  "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), \
  "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), \
  "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), \
  "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
#define SC_WG_REGS_LO "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, " \
  "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
#define SC_WG_REGS_HI "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, " \
  "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"

// D(64x128, f32) (+)= A(64x16, shared, K-major) * B(16x128, shared, K-major): one warpgroup.
#define SC_WGMMA_M64N128K16_SS(TY)                                                \
  asm volatile("{\n .reg .pred p;\n setp.ne.b32 p, %66, 0;\n"                   \
               "wgmma.mma_async.sync.aligned.m64n128k16.f32." TY "." TY " {"     \
               SC_WG_REGS_LO ", " SC_WG_REGS_HI "}, %64, %65, p, 1, 1, 0, 0;\n}\n" \
               : SC_WG_ACC_LO, SC_WG_ACC_HI                                       \
               : "l"(desc_a), "l"(desc_b), "r"(scale_d))

// D(64x64, f32) (+)= A(64x16, registers) * B(16x64, shared, MN-major): one warpgroup.
#define SC_WGMMA_M64N64K16_RS_TB(TY)                                              \
  asm volatile("{\n .reg .pred p;\n setp.ne.b32 p, %37, 0;\n"                   \
               "wgmma.mma_async.sync.aligned.m64n64k16.f32." TY "." TY " {"      \
               SC_WG_REGS_LO "}, {%32, %33, %34, %35}, %36, p, 1, 1, 1;\n}\n"    \
               : SC_WG_ACC_LO                                                     \
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(scale_d))

template <typename T>
__device__ __forceinline__ void wgmma_qk(float (&d)[64], uint64_t desc_a, uint64_t desc_b, int scale_d) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  if constexpr (std::is_same_v<T, __half>) SC_WGMMA_M64N128K16_SS("f16");
  else SC_WGMMA_M64N128K16_SS("bf16");
#endif
}
template <typename T>
__device__ __forceinline__ void wgmma_pv(float (&d)[32], const uint32_t (&a)[4], uint64_t desc_b, int scale_d) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  if constexpr (std::is_same_v<T, __half>) SC_WGMMA_M64N64K16_RS_TB("f16");
  else SC_WGMMA_M64N64K16_RS_TB("bf16");
#endif
}
#undef SC_WGMMA_M64N128K16_SS
#undef SC_WGMMA_M64N64K16_RS_TB
#undef SC_WG_ACC_LO
#undef SC_WG_ACC_HI
#undef SC_WG_REGS_LO
#undef SC_WG_REGS_HI

// 128 rows x 64 elements from global (row r at g + r * ld) into a swizzled tile; rows >= valid
// are zero-filled without a global read.
__device__ __forceinline__ void wg_load_tile(unsigned char* tile, const void* gmem, int64_t ld, int valid, int tid) {
  const uint16_t* g = static_cast<const uint16_t*>(gmem);
#pragma unroll
  for (int i = 0; i < 128 * 8 / kWgThreads; ++i) {
    const int c = i * kWgThreads + tid;
    const int r = c >> 3, cc = c & 7;
    const bool ok = r < valid;
    cp_async_16(tile + sw128_offset(r, cc), g + static_cast<int64_t>(ok ? r : 0) * ld + cc * 8, ok);
  }
}

template <typename T>
__global__ void __launch_bounds__(kWgThreads, 2) prefill_wgmma_kernel(const PrefillParams p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  constexpr int D = 64;
  extern __shared__ unsigned char wg_smem_raw[];
  unsigned char* sQ = reinterpret_cast<unsigned char*>((reinterpret_cast<uintptr_t>(wg_smem_raw) + 1023) &
                                                       ~static_cast<uintptr_t>(1023));
  unsigned char* sK = sQ + kWgTileBytes;      // [2] stages
  unsigned char* sV = sK + 2 * kWgTileBytes;  // [2] stages

  const int tid = threadIdx.x, wg = tid / 128, wq = (tid / 32) % 4, lane = tid % 32;
  const int g = lane / 4, tig = lane % 4;
  const int m0 = blockIdx.x * kWgBlockM;
  const int h = blockIdx.y, b = blockIdx.z;

  const PrefillHead<T> hp(p, b, h, D);
  const T *q = hp.q, *k = hp.k, *v = hp.v;
  T* out = hp.out;

  const int tk = p.tk;
  const int n_tiles = (tk + kWgBlockN - 1) / kWgBlockN;

  // Group 0: Q and key tile 0; group 1: key tile 1 (possibly empty).
  wg_load_tile(sQ, q + static_cast<int64_t>(m0) * p.ldq, p.ldq, p.tq - m0, tid);
  wg_load_tile(sK, k, p.ldk, tk, tid);
  wg_load_tile(sV, v, p.ldv, tk, tid);
  cp_async_commit();
  if (n_tiles > 1) {
    wg_load_tile(sK + kWgTileBytes, k + static_cast<int64_t>(kWgBlockN) * p.ldk, p.ldk, tk - kWgBlockN, tid);
    wg_load_tile(sV + kWgTileBytes, v + static_cast<int64_t>(kWgBlockN) * p.ldv, p.ldv, tk - kWgBlockN, tid);
  }
  cp_async_commit();

  const uint32_t q_base = smem_u32(sQ) + wg * 64 * 128;  // this warpgroup's 64 query rows
  const float sc = p.scale_log2;
  float o[32];
#pragma unroll
  for (int i = 0; i < 32; ++i) o[i] = 0.f;
  float m_run[2] = {-INFINITY, -INFINITY};  // raw score maxima of rows g and g + 8
  float l_run[2] = {0.f, 0.f};              // this thread's partial sums (quad-reduced at the end)

  for (int t = 0; t < n_tiles; ++t) {
    const int st = t & 1;
    cp_async_wait<1>();
    detail::fence_proxy_async();  // this thread's cp.async writes -> visible to the async proxy (wgmma)
    __syncthreads();

    // S = Q K^T over the tile's 128 keys.
    float s[64];
    const uint32_t k_base = smem_u32(sK + st * kWgTileBytes);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk)
      wgmma_qk<T>(s, sw128_desc(q_base + 32 * kk, 16, 1024), sw128_desc(k_base + 32 * kk, 16, 1024), kk > 0);
    wgmma_commit();
    wgmma_wait_all();
    wgmma_pin(s);

    const int n0 = t * kWgBlockN;
    if (n0 + kWgBlockN > tk) {  // the last tile: keys past tk are zero rows
#pragma unroll
      for (int j = 0; j < 16; ++j)
#pragma unroll
        for (int c = 0; c < 4; ++c)
          if (n0 + j * 8 + tig * 2 + (c & 1) >= tk) s[4 * j + c] = -INFINITY;
    }
    float mx[2] = {m_run[0], m_run[1]};
#pragma unroll
    for (int j = 0; j < 16; ++j) {
      mx[0] = fmaxf(mx[0], fmaxf(s[4 * j], s[4 * j + 1]));
      mx[1] = fmaxf(mx[1], fmaxf(s[4 * j + 2], s[4 * j + 3]));
    }
    float ms[2], alpha[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
      ms[r] = mx[r] * sc;                           // every tile has a visible key: finite
      alpha[r] = ex2_ftz(fmaf(m_run[r], sc, -ms[r]));  // exp2(-inf) = 0 on the first tile
      m_run[r] = mx[r];
      l_run[r] *= alpha[r];
    }
#pragma unroll
    for (int j = 0; j < 16; ++j) {
      s[4 * j] = ex2_ftz(fmaf(s[4 * j], sc, -ms[0]));
      s[4 * j + 1] = ex2_ftz(fmaf(s[4 * j + 1], sc, -ms[0]));
      s[4 * j + 2] = ex2_ftz(fmaf(s[4 * j + 2], sc, -ms[1]));
      s[4 * j + 3] = ex2_ftz(fmaf(s[4 * j + 3], sc, -ms[1]));
      l_run[0] += s[4 * j] + s[4 * j + 1];
      l_run[1] += s[4 * j + 2] + s[4 * j + 3];
    }
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      o[4 * j] *= alpha[0];
      o[4 * j + 1] *= alpha[0];
      o[4 * j + 2] *= alpha[1];
      o[4 * j + 3] *= alpha[1];
    }

    // O += P V: P's k-step kk (keys 16kk..16kk+15) is S's n-tiles 2kk and 2kk+1.
    uint32_t pa[8][4];
#pragma unroll
    for (int kk = 0; kk < 8; ++kk) {
      pa[kk][0] = pack2<T>(s[8 * kk], s[8 * kk + 1]);
      pa[kk][1] = pack2<T>(s[8 * kk + 2], s[8 * kk + 3]);
      pa[kk][2] = pack2<T>(s[8 * kk + 4], s[8 * kk + 5]);
      pa[kk][3] = pack2<T>(s[8 * kk + 6], s[8 * kk + 7]);
    }
    // V as B, MN-major: 8-key atoms 1,024 bytes apart (SBO); the leading offset is unused (the 64
    // dims are one 128-byte atom wide). k-step kk starts 16 keys (2,048 bytes) further.
    const uint32_t v_base = smem_u32(sV + st * kWgTileBytes);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < 8; ++kk) wgmma_pv<T>(o, pa[kk], sw128_desc(v_base + kk * 2048, kWgTileBytes, 1024), 1);
    wgmma_commit();
    wgmma_wait_all();
    wgmma_pin(o);

    __syncthreads();  // both warpgroups are done with stage st
    if (t + 2 < n_tiles) {
      const int n2 = (t + 2) * kWgBlockN;
      wg_load_tile(sK + st * kWgTileBytes, k + static_cast<int64_t>(n2) * p.ldk, p.ldk, tk - n2, tid);
      wg_load_tile(sV + st * kWgTileBytes, v + static_cast<int64_t>(n2) * p.ldv, p.ldv, tk - n2, tid);
    }
    cp_async_commit();  // possibly empty: keeps the wait count uniform
  }

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l_run[r] += __shfl_xor_sync(0xffffffffu, l_run[r], 1);
    l_run[r] += __shfl_xor_sync(0xffffffffu, l_run[r], 2);
  }
  const float inv_a = l_run[0] > 0.f ? 1.f / l_run[0] : 0.f, inv_b = l_run[1] > 0.f ? 1.f / l_run[1] : 0.f;
  const int row_a = m0 + wg * 64 + wq * 16 + g, row_b = row_a + 8;
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    const int col = j * 8 + tig * 2;
    if (row_a < p.tq)
      *reinterpret_cast<uint32_t*>(out + static_cast<int64_t>(row_a) * p.ldo + col) =
          pack2<T>(o[4 * j] * inv_a, o[4 * j + 1] * inv_a);
    if (row_b < p.tq)
      *reinterpret_cast<uint32_t*>(out + static_cast<int64_t>(row_b) * p.ldo + col) =
          pack2<T>(o[4 * j + 2] * inv_b, o[4 * j + 3] * inv_b);
  }
#else
  __trap();  // built without sm_90a: the launcher never selects this kernel (wgmma_prefill_enabled)
#endif
}

}  // namespace speechcore::cuda::attn
