// Test hooks for the non-GEMM, non-attention CUDA kernels (submodule _C.cuda_ops): numpy in,
// numpy float32 out, in a chosen element type. Outputs are poisoned (NaN / -1) before each
// launch. `offset` (elements) shifts every activation buffer off 16-byte alignment, so the
// scalar (unaligned) paths of the kernels are tested too. Not part of the public SDK.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <vector>

#include "bindings.h"
#include "cuda_testing.h"
#include "io/audio.h"
#include "speechcore_cuda/elementwise.h"
#include "speechcore_cuda/mel.h"
#include "speechcore_cuda/sampling.h"

namespace py = pybind11;

namespace speechcore::bindings {

namespace {

using cudatest::DeviceBuffer;
using cudatest::FloatArray;
using cudatest::IntArray;

// The stream every hook launches on (non-blocking: launchers must honour it).
cudaStream_t test_stream() {
  static cudaStream_t s = [] {
    cudaStream_t st = nullptr;
    SC_CUDA_CHECK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    return st;
  }();
  return s;
}

// Uploads and memsets run on the legacy default stream, which a non-blocking stream does not
// wait for: finish them before launching.
void uploads_done() { SC_CUDA_CHECK(cudaDeviceSynchronize()); }

// A device copy of `a` in type t, starting `offset` elements into its allocation.
struct Placed {
  DeviceBuffer buf;
  cuda::DataType dt = cuda::DataType::kFloat32;
  size_t offset = 0;
  void* ptr() const { return static_cast<char*>(buf.get()) + offset * cuda::data_type_size(dt); }
};

Placed place(const FloatArray& a, cuda::DataType t, size_t offset) {
  Placed p{DeviceBuffer((static_cast<size_t>(a.size()) + offset) * cuda::data_type_size(t)), t, offset};
  if (p.buf.bytes() > 0) SC_CUDA_CHECK(cudaMemset(p.buf.get(), 0xFF, p.buf.bytes()));
  DeviceBuffer tmp = cudatest::upload(a, t);
  if (a.size() > 0)
    SC_CUDA_CHECK(cudaMemcpy(p.ptr(), tmp.get(), tmp.bytes(), cudaMemcpyDeviceToDevice));
  return p;
}

// A NaN-filled buffer of n elements of type t at `offset`.
Placed poisoned(size_t n, cuda::DataType t, size_t offset) {
  Placed p{DeviceBuffer((n + offset) * cuda::data_type_size(t)), t, offset};
  if (p.buf.bytes() > 0) SC_CUDA_CHECK(cudaMemset(p.buf.get(), 0xFF, p.buf.bytes()));
  return p;
}

py::array_t<float> fetch(const Placed& p, const std::vector<py::ssize_t>& shape) {
  SC_CUDA_CHECK(cudaDeviceSynchronize());
  size_t n = 1;
  for (auto s : shape) n *= static_cast<size_t>(s);
  DeviceBuffer tmp(n * cuda::data_type_size(p.dt));
  if (n > 0) SC_CUDA_CHECK(cudaMemcpy(tmp.get(), p.ptr(), tmp.bytes(), cudaMemcpyDeviceToDevice));
  return cudatest::download(tmp, shape, p.dt);
}

std::vector<py::ssize_t> shape_of(const FloatArray& a) { return {a.shape(), a.shape() + a.ndim()}; }

}  // namespace

void register_cuda_kernels(py::module_& m) {
  m.def(
      "layer_norm",
      [](FloatArray x, FloatArray gamma, FloatArray beta, float eps, const std::string& dtype, bool inplace,
         size_t offset) {
        need(x.ndim() == 2 && gamma.size() == x.shape(1) && beta.size() == x.shape(1),
             "layer_norm: x [rows, cols], gamma/beta [cols]");
        const auto dt = cudatest::parse_dtype(dtype);
        Placed xd = place(x, dt, offset), gd = place(gamma, dt, offset), bd = place(beta, dt, offset);
        Placed yd = inplace ? Placed{} : poisoned(static_cast<size_t>(x.size()), dt, offset);
        void* y = inplace ? xd.ptr() : yd.ptr();
        uploads_done();
        cuda::layer_norm(dt, xd.ptr(), gd.ptr(), bd.ptr(), y, x.shape(0), x.shape(1), eps, test_stream());
        return fetch(inplace ? xd : yd, shape_of(x));
      },
      py::arg("x"), py::arg("gamma"), py::arg("beta"), py::arg("eps") = 1e-5f, py::arg("dtype") = "float32",
      py::arg("inplace") = false, py::arg("offset") = 0);

  m.def(
      "gelu",
      [](FloatArray x, const std::string& dtype, size_t offset) {
        const auto dt = cudatest::parse_dtype(dtype);
        Placed xd = place(x, dt, offset);
        uploads_done();
        cuda::gelu(dt, xd.ptr(), x.size(), test_stream());
        return fetch(xd, shape_of(x));
      },
      py::arg("x"), py::arg("dtype") = "float32", py::arg("offset") = 0);

  m.def(
      "bias_gelu",
      [](FloatArray x, FloatArray bias, const std::string& dtype, size_t offset) {
        need(x.ndim() == 2 && bias.size() == x.shape(1), "bias_gelu: x [rows, cols], bias [cols]");
        const auto dt = cudatest::parse_dtype(dtype);
        Placed xd = place(x, dt, offset), bd = place(bias, dt, offset);
        uploads_done();
        cuda::bias_gelu(dt, xd.ptr(), bd.ptr(), x.shape(0), x.shape(1), test_stream());
        return fetch(xd, shape_of(x));
      },
      py::arg("x"), py::arg("bias"), py::arg("dtype") = "float32", py::arg("offset") = 0);

  m.def(
      "add",
      [](FloatArray x, FloatArray y, const std::string& dtype, size_t offset) {
        need(x.size() == y.size(), "add: x and y of one size");
        const auto dt = cudatest::parse_dtype(dtype);
        Placed xd = place(x, dt, offset), yd = place(y, dt, offset);
        uploads_done();
        cuda::add(dt, xd.ptr(), yd.ptr(), y.size(), test_stream());
        return fetch(yd, shape_of(y));
      },
      py::arg("x"), py::arg("y"), py::arg("dtype") = "float32", py::arg("offset") = 0,
      "returns y + x (computed in place in y's device buffer)");

  m.def(
      "embedding",
      [](FloatArray table, IntArray ids, IntArray positions, FloatArray pos_table, const std::string& dtype,
         size_t offset) {
        need(table.ndim() == 2 && pos_table.ndim() == 2 && pos_table.shape(1) == table.shape(1) && ids.ndim() == 1 &&
                 positions.ndim() == 1 && positions.size() == ids.size(),
             "embedding: table [vocab, d], ids [n], positions [n], pos_table [max_pos, d]");
        for (py::ssize_t i = 0; i < ids.size(); ++i) {
          need(ids.data()[i] >= 0 && ids.data()[i] < table.shape(0), "embedding: id out of range");
          need(positions.data()[i] >= 0 && positions.data()[i] < pos_table.shape(0),
               "embedding: position out of range");
        }
        const auto dt = cudatest::parse_dtype(dtype);
        const int64_t n = ids.size(), d = table.shape(1);
        Placed td = place(table, dt, offset), pd = place(pos_table, dt, offset);
        DeviceBuffer idd = cudatest::upload_ints(ids), posd = cudatest::upload_ints(positions);
        Placed out = poisoned(static_cast<size_t>(n * d), dt, offset);
        uploads_done();
        cuda::embedding(dt, td.ptr(), idd.as<int32_t>(), posd.as<int32_t>(), pd.ptr(), out.ptr(), n, d,
                        test_stream());
        return fetch(out, {n, d});
      },
      py::arg("table"), py::arg("ids"), py::arg("positions"), py::arg("pos_table"), py::arg("dtype") = "float32",
      py::arg("offset") = 0);

  m.def(
      "copy_rows",
      [](FloatArray src, FloatArray dst, py::object src_rows_obj, py::object dst_rows_obj, int64_t n, int64_t cols,
         const std::string& dtype) {
        need(src.ndim() == 2 && dst.ndim() == 2 && cols >= 1 && cols <= src.shape(1) && cols <= dst.shape(1) && n >= 0,
             "copy_rows: src [rows, ld_src], dst [rows, ld_dst], 1 <= cols <= both widths");
        auto index = [&](const py::object& o, py::ssize_t limit, DeviceBuffer& buf) -> const int32_t* {
          if (o.is_none()) {
            need(n <= limit, "copy_rows: n exceeds the rows");
            return nullptr;
          }
          IntArray a = o.cast<IntArray>();
          need(a.ndim() == 1 && a.shape(0) == n, "copy_rows: index maps need n entries");
          for (py::ssize_t i = 0; i < n; ++i) need(a.data()[i] >= 0 && a.data()[i] < limit, "copy_rows: index out of range");
          buf = cudatest::upload_ints(a);
          return buf.as<int32_t>();
        };
        const auto dt = cudatest::parse_dtype(dtype);
        DeviceBuffer sr, dr;
        const int32_t* srp = index(src_rows_obj, src.shape(0), sr);
        const int32_t* drp = index(dst_rows_obj, dst.shape(0), dr);
        Placed sd = place(src, dt, 0), dd = place(dst, dt, 0);
        uploads_done();
        cuda::copy_rows(dt, sd.ptr(), src.shape(1), srp, dd.ptr(), dst.shape(1), drp, n, cols, test_stream());
        return fetch(dd, {dst.shape(0), dst.shape(1)});
      },
      py::arg("src"), py::arg("dst"), py::arg("src_rows"), py::arg("dst_rows"), py::arg("n"), py::arg("cols"),
      py::arg("dtype") = "float32", "dst after dst[dst_rows[i], :cols] = src[src_rows[i], :cols] (None = identity)");

  m.def(
      "im2col_conv1d",
      [](FloatArray x, int64_t c_in, int64_t t_in, int64_t x_cstride, int64_t x_tstride, int64_t batch,
         int64_t x_batch_stride, int kw, int stride, int pad, const std::string& dtype) {
        need(x.ndim() == 1, "im2col_conv1d: x is the flat input buffer");
        need(c_in >= 1 && t_in >= 1 && batch >= 1 && x_cstride >= 0 && x_tstride >= 0 && x_batch_stride >= 0,
             "im2col_conv1d: bad sizes");
        const int64_t last = (batch - 1) * x_batch_stride + (c_in - 1) * x_cstride + (t_in - 1) * x_tstride;
        need(last < x.size(), "im2col_conv1d: strides reach past x");
        const auto dt = cudatest::parse_dtype(dtype);
        const int64_t t_out = cuda::conv1d_output_length(t_in, kw, stride, pad);
        need(t_out >= 1, "im2col_conv1d: no output");
        Placed xd = place(x, dt, 0);
        Placed col = poisoned(static_cast<size_t>(batch * t_out * c_in * kw), dt, 0);
        uploads_done();
        cuda::im2col_conv1d(dt, xd.ptr(), c_in, t_in, x_cstride, x_tstride, batch, x_batch_stride, kw, stride, pad,
                            col.ptr(), test_stream());
        return fetch(col, {batch * t_out, c_in * kw});
      },
      py::arg("x"), py::arg("c_in"), py::arg("t_in"), py::arg("x_cstride"), py::arg("x_tstride"), py::arg("batch"),
      py::arg("x_batch_stride"), py::arg("kw"), py::arg("stride"), py::arg("pad"), py::arg("dtype") = "float32");

  m.def(
      "add_positional",
      [](FloatArray x, FloatArray pos, const std::string& dtype, size_t offset) {
        need(x.ndim() == 3 && pos.ndim() == 2 && pos.shape(0) == x.shape(1) && pos.shape(1) == x.shape(2),
             "add_positional: x [batch, t, d], pos [t, d]");
        const auto dt = cudatest::parse_dtype(dtype);
        Placed xd = place(x, dt, offset), pd = place(pos, dt, offset);
        uploads_done();
        cuda::add_positional(dt, xd.ptr(), pd.ptr(), x.shape(0), x.shape(1), x.shape(2), test_stream());
        return fetch(xd, shape_of(x));
      },
      py::arg("x"), py::arg("pos"), py::arg("dtype") = "float32", py::arg("offset") = 0);

  m.def(
      "log_mel",
      [](FloatArray audio, int n_mels, int padding) {
        need(audio.ndim() == 1, "log_mel: audio [n]");
        need(n_mels >= 1 && n_mels <= 4096 && padding >= 0, "log_mel: bad n_mels/padding");
        const int64_t n = audio.size();
        const int64_t frames = cuda::log_mel_num_frames(n, padding);
        std::vector<float> filters = io::mel_filters(io::kWhisperSampleRate, cuda::kMelNFft, n_mels);
        FloatArray fa({static_cast<py::ssize_t>(n_mels), static_cast<py::ssize_t>(cuda::kMelFreqs)});
        std::copy(filters.begin(), filters.end(), fa.mutable_data());
        Placed ad = place(audio, cuda::DataType::kFloat32, 0);
        Placed fd = place(fa, cuda::DataType::kFloat32, 0);
        Placed out = poisoned(static_cast<size_t>(n_mels) * static_cast<size_t>(std::max<int64_t>(frames, 0)),
                              cuda::DataType::kFloat32, 0);
        DeviceBuffer scratch(cuda::log_mel_scratch_bytes(n, padding, n_mels));
        SC_CUDA_CHECK(cudaMemset(scratch.get(), 0xFF, scratch.bytes()));
        uploads_done();
        cuda::log_mel(n > 0 ? static_cast<const float*>(ad.ptr()) : nullptr, n, padding,
                      static_cast<const float*>(fd.ptr()), n_mels, static_cast<float*>(out.ptr()), scratch.get(),
                      test_stream());
        return fetch(out, {n_mels, frames});
      },
      py::arg("audio"), py::arg("n_mels") = 80, py::arg("padding") = 160,
      "Whisper log-mel spectrogram on the GPU, [n_mels, frames] float32 (as _C.log_mel_spectrogram)");

  m.def(
      "whisper_greedy_step",
      [](FloatArray logits, IntArray generated, IntArray step, IntArray suppress, IntArray suppress_begin, int eot,
         int no_timestamps, int timestamp_begin, int timestamp_end, int max_initial_timestamp_index, bool timestamps,
         py::object rows_obj, bool append, py::object uniform_obj, float temperature) -> py::tuple {
        need(logits.ndim() == 2 && generated.ndim() == 2 && step.ndim() == 1 && step.shape(0) == logits.shape(0),
             "whisper_greedy_step: logits [batch, vocab], generated [rows, max_steps], step [batch]");
        DeviceBuffer rowsd;
        if (rows_obj.is_none()) {
          need(generated.shape(0) == logits.shape(0), "whisper_greedy_step: generated needs one row per sequence");
        } else {
          IntArray rows = rows_obj.cast<IntArray>();
          need(rows.ndim() == 1 && rows.shape(0) == logits.shape(0), "whisper_greedy_step: rows [batch]");
          for (py::ssize_t b = 0; b < rows.size(); ++b)
            need(rows.data()[b] >= 0 && rows.data()[b] < generated.shape(0), "whisper_greedy_step: row out of range");
          rowsd = cudatest::upload_ints(rows);
        }
        for (py::ssize_t b = 0; b < step.size(); ++b)
          need(step.data()[b] >= 0 && step.data()[b] <= generated.shape(1), "whisper_greedy_step: step out of range");
        const int batch = static_cast<int>(logits.shape(0)), vocab = static_cast<int>(logits.shape(1));
        const int max_steps = static_cast<int>(generated.shape(1));
        Placed ld = place(logits, cuda::DataType::kFloat32, 0);
        DeviceBuffer gd = cudatest::upload_ints(generated), sd = cudatest::upload_ints(step);
        DeviceBuffer supd = cudatest::upload_ints(suppress), begd = cudatest::upload_ints(suppress_begin);
        DeviceBuffer tok(static_cast<size_t>(batch) * 4);
        if (batch > 0) SC_CUDA_CHECK(cudaMemset(tok.get(), 0xFF, tok.bytes()));
        Placed lp = poisoned(static_cast<size_t>(batch), cuda::DataType::kFloat32, 0);
        cuda::WhisperRuleParams p;
        p.eot = eot;
        p.no_timestamps = no_timestamps;
        p.timestamp_begin = timestamp_begin;
        p.timestamp_end = timestamp_end;
        p.max_initial_timestamp_index = max_initial_timestamp_index;
        p.timestamps = timestamps;
        DeviceBuffer ud;
        if (!uniform_obj.is_none()) {  // a draw per sequence (whisper_sample_step)
          auto u = uniform_obj.cast<py::array_t<double, py::array::c_style | py::array::forcecast>>();
          need(u.ndim() == 1 && u.shape(0) == logits.shape(0), "whisper_greedy_step: uniform [batch]");
          ud = DeviceBuffer(static_cast<size_t>(batch) * sizeof(double));
          if (batch > 0) SC_CUDA_CHECK(cudaMemcpy(ud.get(), u.data(), ud.bytes(), cudaMemcpyHostToDevice));
        }
        uploads_done();
        const int32_t* rows_d = rows_obj.is_none() ? nullptr : rowsd.as<int32_t>();
        if (uniform_obj.is_none())
          cuda::whisper_greedy_step(static_cast<float*>(ld.ptr()), gd.as<int32_t>(), rows_d, append, sd.as<int32_t>(),
                                    supd.as<int32_t>(), static_cast<int>(suppress.size()), begd.as<int32_t>(),
                                    static_cast<int>(suppress_begin.size()), p, tok.as<int32_t>(),
                                    static_cast<float*>(lp.ptr()), batch, vocab, max_steps, test_stream());
        else
          cuda::whisper_sample_step(static_cast<float*>(ld.ptr()), gd.as<int32_t>(), rows_d, append, sd.as<int32_t>(),
                                    supd.as<int32_t>(), static_cast<int>(suppress.size()), begd.as<int32_t>(),
                                    static_cast<int>(suppress_begin.size()), p, ud.as<double>(), temperature,
                                    tok.as<int32_t>(), static_cast<float*>(lp.ptr()), batch, vocab, max_steps,
                                    test_stream());
        py::array_t<float> masked = fetch(ld, {batch, vocab});
        if (append)
          return py::make_tuple(masked, cudatest::download_ints(tok, {batch}), fetch(lp, {batch}),
                                cudatest::download_ints(gd, {generated.shape(0), generated.shape(1)}));
        return py::make_tuple(masked, cudatest::download_ints(tok, {batch}), fetch(lp, {batch}));
      },
      py::arg("logits"), py::arg("generated"), py::arg("step"), py::arg("suppress"), py::arg("suppress_begin"),
      py::arg("eot"), py::arg("no_timestamps"), py::arg("timestamp_begin"), py::arg("timestamp_end"),
      py::arg("max_initial_timestamp_index") = 50, py::arg("timestamps") = true, py::arg("rows") = py::none(),
      py::arg("append") = false, py::arg("uniform") = py::none(), py::arg("temperature") = 1.0f,
      "-> (masked logits [batch, vocab], next_token int32 [batch], token_logprob [batch]); with append=True also "
      "the generated table after the step. rows: int32 [batch], the generated row of each sequence. uniform: "
      "float64 [batch] in [0, 1): draw the token at the temperature (whisper_sample_step) instead of the argmax.");

  m.def(
      "no_speech_prob",
      [](FloatArray logits, int no_speech_id) {
        need(logits.ndim() == 2, "no_speech_prob: logits [batch, vocab]");
        const int batch = static_cast<int>(logits.shape(0)), vocab = static_cast<int>(logits.shape(1));
        Placed ld = place(logits, cuda::DataType::kFloat32, 0);
        Placed out = poisoned(static_cast<size_t>(batch), cuda::DataType::kFloat32, 0);
        uploads_done();
        cuda::no_speech_prob(static_cast<const float*>(ld.ptr()), batch, vocab, no_speech_id,
                             static_cast<float*>(out.ptr()), test_stream());
        return fetch(out, {batch});
      },
      py::arg("logits"), py::arg("no_speech_id"));
}

}  // namespace speechcore::bindings
