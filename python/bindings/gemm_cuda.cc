// Test hooks for the cuBLASLt products (_C.cuda_ops.linear).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "bindings.h"
#include "cuda_testing.h"
#include "speechcore_cuda/gemm.h"

namespace py = pybind11;

namespace speechcore::bindings {

void register_cuda_gemm(py::module_& m) {
  using namespace cudatest;
  m.def(
      "linear",
      [](FloatArray x, FloatArray w, py::object bias, const std::string& dtype, py::object y_init, int gemv_max_rows,
         bool f32_out, bool gelu) {
        const cuda::DataType dt = parse_dtype(dtype);
        if (x.ndim() != 2 || w.ndim() != 2 || x.shape(1) != w.shape(1))
          throw_error(ErrorCode::kInvalidArgument, "linear: x [m, k], w [n, k]");
        const int64_t mm = x.shape(0), n = w.shape(0), k = x.shape(1);
        static cuda::GemmRunner runner;
        runner.set_gemv_max_rows(gemv_max_rows);
        if (f32_out && (!bias.is_none() || !y_init.is_none()))
          throw_error(ErrorCode::kInvalidArgument, "linear: f32_out takes no bias and no y_init");
        DeviceBuffer dx = upload(x, dt), dw = upload(w, dt);
        DeviceBuffer db;
        if (!bias.is_none()) {
          FloatArray b = bias.cast<FloatArray>();
          if (b.ndim() != 1 || b.shape(0) != n) throw_error(ErrorCode::kInvalidArgument, "linear: bias [n]");
          db = upload(b, dt);
        }
        DeviceBuffer dy;
        const bool accumulate = !y_init.is_none();
        if (accumulate) {
          FloatArray y0 = y_init.cast<FloatArray>();
          if (y0.ndim() != 2 || y0.shape(0) != mm || y0.shape(1) != n)
            throw_error(ErrorCode::kInvalidArgument, "linear: y_init [m, n]");
          dy = upload(y0, dt);
        } else {
          dy = poisoned(static_cast<size_t>(mm * n), f32_out ? cuda::DataType::kFloat32 : dt);
        }
        if (f32_out) {
          runner.linear_f32_out(dt, dx.get(), dw.get(), dy.as<float>(), mm, n, k, nullptr);
          return download(dy, {mm, n}, cuda::DataType::kFloat32);
        }
        if (gelu) {
          if (bias.is_none() || accumulate) throw_error(ErrorCode::kInvalidArgument, "linear: gelu needs a bias, no y_init");
          runner.linear_gelu(dt, dx.get(), dw.get(), db.get(), dy.get(), mm, n, k, nullptr);
        } else {
          runner.linear(dt, dx.get(), dw.get(), bias.is_none() ? nullptr : db.get(), dy.get(), mm, n, k, accumulate,
                        nullptr);
        }
        return download(dy, {mm, n}, dt);
      },
      py::arg("x"), py::arg("w"), py::arg("bias") = py::none(), py::arg("dtype") = "float32",
      py::arg("y_init") = py::none(), py::arg("gemv_max_rows") = cuda::kGemvMaxRows, py::arg("f32_out") = false, py::arg("gelu") = false,
      "y = x w^T (+ bias) (+ y_init) on the GPU in `dtype` (f32_out: float32 output, no bias/y_init), returned as "
      "float32. Products of m <= gemv_max_rows rows take the skinny gemv kernel, others cuBLASLt.");
}

}  // namespace speechcore::bindings
