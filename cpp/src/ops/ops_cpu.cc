// CPU kernels: GEMM through OpenBLAS (scipy-openblas32), the rest as vectorizable loops
// split over the library's thread pool. Accumulation in float32, reductions in double
// where a row is long enough for it to matter. The scipy-openblas32 headers declare the
// CBLAS entry points with their scipy_ prefix (scipy_cblas_sgemm ...).
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

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

void set_blas_threads(int n) { scipy_openblas_set_num_threads(std::max(1, n)); }
int blas_threads() { return scipy_openblas_get_num_threads(); }

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
  if (m == 1) {
    scipy_cblas_sgemv(CblasRowMajor, CblasNoTrans, static_cast<blasint>(n), static_cast<blasint>(k), 1.0f, w,
                static_cast<blasint>(k), x, 1, beta, y, 1);
    return;
  }
  scipy_cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<blasint>(m), static_cast<blasint>(n),
              static_cast<blasint>(k), 1.0f, x, static_cast<blasint>(k), w, static_cast<blasint>(k), beta,
              y, static_cast<blasint>(n));
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

void gelu(const Context& ctx, float* x, int64_t n) {
  constexpr float kInvSqrt2 = 0.70710678118654752440f;
  parallel_rows(ctx, n, 20, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) x[i] = 0.5f * x[i] * (1.0f + std::erf(x[i] * kInvSqrt2));
  });
}

static void softmax_row(float* x, int64_t n) {
  float mx = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < n; ++i) mx = std::max(mx, x[i]);
  if (mx == -std::numeric_limits<float>::infinity()) {  // fully masked row
    for (int64_t i = 0; i < n; ++i) x[i] = 0.0f;
    return;
  }
  float sum = 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - mx);
    sum += x[i];
  }
  const float inv = 1.0f / sum;
  for (int64_t i = 0; i < n; ++i) x[i] *= inv;
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

void add(const Context& ctx, const float* x, float* y, int64_t n) {
  parallel_rows(ctx, n, 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) y[i] += x[i];
  });
}

void attention(const Context& ctx, const float* q, int64_t ldq, const float* k, int64_t ldk,
               const float* v, int64_t ldv, float* out, int64_t tq, int64_t tk, int heads,
               int head_dim, int64_t causal_offset, float* scratch) {
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  const int64_t ldo = static_cast<int64_t>(heads) * head_dim;
  for (int h = 0; h < heads; ++h) {
    const float* qh = q + h * head_dim;
    const float* kh = k + h * head_dim;
    const float* vh = v + h * head_dim;
    float* oh = out + h * head_dim;
    // scores = scale * q_h k_h^T : [tq, tk]
    if (tq == 1) {
      scipy_cblas_sgemv(CblasRowMajor, CblasNoTrans, static_cast<blasint>(tk), head_dim, scale, kh,
                  static_cast<blasint>(ldk), qh, 1, 0.0f, scratch, 1);
    } else {
      scipy_cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<blasint>(tq),
                  static_cast<blasint>(tk), head_dim, scale, qh, static_cast<blasint>(ldq), kh,
                  static_cast<blasint>(ldk), 0.0f, scratch, static_cast<blasint>(tk));
    }
    if (causal_offset >= 0) {
      for (int64_t i = 0; i < tq; ++i)
        for (int64_t j = i + causal_offset + 1; j < tk; ++j)
          scratch[i * tk + j] = -std::numeric_limits<float>::infinity();
    }
    softmax(ctx, scratch, tq, tk);
    // out_h = p v_h : [tq, head_dim]
    if (tq == 1) {
      scipy_cblas_sgemv(CblasRowMajor, CblasTrans, static_cast<blasint>(tk), head_dim, 1.0f, vh,
                  static_cast<blasint>(ldv), scratch, 1, 0.0f, oh, 1);
    } else {
      scipy_cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<blasint>(tq), head_dim,
                  static_cast<blasint>(tk), 1.0f, scratch, static_cast<blasint>(tk), vh,
                  static_cast<blasint>(ldv), 0.0f, oh, static_cast<blasint>(ldo));
    }
  }
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
