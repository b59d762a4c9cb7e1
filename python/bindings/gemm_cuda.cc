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
      [](FloatArray x, FloatArray w, py::object bias, const std::string& dtype, py::object y_init) {
        const cuda::DataType dt = parse_dtype(dtype);
        if (x.ndim() != 2 || w.ndim() != 2 || x.shape(1) != w.shape(1))
          throw_error(ErrorCode::kInvalidArgument, "linear: x [m, k], w [n, k]");
        const int64_t mm = x.shape(0), n = w.shape(0), k = x.shape(1);
        static cuda::GemmRunner runner;
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
          dy = poisoned(static_cast<size_t>(mm * n), dt);
        }
        runner.linear(dt, dx.get(), dw.get(), bias.is_none() ? nullptr : db.get(), dy.get(), mm, n, k, accumulate,
                      nullptr);
        return download(dy, {mm, n}, dt);
      },
      py::arg("x"), py::arg("w"), py::arg("bias") = py::none(), py::arg("dtype") = "float32",
      py::arg("y_init") = py::none(),
      "y = x w^T (+ bias) (+ y_init) on the GPU in `dtype`, returned as float32.");
}

}  // namespace speechcore::bindings
