// Test hooks for the cuBLASLt products (_C.cuda_ops.linear).
#include <cuda_runtime_api.h>
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

  m.def(
      "linear_batched",
      [](FloatArray x, FloatArray w, bool w_kn, const std::string& dtype) {
        // x [m, batch, k] (product i reads x[:, i, :]), w [batch, n, k] (or [batch, k, n] with w_kn)
        // -> y [m, batch, n]: the per-head layout of absorbed cross-attention.
        const cuda::DataType dt = parse_dtype(dtype);
        if (x.ndim() != 3 || w.ndim() != 3 || x.shape(1) != w.shape(0))
          throw_error(ErrorCode::kInvalidArgument, "linear_batched: x [m, batch, k], w [batch, n, k]");
        const int64_t mm = x.shape(0), b = x.shape(1), k = x.shape(2), n = w_kn ? w.shape(2) : w.shape(1);
        if ((w_kn ? w.shape(1) : w.shape(2)) != k) throw_error(ErrorCode::kInvalidArgument, "linear_batched: k mismatch");
        static cuda::GemmRunner runner;
        DeviceBuffer dx = upload(x, dt), dw = upload(w, dt), dy = poisoned(static_cast<size_t>(mm * b * n), dt);
        runner.batched(dt, dx.get(), b * k, k, dw.get(), w_kn ? n : k, n * k, w_kn, dy.get(), b * n, n, mm, n, k,
                       static_cast<int>(b), nullptr);
        SC_CUDA_CHECK(cudaDeviceSynchronize());
        return download(dy, {mm, b, n}, dt);
      },
      py::arg("x"), py::arg("w"), py::arg("w_kn") = false, py::arg("dtype") = "float32");

  m.def(
      "gemv_fused",
      [](FloatArray x, FloatArray w, py::object bias, const std::string& dtype, py::object y_init, bool f32_out,
         bool gelu, py::object ln_gamma, py::object ln_beta, float ln_eps, int64_t split_col, py::object y2_init,
         py::object rows2, int repeat, int row_prefetch, py::object res_acc, py::object res_bias, bool res_zero) {
        // gemv() with its decode-step fusions: layer norm of x (ln_gamma/ln_beta), split output
        // (columns >= split_col to rows rows2[i] of y2, whose initial contents y2_init are kept
        // elsewhere). Returns (y, y2) as float32 (y2 None without a split).
        const cuda::DataType dt = parse_dtype(dtype);
        if (x.ndim() != 2 || w.ndim() != 2 || x.shape(1) != w.shape(1))
          throw_error(ErrorCode::kInvalidArgument, "gemv_fused: x [m, k], w [n, k]");
        const int64_t mm = x.shape(0), n = w.shape(0), k = x.shape(1);
        const cuda::DataType yt = f32_out ? cuda::DataType::kFloat32 : dt;
        DeviceBuffer dx = upload(x, dt), dw = upload(w, dt), db, dg, dbeta, dy, dy2, drows;
        if (!bias.is_none()) db = upload(bias.cast<FloatArray>(), dt);
        cuda::GemvFusion f;
        f.row_prefetch = row_prefetch;
        if (!ln_gamma.is_none()) {
          dg = upload(ln_gamma.cast<FloatArray>(), dt);
          dbeta = upload(ln_beta.cast<FloatArray>(), dt);
          f.ln_gamma = dg.get();
          f.ln_beta = dbeta.get();
          f.ln_eps = ln_eps;
        }
        const bool accumulate = !y_init.is_none();
        dy = accumulate ? upload(y_init.cast<FloatArray>(), yt) : poisoned(static_cast<size_t>(mm * n), yt);
        int64_t y2_rows = 0, ld2 = 0;
        if (split_col > 0) {
          FloatArray y2 = y2_init.cast<FloatArray>();
          IntArray r2 = rows2.cast<IntArray>();
          if (y2.ndim() != 2 || r2.ndim() != 1 || r2.shape(0) != mm)
            throw_error(ErrorCode::kInvalidArgument, "gemv_fused: y2_init [rows, ld2], rows2 [m]");
          for (py::ssize_t i = 0; i < r2.size(); ++i)
            if (r2.data()[i] < 0 || r2.data()[i] >= y2.shape(0))
              throw_error(ErrorCode::kInvalidArgument, "gemv_fused: rows2 out of range");
          y2_rows = y2.shape(0);
          ld2 = y2.shape(1);
          dy2 = upload(y2, dt);
          drows = upload_ints(r2);
          f.split_col = split_col;
          f.y2 = dy2.get();
          f.ld2 = ld2;
          f.rows2 = drows.as<int32_t>();
        }
        // residual terms (cuda::ResidualTerms): res_acc a list of int64 [k] (layer norm) or [n]
        // (accumulate) arrays, res_bias a list of float arrays or None
        std::vector<DeviceBuffer> dacc, dres_b;
        std::vector<py::ssize_t> acc_len;
        if (!res_acc.is_none()) {
          py::list accs = res_acc.cast<py::list>();
          py::list biases = res_bias.is_none() ? py::list() : res_bias.cast<py::list>();
          if (accs.size() < 1 || accs.size() > 2 || (biases.size() != 0 && biases.size() != accs.size()))
            throw_error(ErrorCode::kInvalidArgument, "gemv_fused: res_acc: 1 or 2 arrays, res_bias as many or None");
          for (size_t t = 0; t < accs.size(); ++t) {
            Int64Array a = accs[t].cast<Int64Array>();
            acc_len.push_back(a.size());
            dacc.push_back(cudatest::upload_int64(a));
            f.residual.acc[t] = dacc.back().as<int64_t>();
            if (biases.size() != 0 && !biases[t].is_none()) {
              dres_b.push_back(upload(biases[t].cast<FloatArray>(), dt));
              f.residual.bias[t] = dres_b.back().get();
            }
          }
          f.residual.terms = static_cast<int>(accs.size());
          f.residual.zero = res_zero;
        }
        if (repeat < 1) throw_error(ErrorCode::kInvalidArgument, "gemv_fused: repeat >= 1");
        // a created stream, so the kernel runs as in a model (programmatic dependent launch)
        static cudaStream_t stream = [] {
          cudaStream_t st = nullptr;
          SC_CUDA_CHECK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
          return st;
        }();
        SC_CUDA_CHECK(cudaDeviceSynchronize());  // uploads / poison fills (legacy stream) done
        for (int r = 0; r < repeat; ++r)  // repeats (without accumulate) must give the same result
          cuda::gemv(dt, dx.get(), dw.get(), bias.is_none() ? nullptr : db.get(), dy.get(), f32_out, mm, n, k,
                     accumulate, gelu, stream, &f);
        py::object y2_out = py::none();
        if (split_col > 0) y2_out = download(dy2, {y2_rows, ld2}, dt);
        if (!dacc.empty()) {  // the accumulators after the call, in place of y2
          py::list after;
          for (size_t t = 0; t < dacc.size(); ++t) after.append(cudatest::download_int64(dacc[t], {acc_len[t]}));
          y2_out = after;
        }
        return py::make_tuple(download(dy, {mm, n}, yt), y2_out);
      },
      py::arg("x"), py::arg("w"), py::arg("bias") = py::none(), py::arg("dtype") = "float32",
      py::arg("y_init") = py::none(), py::arg("f32_out") = false, py::arg("gelu") = false,
      py::arg("ln_gamma") = py::none(), py::arg("ln_beta") = py::none(), py::arg("ln_eps") = 1e-5f,
      py::arg("split_col") = 0, py::arg("y2_init") = py::none(), py::arg("rows2") = py::none(),
      py::arg("repeat") = 1, py::arg("row_prefetch") = -1, py::arg("res_acc") = py::none(),
      py::arg("res_bias") = py::none(), py::arg("res_zero") = false);
}

}  // namespace speechcore::bindings
