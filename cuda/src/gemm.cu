#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <tuple>

#include "speechcore/status.h"
#include "speechcore_cuda/elementwise.h"
#include "speechcore_cuda/gemm.h"

namespace speechcore::cuda {

namespace {

void check_lt(cublasStatus_t st, const char* what) {
  if (st == CUBLAS_STATUS_SUCCESS) return;
  throw Error(st == CUBLAS_STATUS_ALLOC_FAILED ? ErrorCode::kOutOfMemory : ErrorCode::kInternal,
              std::string("cuBLASLt error ") + std::to_string(static_cast<int>(st)) + " in " + what);
}
#define SC_LT_CHECK(expr) check_lt((expr), #expr)

cudaDataType_t cuda_type(DataType dt) {
  switch (dt) {
    case DataType::kFloat32: return CUDA_R_32F;
    case DataType::kFloat16: return CUDA_R_16F;
    case DataType::kBFloat16: return CUDA_R_16BF;
  }
  return CUDA_R_32F;
}

// One cached plan per problem: descriptors, layouts and the algorithm the heuristic picked.
struct Plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
  ~Plan() {
    if (op) cublasLtMatmulDescDestroy(op);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (c) cublasLtMatrixLayoutDestroy(c);
  }
};

// A product's shape: y[m, n] = x[m, k] w^T (w [n, k]) or x w (w_kn: w [k, n]), row strides
// ldx / ldw / ldy, and `batch` such products at element strides sx / sw / sy.
struct Shape {
  int dt;
  int64_t m, n, k;
  bool bias, accumulate, f32_out, w_kn;
  int64_t ldx, ldw, ldy;
  int batch;
  int64_t sx, sw, sy;
  auto tie() const { return std::tie(dt, m, n, k, bias, accumulate, f32_out, w_kn, ldx, ldw, ldy, batch, sx, sw, sy); }
  bool operator<(const Shape& o) const { return tie() < o.tie(); }
};
Shape plain_shape(DataType dt, int64_t m, int64_t n, int64_t k, bool bias, bool accumulate, bool f32_out) {
  return Shape{static_cast<int>(dt), m, n, k, bias, accumulate, f32_out, false, k, k, n, 1, 0, 0, 0};
}

std::atomic<int64_t> g_plan_ns{0};  // GemmRunner::plan_seconds()

}  // namespace

struct GemmRunner::Impl {
  cublasLtHandle_t handle = nullptr;
  int gemv_rows = kGemvDefaultRows;
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
  std::mutex mutex;
  std::map<Shape, std::unique_ptr<Plan>> plans;

  Plan& plan(DataType dt, int64_t m, int64_t n, int64_t k, bool bias, bool accumulate, bool f32_out = false) {
    return plan(plain_shape(dt, m, n, k, bias, accumulate, f32_out));
  }
  // Row-major y[m,n] = x[m,k] w[n,k]^T is column-major y^T[n,m] = w^T... : with cuBLAS's
  // column-major view, A = w as [k, n] (op T) gives n x k (w_kn: w as [n, k], op N), B = x as
  // [k, m] (op N), C = y as [n, m].
  Plan& plan(const Shape& sh) {
    auto it = plans.find(sh);
    if (it != plans.end()) return *it->second;
    const auto t0 = std::chrono::steady_clock::now();
    const DataType dt = static_cast<DataType>(sh.dt);
    const int64_t m = sh.m, n = sh.n, k = sh.k;
    const bool bias = sh.bias, f32_out = sh.f32_out;
    auto p = std::make_unique<Plan>();
    const cudaDataType_t t = cuda_type(dt);
    SC_LT_CHECK(cublasLtMatmulDescCreate(&p->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t ta = sh.w_kn ? CUBLAS_OP_N : CUBLAS_OP_T, tb = CUBLAS_OP_N;
    SC_LT_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
    SC_LT_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
    if (bias) {
      const cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
      SC_LT_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)));
      const cudaDataType_t bt = t;
      SC_LT_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof(bt)));
    }
    if (sh.w_kn)
      SC_LT_CHECK(cublasLtMatrixLayoutCreate(&p->a, t, static_cast<uint64_t>(n), static_cast<uint64_t>(k), sh.ldw));
    else
      SC_LT_CHECK(cublasLtMatrixLayoutCreate(&p->a, t, static_cast<uint64_t>(k), static_cast<uint64_t>(n), sh.ldw));
    SC_LT_CHECK(cublasLtMatrixLayoutCreate(&p->b, t, static_cast<uint64_t>(k), static_cast<uint64_t>(m), sh.ldx));
    SC_LT_CHECK(cublasLtMatrixLayoutCreate(&p->c, f32_out ? CUDA_R_32F : t, static_cast<uint64_t>(n),
                                           static_cast<uint64_t>(m), sh.ldy));
    if (sh.batch > 1) {
      const int32_t count = sh.batch;
      const int64_t strides[3] = {sh.sw, sh.sx, sh.sy};
      cublasLtMatrixLayout_t lays[3] = {p->a, p->b, p->c};
      for (int i = 0; i < 3; ++i) {
        SC_LT_CHECK(cublasLtMatrixLayoutSetAttribute(lays[i], CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof(count)));
        SC_LT_CHECK(cublasLtMatrixLayoutSetAttribute(lays[i], CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &strides[i],
                                                     sizeof(strides[i])));
      }
    }
    cublasLtMatmulPreference_t pref = nullptr;
    SC_LT_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    SC_LT_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                     &workspace_bytes, sizeof(workspace_bytes)));
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    const cublasStatus_t st =
        cublasLtMatmulAlgoGetHeuristic(handle, p->op, p->a, p->b, p->c, p->c, pref, 1, &result, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    check_lt(st, "cublasLtMatmulAlgoGetHeuristic");
    if (found == 0)
      throw Error(ErrorCode::kUnsupported, "cuBLASLt has no algorithm for a " + std::string(data_type_name(dt)) +
                                               " product of shape m=" + std::to_string(m) + " n=" + std::to_string(n) +
                                               " k=" + std::to_string(k));
    p->algo = result.algo;
    Plan& ref = *p;
    plans.emplace(sh, std::move(p));
    g_plan_ns.fetch_add(std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count(),
                        std::memory_order_relaxed);
    return ref;
  }
};

GemmRunner::GemmRunner(size_t workspace_bytes) : impl_(std::make_unique<Impl>()) {
  SC_LT_CHECK(cublasLtCreate(&impl_->handle));
  if (const char* v = std::getenv("SPEECHCORE_GEMV_MAX_M")) set_gemv_max_rows(std::atoi(v));
  impl_->workspace_bytes = workspace_bytes;
  if (workspace_bytes > 0) SC_CUDA_CHECK(cudaMalloc(&impl_->workspace, workspace_bytes));
}

GemmRunner::~GemmRunner() {
  impl_->plans.clear();
  if (impl_->workspace) cudaFree(impl_->workspace);
  if (impl_->handle) cublasLtDestroy(impl_->handle);
}

void GemmRunner::set_gemv_max_rows(int rows) { impl_->gemv_rows = std::max(0, std::min(rows, kGemvMaxRows)); }
int GemmRunner::gemv_max_rows() const { return impl_->gemv_rows; }

double GemmRunner::plan_seconds() { return 1e-9 * static_cast<double>(g_plan_ns.load(std::memory_order_relaxed)); }

size_t GemmRunner::cached_plans() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->plans.size();
}

void GemmRunner::linear(DataType dt, const void* x, const void* w, const void* bias, void* y, int64_t m, int64_t n,
                        int64_t k, bool accumulate, cudaStream_t stream) {
  if (m <= 0 || n <= 0 || k <= 0)
    throw Error(ErrorCode::kInvalidArgument, "linear: empty product m=" + std::to_string(m) + " n=" +
                                                 std::to_string(n) + " k=" + std::to_string(k));
  if (m <= impl_->gemv_rows) return gemv(dt, x, w, bias, y, false, m, n, k, accumulate, false, stream);
  std::lock_guard<std::mutex> lock(impl_->mutex);  // the workspace is shared: one product at a time
  Plan& p = impl_->plan(dt, m, n, k, bias != nullptr, accumulate);
  if (bias != nullptr)
    SC_LT_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
  const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
  SC_LT_CHECK(cublasLtMatmul(impl_->handle, p.op, &alpha, w, p.a, x, p.b, &beta, y, p.c, y, p.c, &p.algo,
                             impl_->workspace, impl_->workspace_bytes, stream));
}

void GemmRunner::linear_gelu(DataType dt, const void* x, const void* w, const void* bias, void* y, int64_t m,
                             int64_t n, int64_t k, cudaStream_t stream) {
  if (m >= 1 && m <= impl_->gemv_rows && n >= 1 && k >= 1)
    return gemv(dt, x, w, bias, y, false, m, n, k, false, true, stream);
  linear(dt, x, w, bias, y, m, n, k, false, stream);
  gelu(dt, y, m * n, stream);
}

void GemmRunner::linear_f32_out(DataType dt, const void* x, const void* w, float* y, int64_t m, int64_t n, int64_t k,
                                cudaStream_t stream) {
  if (m <= 0 || n <= 0 || k <= 0)
    throw Error(ErrorCode::kInvalidArgument, "linear_f32_out: empty product");
  if (m <= impl_->gemv_rows) return gemv(dt, x, w, nullptr, y, true, m, n, k, false, false, stream);
  std::lock_guard<std::mutex> lock(impl_->mutex);
  Plan& p = impl_->plan(dt, m, n, k, false, false, true);
  const float alpha = 1.0f, beta = 0.0f;
  SC_LT_CHECK(cublasLtMatmul(impl_->handle, p.op, &alpha, w, p.a, x, p.b, &beta, y, p.c, y, p.c, &p.algo,
                             impl_->workspace, impl_->workspace_bytes, stream));
}

void GemmRunner::batched(DataType dt, const void* x, int64_t ldx, int64_t sx, const void* w, int64_t ldw, int64_t sw,
                         bool w_kn, void* y, int64_t ldy, int64_t sy, int64_t m, int64_t n, int64_t k, int batch,
                         cudaStream_t stream) {
  if (m <= 0 || n <= 0 || k <= 0 || batch <= 0)
    throw Error(ErrorCode::kInvalidArgument, "batched: empty product m=" + std::to_string(m) + " n=" +
                                                 std::to_string(n) + " k=" + std::to_string(k));
  if (ldx < k || ldy < n || ldw < (w_kn ? n : k) || sx < 0 || sw < 0 || sy < 0)
    throw Error(ErrorCode::kInvalidArgument, "batched: row strides below the row lengths");
  std::lock_guard<std::mutex> lock(impl_->mutex);
  const Shape sh{static_cast<int>(dt), m, n, k, false, false, false, w_kn, ldx, ldw, ldy, batch, sx, sw, sy};
  Plan& p = impl_->plan(sh);
  const float alpha = 1.0f, beta = 0.0f;
  SC_LT_CHECK(cublasLtMatmul(impl_->handle, p.op, &alpha, w, p.a, x, p.b, &beta, y, p.c, y, p.c, &p.algo,
                             impl_->workspace, impl_->workspace_bytes, stream));
}

}  // namespace speechcore::cuda
