// CPU kernels: GEMM through OpenBLAS (scipy-openblas32), the rest as vectorizable loops
// split over the library's thread pool. Accumulation in float32, reductions in double
// where a row is long enough for it to matter. The scipy-openblas32 headers declare the
// CBLAS entry points with their scipy_ prefix (scipy_cblas_sgemm ...).
#include <cblas.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "ops/ops.h"

extern "C" {
void scipy_openblas_set_num_threads(int num_threads);
int scipy_openblas_get_num_threads(void);
}

namespace speechcore::ops {

namespace {
template <typename F>
void parallel_rows(const Context& ctx, int64_t rows, int64_t cost_per_row, F&& fn) {
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(cost_per_row, 1));
  if (ctx.pool == nullptr || rows <= grain) {
    fn(0, rows);
    return;
  }
  ctx.pool->parallel_for(rows, grain, fn);
}
}  // namespace

// expf to ~1 ulp as a branch-free polynomial the compiler vectorizes (Cody-Waite range
// reduction, degree-6 minimax polynomial on [-ln2/2, ln2/2]); exact 0 below the float range.
static inline float fast_exp(float x) {
  const float xc = std::min(std::max(x, -87.3f), 88.7f);
  // round to nearest by the 1.5 * 2^23 trick (vectorizes, unlike nearbyint)
  const float n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  float r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, 4);
  return x < -87.3f ? 0.0f : p * scale;
}

// erf to ~1.5e-7 absolute (Abramowitz & Stegun 7.1.26), vectorizable.
static inline float fast_erf(float x) {
  const float a = std::fabs(x);
  const float t = 1.0f / (1.0f + 0.3275911f * a);
  const float poly = t * (0.254829592f + t * (-0.284496736f + t * (1.421413741f + t * (-1.453152027f + t * 1.061405429f))));
  const float y = 1.0f - poly * fast_exp(-a * a);
  return std::copysign(y, x);
}

#define SC_VECTOR_CLONES __attribute__((target_clones("arch=haswell", "default")))

void set_blas_threads(int n) { scipy_openblas_set_num_threads(std::max(1, n)); }
int blas_threads() { return scipy_openblas_get_num_threads(); }

namespace {
// One single-threaded BLAS call: y[m, n] (row stride ldy) = x[m, k] w[n, k]^T + beta y.
void gemm_block(const float* x, const float* w, float* y, int64_t m, int64_t n, int64_t k, int64_t ldy,
                float beta) {
  if (m == 1) {
    scipy_cblas_sgemv(CblasRowMajor, CblasNoTrans, static_cast<blasint>(n), static_cast<blasint>(k), 1.0f, w,
                      static_cast<blasint>(k), x, 1, beta, y, 1);
  } else {
    scipy_cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<blasint>(m), static_cast<blasint>(n),
                      static_cast<blasint>(k), 1.0f, x, static_cast<blasint>(k), w, static_cast<blasint>(k), beta,
                      y, static_cast<blasint>(ldy));
  }
}
}  // namespace

// The library's pool does the threading (OpenBLAS runs single-threaded, see Model::load):
// tall products are split by rows, short ones (decoding) by output features, so one set of
// threads serves GEMMs and the elementwise kernels without oversubscribing the cores.
void linear(const Context& ctx, const float* x, const float* w, const float* bias, float* y,
            int64_t m, int64_t n, int64_t k, bool accumulate) {
  float beta = accumulate ? 1.0f : 0.0f;
  if (bias != nullptr) {
    if (accumulate) {
      for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < n; ++j) y[i * n + j] += bias[j];
    } else {
      for (int64_t i = 0; i < m; ++i) std::memcpy(y + i * n, bias, sizeof(float) * n);
    }
    beta = 1.0f;
  }
  const int threads = ctx.pool ? ctx.pool->num_threads() : 1;
  if (threads == 1 || m * n * k < (int64_t(1) << 17)) {
    gemm_block(x, w, y, m, n, k, n, beta);
    return;
  }
  if (m >= 32 * threads) {
    ctx.pool->parallel_for(m, (m + threads - 1) / threads, [&](int64_t b, int64_t e) {
      gemm_block(x + b * k, w, y + b * n, e - b, n, k, n, beta);
    });
    return;
  }
  constexpr int64_t kAlign = 16;  // column blocks stay vector aligned
  const int64_t blocks = (n + kAlign - 1) / kAlign;
  ctx.pool->parallel_for(blocks, (blocks + threads - 1) / threads, [&](int64_t b, int64_t e) {
    const int64_t n0 = b * kAlign, n1 = std::min(n, e * kAlign);
    if (m == 1) {
      gemm_block(x, w + n0 * k, y + n0, 1, n1 - n0, k, n, beta);
    } else {
      gemm_block(x, w + n0 * k, y + n0, m, n1 - n0, k, n, beta);
    }
  });
}

void layer_norm(const Context& ctx, const float* x, const float* gamma, const float* beta, float* y,
                int64_t rows, int64_t cols, float eps) {
  parallel_rows(ctx, rows, cols * 3, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const float* xr = x + r * cols;
      float* yr = y + r * cols;
      float sum = 0.0f;
      for (int64_t c = 0; c < cols; ++c) sum += xr[c];
      const float mean = sum / static_cast<float>(cols);
      float sq = 0.0f;
      for (int64_t c = 0; c < cols; ++c) {
        const float d = xr[c] - mean;
        sq += d * d;
      }
      const float inv = 1.0f / std::sqrt(sq / static_cast<float>(cols) + eps);
      for (int64_t c = 0; c < cols; ++c) yr[c] = (xr[c] - mean) * inv * gamma[c] + beta[c];
    }
  });
}

SC_VECTOR_CLONES static void gelu_range(float* x, int64_t n) {
  constexpr float kInvSqrt2 = 0.70710678118654752440f;
  for (int64_t i = 0; i < n; ++i) x[i] = 0.5f * x[i] * (1.0f + fast_erf(x[i] * kInvSqrt2));
}

void gelu(const Context& ctx, float* x, int64_t n) {
  parallel_rows(ctx, n, 20, [&](int64_t b, int64_t e) { gelu_range(x + b, e - b); });
}


// Reductions keep kLanes partial results so the compiler can vectorize them without
// reassociating float math globally (no -ffast-math).
constexpr int kLanes = 8;

SC_VECTOR_CLONES static float row_max(const float* x, int64_t n) {
  float mx[kLanes];
  for (int j = 0; j < kLanes; ++j) mx[j] = -std::numeric_limits<float>::infinity();
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int j = 0; j < kLanes; ++j) mx[j] = x[i + j] > mx[j] ? x[i + j] : mx[j];
  float m = -std::numeric_limits<float>::infinity();
  for (int j = 0; j < kLanes; ++j) m = std::max(m, mx[j]);
  for (; i < n; ++i) m = std::max(m, x[i]);
  return m;
}

// x[i] = exp(x[i] - shift); returns the sum.
SC_VECTOR_CLONES static float exp_shift_sum(float* x, int64_t n, float shift) {
  float acc[kLanes] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int j = 0; j < kLanes; ++j) {
      x[i + j] = fast_exp(x[i + j] - shift);
      acc[j] += x[i + j];
    }
  float sum = 0.0f;
  for (int j = 0; j < kLanes; ++j) sum += acc[j];
  for (; i < n; ++i) {
    x[i] = fast_exp(x[i] - shift);
    sum += x[i];
  }
  return sum;
}

SC_VECTOR_CLONES static void scale_row(float* x, int64_t n, float a) {
  for (int64_t i = 0; i < n; ++i) x[i] *= a;
}

static void softmax_row(float* x, int64_t n) {
  const float mx = row_max(x, n);
  if (mx == -std::numeric_limits<float>::infinity()) {  // fully masked row
    for (int64_t i = 0; i < n; ++i) x[i] = 0.0f;
    return;
  }
  scale_row(x, n, 1.0f / exp_shift_sum(x, n, mx));
}

void softmax(const Context& ctx, float* x, int64_t rows, int64_t cols) {
  parallel_rows(ctx, rows, cols * 4, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) softmax_row(x + r * cols, cols);
  });
}

void log_softmax(float* x, int64_t n) {
  float mx = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < n; ++i) mx = std::max(mx, x[i]);
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) sum += std::exp(static_cast<double>(x[i] - mx));
  const float lse = mx + static_cast<float>(std::log(sum));
  for (int64_t i = 0; i < n; ++i) x[i] -= lse;
}

float logsumexp(const float* x, int64_t n) {
  const float m = row_max(x, n);
  if (m == -std::numeric_limits<float>::infinity()) return m;
  std::vector<float> tmp(x, x + n);
  return m + std::log(exp_shift_sum(tmp.data(), n, m));
}

void embedding(const float* table, const int* ids, int64_t n, int64_t d, const float* pos, float* out) {
  for (int64_t i = 0; i < n; ++i) {
    const float* e = table + static_cast<int64_t>(ids[i]) * d;
    const float* p = pos + i * d;
    float* o = out + i * d;
    for (int64_t j = 0; j < d; ++j) o[j] = e[j] + p[j];
  }
}

void add(const Context& ctx, const float* x, float* y, int64_t n) {
  parallel_rows(ctx, n, 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) y[i] += x[i];
  });
}

namespace {
constexpr int64_t kRowBlock = 64;  // query rows per block: the scores of a block stay in cache
int pool_threads(const Context& ctx) { return ctx.pool ? ctx.pool->num_threads() : 1; }
}  // namespace

int64_t attention_scratch_floats(const Context& ctx, int64_t tq, int64_t tk, int heads) {
  if (tq >= kAttentionRowSplit) return static_cast<int64_t>(pool_threads(ctx)) * kRowBlock * tk;
  return tq * tk * heads;
}

namespace {
// One head, query rows [r0, r1): scores into s ([r1 - r0, tk]), mask, softmax, s @ v.
void attention_rows(const float* q, int64_t ldq, const float* k, int64_t ldk, const float* v, int64_t ldv,
                    float* out, int64_t ldo, int64_t r0, int64_t r1, int64_t tk, int head_dim,
                    int64_t causal_offset, float scale, float* s) {
  const int64_t rows = r1 - r0;
  const float* qr = q + r0 * ldq;
  if (rows == 1) {
    scipy_cblas_sgemv(CblasRowMajor, CblasNoTrans, static_cast<blasint>(tk), head_dim, scale, k,
                      static_cast<blasint>(ldk), qr, 1, 0.0f, s, 1);
  } else {
    scipy_cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<blasint>(rows), static_cast<blasint>(tk),
                      head_dim, scale, qr, static_cast<blasint>(ldq), k, static_cast<blasint>(ldk), 0.0f, s,
                      static_cast<blasint>(tk));
  }
  for (int64_t i = 0; i < rows; ++i) {
    float* row = s + i * tk;
    if (causal_offset >= 0)
      for (int64_t j = r0 + i + causal_offset + 1; j < tk; ++j) row[j] = -std::numeric_limits<float>::infinity();
    softmax_row(row, tk);
  }
  float* o = out + r0 * ldo;
  if (rows == 1) {
    scipy_cblas_sgemv(CblasRowMajor, CblasTrans, static_cast<blasint>(tk), head_dim, 1.0f, v,
                      static_cast<blasint>(ldv), s, 1, 0.0f, o, 1);
  } else {
    scipy_cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<blasint>(rows), head_dim,
                      static_cast<blasint>(tk), 1.0f, s, static_cast<blasint>(tk), v, static_cast<blasint>(ldv), 0.0f,
                      o, static_cast<blasint>(ldo));
  }
}
}  // namespace

// Long query blocks (encoder, prompts): blocks of kRowBlock query rows split over the pool,
// all heads of a block in turn, so a block's scores stay in cache (each thread has its own
// scores slot). Short ones (decoding steps): heads split over the pool.
void attention(const Context& ctx, const float* q, int64_t ldq, const float* k, int64_t ldk,
               const float* v, int64_t ldv, float* out, int64_t tq, int64_t tk, int heads,
               int head_dim, int64_t causal_offset, float* scratch) {
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  const int64_t ldo = static_cast<int64_t>(heads) * head_dim;
  const int threads = pool_threads(ctx);
  if (tq >= kAttentionRowSplit) {
    const int64_t blocks = (tq + kRowBlock - 1) / kRowBlock;
    std::atomic<int> next_slot{0};
    auto run = [&](int64_t b, int64_t e) {
      const int slot = next_slot++;  // one call per chunk, at most `threads` chunks
      float* s = scratch + static_cast<int64_t>(slot) * kRowBlock * tk;
      for (int64_t blk = b; blk < e; ++blk) {
        const int64_t r0 = blk * kRowBlock, r1 = std::min(tq, r0 + kRowBlock);
        for (int h = 0; h < heads; ++h) {
          const int64_t off = static_cast<int64_t>(h) * head_dim;
          attention_rows(q + off, ldq, k + off, ldk, v + off, ldv, out + off, ldo, r0, r1, tk, head_dim,
                         causal_offset, scale, s);
        }
      }
    };
    if (threads == 1) run(0, blocks);
    else ctx.pool->parallel_for(blocks, (blocks + threads - 1) / threads, run);
    return;
  }
  auto head_range = [&](int64_t b, int64_t e) {
    for (int64_t h = b; h < e; ++h) {
      const int64_t off = h * head_dim;
      attention_rows(q + off, ldq, k + off, ldk, v + off, ldv, out + off, ldo, 0, tq, tk, head_dim, causal_offset,
                     scale, scratch + h * tq * tk);
    }
  };
  if (threads == 1 || tq * tk * heads < 4096) head_range(0, heads);
  else ctx.pool->parallel_for(heads, 1, head_range);
}

void conv1d(const Context& ctx, const float* x, int64_t c_in, int64_t t_in, int64_t x_cstride,
            int64_t x_tstride, const float* w, const float* bias, int64_t c_out, int kw, int stride,
            int pad, float* y, float* col) {
  const int64_t t_out = conv1d_output_length(t_in, kw, stride, pad);
  const int64_t kcols = c_in * kw;
  parallel_rows(ctx, t_out, kcols, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      float* row = col + t * kcols;
      for (int64_t c = 0; c < c_in; ++c) {
        for (int j = 0; j < kw; ++j) {
          const int64_t src = t * stride + j - pad;
          row[c * kw + j] = (src >= 0 && src < t_in) ? x[c * x_cstride + src * x_tstride] : 0.0f;
        }
      }
    }
  });
  linear(ctx, col, w, bias, y, t_out, c_out, kcols);
}

}  // namespace speechcore::ops
