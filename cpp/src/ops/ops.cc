// Argument checks for the Tensor-level op entry points (the raw-pointer kernels trust
// their callers, which are the layers in this library).
#include "ops/ops.h"

#include "core/status.h"

namespace speechcore::ops {

void linear(const Context& ctx, const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& y) {
  SC_CHECK(x.dtype() == DType::kFloat32 && w.dtype() == DType::kFloat32 && y.dtype() == DType::kFloat32,
           ErrorCode::kUnsupported, "linear: only float32 on CPU");
  SC_CHECK(x.rank() == 2 && w.rank() == 2 && y.rank() == 2, ErrorCode::kInvalidArgument,
           "linear: expected 2-D x, w, y, got ", shape_str(x.shape()), " ", shape_str(w.shape()), " ",
           shape_str(y.shape()));
  SC_CHECK(x.dim(1) == w.dim(1) && y.dim(0) == x.dim(0) && y.dim(1) == w.dim(0),
           ErrorCode::kInvalidArgument, "linear: shape mismatch x", shape_str(x.shape()), " w",
           shape_str(w.shape()), " y", shape_str(y.shape()));
  SC_CHECK(x.is_contiguous() && w.is_contiguous() && y.is_contiguous(), ErrorCode::kInvalidArgument,
           "linear: tensors must be contiguous");
  if (bias.defined())
    SC_CHECK(bias.numel() == w.dim(0) && bias.dtype() == DType::kFloat32, ErrorCode::kInvalidArgument,
             "linear: bias ", shape_str(bias.shape()), " does not match ", w.dim(0), " outputs");
  linear(ctx, x.data<float>(), w.data<float>(), bias.defined() ? bias.data<float>() : nullptr,
         y.data<float>(), x.dim(0), w.dim(0), x.dim(1));
}

int64_t conv1d_output_length(int64_t t_in, int kw, int stride, int pad) {
  return (t_in + 2 * pad - kw) / stride + 1;
}

}  // namespace speechcore::ops
