// Raw attention scores of one head (no softmax), for word timestamps: the alignment heads'
// cross-attention, post-processed on the host. Small (a window's text rows x 1500 frames),
// so a plain kernel: one block per (query row, 128 keys), the scaled query row in shared memory.
#include "kernel_utils.cuh"
#include "speechcore_cuda/attention.h"

namespace speechcore::cuda {

namespace {

using namespace detail;

constexpr int kScoreThreads = 128;
constexpr int kMaxHeadDim = 1280;  // 64 for a head; the model dimension for absorbed cross-attention

template <typename T>
__global__ void __launch_bounds__(kScoreThreads)
    scores_kernel(const T* q, int64_t q_stride, const T* k, int64_t k_stride, int cols, int head_dim, float scale,
                  float* out) {
  pdl_wait();
  __shared__ float qs[kMaxHeadDim];
  const int row = blockIdx.y;
  for (int j = threadIdx.x; j < head_dim; j += blockDim.x) qs[j] = to_float(q[row * q_stride + j]) * scale;
  __syncthreads();
  pdl_trigger();
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= cols) return;
  const T* kr = k + c * k_stride;
  float acc = 0.0f;
  for (int j = 0; j < head_dim; ++j) acc = fmaf(qs[j], to_float(kr[j]), acc);
  out[static_cast<int64_t>(row) * cols + c] = acc;
}

}  // namespace

void attention_scores(DataType dtype, const void* q, int64_t q_stride, const void* k, int64_t k_stride, int rows,
                      int cols, int head_dim, float scale, float* out, cudaStream_t stream) {
  require(rows >= 0 && cols >= 0, "attention_scores: negative sizes (", rows, ", ", cols, ")");
  require(head_dim >= 1 && head_dim <= kMaxHeadDim, "attention_scores: head_dim must be 1 to ", kMaxHeadDim,
          ", got ", head_dim);
  require(q_stride >= head_dim && k_stride >= head_dim, "attention_scores: row strides below head_dim");
  if (rows == 0 || cols == 0) return;
  require(q != nullptr && k != nullptr && out != nullptr, "attention_scores: null pointer");
  dispatch_type(dtype, [&](auto tag) {
    using T = decltype(tag);
    const dim3 grid(static_cast<unsigned>(ceil_div(cols, kScoreThreads)), static_cast<unsigned>(rows));
    launch(scores_kernel<T>, grid, dim3(kScoreThreads), 0, stream, "attention_scores", static_cast<const T*>(q),
           q_stride, static_cast<const T*>(k), k_stride, cols, head_dim, scale, out);
  });
}

}  // namespace speechcore::cuda
