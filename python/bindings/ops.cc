// Test hooks: the CPU kernels on numpy arrays (submodule _C.ops), so tests compare them with
// numpy/torch references. Not part of the public SDK.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <vector>

#include "bindings.h"
#include "core/half.h"
#include "core/status.h"
#include "ops/ops.h"
#include "runtime/whisper_beam.h"
#include "runtime/whisper_decoding.h"

namespace py = pybind11;
using Array = py::array_t<float, py::array::c_style | py::array::forcecast>;

namespace speechcore::bindings {

namespace {
core::ThreadPool& pool() {
  static core::ThreadPool p(0);
  return p;
}
ops::Context ctx() { return ops::Context{&pool()}; }
}  // namespace

void register_ops(py::module_& m) {
  py::module_ o = m.def_submodule("ops", "CPU kernels (test hooks)");
  o.def("round_to_dtype", [](Array x, const std::string& dtype) {
    // What a value becomes when stored as float16/bfloat16 (round to nearest even), as float32.
    Array y(std::vector<py::ssize_t>(x.shape(), x.shape() + x.ndim()));
    float* out = y.mutable_data();
    for (py::ssize_t i = 0; i < x.size(); ++i) {
      const float v = x.data()[i];
      if (dtype == "float32") out[i] = v;
      else if (dtype == "float16") out[i] = core::half_to_float(core::float_to_half(v));
      else if (dtype == "bfloat16") out[i] = core::bf16_to_float(core::float_to_bf16(v));
      else throw_error(ErrorCode::kInvalidArgument, "unknown dtype '", dtype, "'");
    }
    return y;
  }, py::arg("x"), py::arg("dtype"));
  o.def("linear", [](Array x, Array w, py::object b) {
    need(x.ndim() == 2 && w.ndim() == 2 && x.shape(1) == w.shape(1), "linear: x [m,k], w [n,k]");
    const int64_t m = x.shape(0), n = w.shape(0), k = x.shape(1);
    Array y({m, n});
    Array bias = b.is_none() ? Array() : b.cast<Array>();
    if (!b.is_none()) need(bias.ndim() == 1 && bias.shape(0) == n, "linear: bias [n]");
    ops::linear(ctx(), x.data(), w.data(), b.is_none() ? nullptr : bias.data(), y.mutable_data(), m, n, k);
    return y;
  });
  o.def("layer_norm", [](Array x, Array g, Array b, float eps) {
    need(x.ndim() == 2 && g.size() == x.shape(1) && b.size() == x.shape(1), "layer_norm: x [r,c], g/b [c]");
    Array y({x.shape(0), x.shape(1)});
    ops::layer_norm(ctx(), x.data(), g.data(), b.data(), y.mutable_data(), x.shape(0), x.shape(1), eps);
    return y;
  }, py::arg("x"), py::arg("gamma"), py::arg("beta"), py::arg("eps") = 1e-5f);
  o.def("gelu", [](Array x) {
    Array y(std::vector<py::ssize_t>(x.shape(), x.shape() + x.ndim()));
    std::copy(x.data(), x.data() + x.size(), y.mutable_data());
    ops::gelu(ctx(), y.mutable_data(), y.size());
    return y;
  });
  o.def("softmax", [](Array x) {
    need(x.ndim() == 2, "softmax: x [r,c]");
    Array y({x.shape(0), x.shape(1)});
    std::copy(x.data(), x.data() + x.size(), y.mutable_data());
    ops::softmax(ctx(), y.mutable_data(), x.shape(0), x.shape(1));
    return y;
  });
  o.def("log_softmax", [](Array x) {
    Array y(x.size());
    std::copy(x.data(), x.data() + x.size(), y.mutable_data());
    ops::log_softmax(y.mutable_data(), y.size());
    return y;
  });
  o.def("attention", [](Array q, Array k, Array v, int heads, int64_t causal_offset) {
    need(q.ndim() == 2 && k.ndim() == 2 && v.ndim() == 2 && q.shape(1) == k.shape(1) && k.shape(1) == v.shape(1) &&
             k.shape(0) == v.shape(0) && heads > 0 && q.shape(1) % heads == 0,
         "attention: q [tq, h*d], k/v [tk, h*d]");
    const int64_t tq = q.shape(0), tk = k.shape(0), hd = q.shape(1);
    Array out({tq, hd});
    std::vector<float> scratch(static_cast<size_t>(ops::attention_scratch_floats(ctx(), tq, tk, heads)));
    ops::attention(ctx(), q.data(), hd, k.data(), hd, v.data(), hd, out.mutable_data(), tq, tk, heads,
                   static_cast<int>(hd / heads), causal_offset, scratch.data());
    return out;
  }, py::arg("q"), py::arg("k"), py::arg("v"), py::arg("heads"), py::arg("causal_offset") = -1);
  o.def("embedding", [](Array table, py::array_t<int, py::array::c_style | py::array::forcecast> ids, Array pos) {
    need(table.ndim() == 2 && ids.ndim() == 1 && pos.ndim() == 2 && pos.shape(0) == ids.shape(0) &&
             pos.shape(1) == table.shape(1),
         "embedding: table [vocab, d], ids [n], pos [n, d]");
    for (py::ssize_t i = 0; i < ids.shape(0); ++i)
      need(ids.data()[i] >= 0 && ids.data()[i] < table.shape(0), "embedding: id out of range");
    Array out({ids.shape(0), table.shape(1)});
    ops::embedding(table.data(), ids.data(), ids.shape(0), table.shape(1), pos.data(), out.mutable_data());
    return out;
  });
  o.def("conv1d", [](Array x, Array w, Array b, int stride, int pad) {
    // x: [c_in, t_in] (channel-major), w: [c_out, c_in, kw] -> [t_out, c_out]
    need(x.ndim() == 2 && w.ndim() == 3 && w.shape(1) == x.shape(0) && b.size() == w.shape(0) && stride > 0 &&
             pad >= 0,
         "conv1d: x [c_in, t], w [c_out, c_in, kw], b [c_out]");
    const int64_t c_in = x.shape(0), t_in = x.shape(1), c_out = w.shape(0);
    const int kw = static_cast<int>(w.shape(2));
    const int64_t t_out = ops::conv1d_output_length(t_in, kw, stride, pad);
    need(t_out > 0, "conv1d: input shorter than the kernel");
    Array y({t_out, c_out});
    std::vector<float> col(static_cast<size_t>(t_out * c_in * kw));
    ops::conv1d(ctx(), x.data(), c_in, t_in, t_in, 1, w.data(), b.data(), c_out, kw, stride, pad, y.mutable_data(),
                col.data());
    return y;
  });
  o.def(
      "whisper_logits_rules",
      [](Array logits, std::vector<int> generated, int step, bool timestamps, int eot, int no_timestamps,
         int timestamp_begin, int timestamp_end, std::vector<int> suppress, std::vector<int> suppress_begin,
         int max_initial_timestamp_index) {
        // runtime::apply_whisper_logits_rules on one row of logits; returns the masked copy.
        need(logits.ndim() == 1, "whisper_logits_rules: logits [vocab]");
        const int vocab = static_cast<int>(logits.shape(0));
        need(step >= 0 && static_cast<size_t>(step) <= generated.size(), "whisper_logits_rules: step > len(generated)");
        if (timestamps)
          need(eot >= 0 && eot < timestamp_begin && timestamp_begin <= timestamp_end && timestamp_end < vocab &&
                   no_timestamps >= 0 && no_timestamps < vocab,
               "whisper_logits_rules: need 0 <= eot < timestamp_begin <= timestamp_end < vocab, no_timestamps < vocab");
        runtime::WhisperSpecialTokens sp;
        sp.eot = eot;
        sp.no_timestamps = no_timestamps;
        sp.timestamp_begin = timestamp_begin;
        sp.timestamp_end = timestamp_end;
        runtime::WindowOptions wo;
        wo.suppress_tokens = std::move(suppress);
        wo.suppress_tokens_begin = std::move(suppress_begin);
        wo.max_initial_timestamp_index = max_initial_timestamp_index;
        generated.resize(static_cast<size_t>(step));
        Array y(vocab);
        std::copy(logits.data(), logits.data() + vocab, y.mutable_data());
        runtime::apply_whisper_logits_rules(y.mutable_data(), vocab, step, generated, timestamps, sp, wo);
        return y;
      },
      py::arg("logits"), py::arg("generated"), py::arg("step"), py::arg("timestamps"), py::arg("eot"),
      py::arg("no_timestamps"), py::arg("timestamp_begin"), py::arg("timestamp_end"), py::arg("suppress"),
      py::arg("suppress_begin"), py::arg("max_initial_timestamp_index") = 50);
  o.def(
      "sample_tokens",
      [](Array logits, float temperature, int n, uint64_t seed) {
        // runtime::sample_token n times from one row of logits (log-softmaxed first, as the
        // sampling decoder does); draw i uses the random stream of candidate i.
        need(logits.ndim() == 1 && logits.shape(0) > 0 && n >= 0, "sample_tokens: logits [vocab], n >= 0");
        const int vocab = static_cast<int>(logits.shape(0));
        std::vector<float> row(logits.data(), logits.data() + vocab), scratch;
        runtime::log_softmax_rule_row(row.data(), vocab);
        py::array_t<int> out(n);
        for (int i = 0; i < n; ++i) {
          runtime::SampleRng rng(seed, static_cast<uint64_t>(i));
          out.mutable_data()[i] = runtime::sample_token(row.data(), vocab, temperature, rng, scratch);
        }
        return out;
      },
      py::arg("logits"), py::arg("temperature"), py::arg("n"), py::arg("seed") = 0);
  o.def(
      "sample_uniforms",
      [](int n, uint64_t seed) {
        // the first uniform of candidate i's random stream (the one sample_tokens' draw i uses)
        need(n >= 0, "sample_uniforms: n >= 0");
        py::array_t<double> out(n);
        for (int i = 0; i < n; ++i) out.mutable_data()[i] = runtime::SampleRng(seed, static_cast<uint64_t>(i)).uniform();
        return out;
      },
      py::arg("n"), py::arg("seed") = 0);
}

}  // namespace speechcore::bindings
