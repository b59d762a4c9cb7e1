#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
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

using PlanKey = std::tuple<int, int64_t, int64_t, int64_t, bool, bool, bool>;  // dt, m, n, k, bias, accumulate, f32 out

}  // namespace

struct GemmRunner::Impl {
  cublasLtHandle_t handle = nullptr;
  int gemv_rows = kGemvDefaultRows;
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
  std::mutex mutex;
  std::map<PlanKey, std::unique_ptr<Plan>> plans;

  // Row-major y[m,n] = x[m,k] w[n,k]^T is column-major y^T[n,m] = w^T... : with cuBLAS's
  // column-major view, A = w as [k, n] (op T) gives n x k, B = x as [k, m] (op N), C = y as [n, m].
  Plan& plan(DataType dt, int64_t m, int64_t n, int64_t k, bool bias, bool accumulate, bool f32_out = false) {
    const PlanKey key{static_cast<int>(dt), m, n, k, bias, accumulate, f32_out};
    auto it = plans.find(key);
    if (it != plans.end()) return *it->second;
    auto p = std::make_unique<Plan>();
    const cudaDataType_t t = cuda_type(dt);
    SC_LT_CHECK(cublasLtMatmulDescCreate(&p->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    SC_LT_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
    SC_LT_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
    if (bias) {
      const cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
      SC_LT_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)));
      const cudaDataType_t bt = t;
      SC_LT_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof(bt)));
    }
    SC_LT_CHECK(cublasLtMatrixLayoutCreate(&p->a, t, static_cast<uint64_t>(k), static_cast<uint64_t>(n), k));
    SC_LT_CHECK(cublasLtMatrixLayoutCreate(&p->b, t, static_cast<uint64_t>(k), static_cast<uint64_t>(m), k));
    SC_LT_CHECK(cublasLtMatrixLayoutCreate(&p->c, f32_out ? CUDA_R_32F : t, static_cast<uint64_t>(n),
                                           static_cast<uint64_t>(m), n));
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
    plans.emplace(key, std::move(p));
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

}  // namespace speechcore::cuda
