// Test hooks for the CUDA attention kernels (submodule _C.cuda_ops): numpy float32 buffers go to
// the device in the chosen dtype, outputs come back whole (poisoned first, so unwritten elements
// and writes outside the heads' columns show). Not part of the public SDK.
#include <cuda_runtime_api.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>
#include <vector>

#include "bindings.h"
#include "core/status.h"
#include "cuda_testing.h"
#include "speechcore_cuda/attention.h"
#include "speechcore_cuda/gemm.h"

namespace py = pybind11;

namespace speechcore::bindings {

namespace {
using cudatest::DeviceBuffer;
using cudatest::FloatArray;
using cudatest::IntArray;
using cudatest::Int64Array;

// A [batch, rows, ld] (or [rows, ld] = batch 1) float32 buffer on the device; `same` reuses the
// device copy of an earlier operand backed by the same numpy memory (fused QKV / KV buffers).
struct Operand {
  const DeviceBuffer* buf;
  int64_t batch, rows, ld;
};

Operand describe(const FloatArray& a, const DeviceBuffer& buf, const char* name) {
  need(a.ndim() == 2 || a.ndim() == 3, std::string(name) + ": expected [batch, rows, ld] or [rows, ld]");
  if (a.ndim() == 2) return Operand{&buf, 1, a.shape(0), a.shape(1)};
  return Operand{&buf, a.shape(0), a.shape(1), a.shape(2)};
}

const void* at(const Operand& o, int64_t col, cuda::DataType t) {
  return static_cast<const char*>(o.buf->get()) + col * static_cast<int64_t>(cuda::data_type_size(t));
}

// Milliseconds per call of `call` (enqueueing work on the legacy stream): one warm-up call,
// then `iters` calls between two events.
template <typename F>
float milliseconds_per_call(F&& call, int iters) {
  call();
  cudaEvent_t e0, e1;
  SC_CUDA_CHECK(cudaEventCreate(&e0));
  SC_CUDA_CHECK(cudaEventCreate(&e1));
  SC_CUDA_CHECK(cudaEventRecord(e0));
  for (int i = 0; i < iters; ++i) call();
  SC_CUDA_CHECK(cudaEventRecord(e1));
  SC_CUDA_CHECK(cudaEventSynchronize(e1));
  float ms = 0.f;
  SC_CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  return ms / iters;
}

// Uploads q, k, v, sharing device buffers between operands that are the same numpy memory.
struct Uploaded {
  DeviceBuffer qb, kb, vb;
  const DeviceBuffer *q, *k, *v;
};
void upload_qkv(Uploaded& u, const FloatArray& q, const FloatArray& k, const FloatArray& v, cuda::DataType t) {
  u.qb = cudatest::upload(q, t);
  u.q = &u.qb;
  if (k.data() == q.data() && k.size() == q.size()) {
    u.k = &u.qb;
  } else {
    u.kb = cudatest::upload(k, t);
    u.k = &u.kb;
  }
  if (v.data() == q.data() && v.size() == q.size()) {
    u.v = &u.qb;
  } else if (v.data() == k.data() && v.size() == k.size()) {
    u.v = u.k;
  } else {
    u.vb = cudatest::upload(v, t);
    u.v = &u.vb;
  }
}

int64_t batch_stride(const Operand& o, int64_t batch, const char* name) {
  need(o.batch == batch || o.batch == 1, std::string(name) + ": batch must match q or be 1 (shared)");
  return o.batch == 1 && batch > 1 ? 0 : o.rows * o.ld;
}

void fill_device(DeviceBuffer& b, int pattern) {
  if (b.bytes() > 0) SC_CUDA_CHECK(cudaMemset(b.get(), pattern, b.bytes()));
}

// A created stream, so the decode kernels run as in a model (programmatic dependent launch).
cudaStream_t decode_stream() {
  static cudaStream_t s = [] {
    cudaStream_t st = nullptr;
    SC_CUDA_CHECK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    return st;
  }();
  return s;
}

// The test hooks' OutputFold: w_out [d, d] (None: no fold) on the device and zeroed int64
// accumulators [rows, d], downloaded by result().
class Fold {
 public:
  Fold(const py::object& w_out, int64_t rows, int64_t d, cuda::DataType t) {
    if (w_out.is_none()) return;
    FloatArray w = w_out.cast<FloatArray>();
    need(w.ndim() == 2 && w.shape(0) == d && w.shape(1) == d, "w_out: expected [d, d]");
    w_ = cudatest::upload(w, t);
    acc_ = DeviceBuffer(static_cast<size_t>(rows * d) * sizeof(int64_t));
    fold_.w_out = w_.get();
    fold_.acc = acc_.as<int64_t>();
  }
  bool on() const { return fold_.w_out != nullptr; }
  const cuda::OutputFold* get() const { return on() ? &fold_ : nullptr; }
  void reset(cudaStream_t stream) {
    if (on()) SC_CUDA_CHECK(cudaMemsetAsync(acc_.get(), 0, acc_.bytes(), stream));
  }
  py::array_t<int64_t> result(int64_t rows, int64_t d) const { return cudatest::download_int64(acc_, {rows, d}); }

 private:
  DeviceBuffer w_, acc_;
  cuda::OutputFold fold_;
};
}  // namespace

void register_cuda_attention(py::module_& m) {
  m.def(
      "attention_prefill",
      [](FloatArray q, FloatArray k, FloatArray v, int heads, int head_dim, int64_t causal_offset,
         const std::string& dtype, int64_t q_col, int64_t k_col, int64_t v_col, py::object out_ld_obj,
         py::object tk_obj) {
        const cuda::DataType t = cudatest::parse_dtype(dtype);
        Uploaded u;
        upload_qkv(u, q, k, v, t);
        const Operand oq = describe(q, *u.q, "q"), ok = describe(k, *u.k, "k"), ov = describe(v, *u.v, "v");
        const int64_t batch = oq.batch, tq = oq.rows;
        need(ok.rows == ov.rows, "k and v must have the same number of rows");
        const int64_t tk = tk_obj.is_none() ? ok.rows : tk_obj.cast<int64_t>();
        need(tk <= ok.rows, "tk exceeds the rows of k/v");
        const int64_t width = static_cast<int64_t>(heads) * head_dim;
        need(q_col >= 0 && k_col >= 0 && v_col >= 0 && q_col + width <= oq.ld && k_col + width <= ok.ld &&
                 v_col + width <= ov.ld,
             "column offsets + heads * head_dim must fit the row length");
        const int64_t out_ld = out_ld_obj.is_none() ? width : out_ld_obj.cast<int64_t>();
        need(out_ld >= width, "out_ld < heads * head_dim");
        DeviceBuffer out = cudatest::poisoned(static_cast<size_t>(batch * tq * out_ld), t);
        cuda::attention_prefill(t, at(oq, q_col, t), oq.ld, oq.rows * oq.ld, at(ok, k_col, t), ok.ld,
                                batch_stride(ok, batch, "k"), at(ov, v_col, t), ov.ld, batch_stride(ov, batch, "v"),
                                out.get(), out_ld, tq * out_ld, static_cast<int>(batch), tq, tk, heads, head_dim,
                                causal_offset, nullptr);
        return cudatest::download(out, {batch, tq, out_ld}, t);
      },
      py::arg("q"), py::arg("k"), py::arg("v"), py::arg("heads"), py::arg("head_dim") = 64,
      py::arg("causal_offset") = -1, py::arg("dtype") = "float32", py::arg("q_col") = 0, py::arg("k_col") = 0,
      py::arg("v_col") = 0, py::arg("out_ld") = py::none(), py::arg("tk") = py::none(),
      "q [batch, tq, ldq], k/v [batch or 1, rows, ld] (float32 numpy, converted to dtype); head h of q at "
      "column q_col + h * head_dim (likewise k_col, v_col); tk defaults to the rows of k. Returns the whole "
      "poisoned-then-written output [batch, tq, out_ld] as float32.");

  m.def(
      "attention_decode",
      [](FloatArray q, FloatArray k, FloatArray v, IntArray kv_lengths, int heads, int head_dim,
         const std::string& dtype, int64_t q_col, int64_t k_col, int64_t v_col, py::object out_ld_obj,
         py::object kv_index_obj, py::object block_table_obj, int block_size, py::object max_kv_len_obj,
         int repeat, bool kv_static) {
        const cuda::DataType t = cudatest::parse_dtype(dtype);
        need(q.ndim() == 2, "q: expected [batch, ldq]");
        need(k.ndim() == 3 && v.ndim() == 3, "k/v: expected [batch or 1, max_kv_len, ld]");
        Uploaded u;
        upload_qkv(u, q, k, v, t);
        const int64_t batch = q.shape(0), ldq = q.shape(1);
        const Operand ok = describe(k, *u.k, "k"), ov = describe(v, *u.v, "v");
        need(ok.rows == ov.rows, "k and v must have the same number of rows");
        need(kv_lengths.ndim() == 1 && kv_lengths.shape(0) == batch, "kv_lengths: expected [batch] int32");
        const int64_t width = static_cast<int64_t>(heads) * head_dim;
        need(q_col >= 0 && k_col >= 0 && v_col >= 0 && q_col + width <= ldq && k_col + width <= ok.ld &&
                 v_col + width <= ov.ld,
             "column offsets + heads * head_dim must fit the row length");
        const int64_t out_ld = out_ld_obj.is_none() ? width : out_ld_obj.cast<int64_t>();
        need(out_ld >= width, "out_ld < heads * head_dim");
        DeviceBuffer lens = cudatest::upload_ints(kv_lengths);
        DeviceBuffer index;
        if (!kv_index_obj.is_none()) {
          IntArray kv_index = kv_index_obj.cast<IntArray>();
          need(kv_index.ndim() == 1 && kv_index.shape(0) == batch, "kv_index: expected [batch] int32");
          for (py::ssize_t i = 0; i < kv_index.size(); ++i)
            need(kv_index.data()[i] >= 0 && kv_index.data()[i] < k.shape(0) && kv_index.data()[i] < v.shape(0),
                 "kv_index out of range");
          index = cudatest::upload_ints(kv_index);
        }
        // paged: k/v are one pool of rows ([1, rows, ld]); block_table [batch, table_stride]
        DeviceBuffer table;
        cuda::PagedKV paged;
        const bool is_paged = !block_table_obj.is_none();
        if (is_paged) {
          IntArray bt = block_table_obj.cast<IntArray>();
          need(bt.ndim() == 2 && bt.shape(0) == batch, "block_table: expected [batch, table_stride] int32");
          need(ok.batch == 1 && ov.batch == 1, "paged k/v: expected one pool [1, rows, ld]");
          need(block_size >= 1, "block_size >= 1");
          for (py::ssize_t i = 0; i < bt.size(); ++i)
            need(bt.data()[i] >= 0 && (static_cast<int64_t>(bt.data()[i]) + 1) * block_size <= ok.rows,
                 "block_table entry out of the pool");
          table = cudatest::upload_ints(bt);
          paged.block_table = table.as<int32_t>();
          paged.table_stride = bt.shape(1);
          paged.block_size = block_size;
        }
        const int64_t max_kv_len = max_kv_len_obj.is_none() ? ok.rows : max_kv_len_obj.cast<int64_t>();
        DeviceBuffer out = cudatest::poisoned(static_cast<size_t>(batch * out_ld), t);
        const size_t scratch_bytes =
            cuda::attention_decode_scratch_bytes(static_cast<int>(batch), heads, head_dim, max_kv_len);
        DeviceBuffer scratch(scratch_bytes);
        fill_device(scratch, 0xFF);  // NaN: partials a split fails to write would show
        const cudaStream_t stream = decode_stream();
        SC_CUDA_CHECK(cudaDeviceSynchronize());  // uploads and fills (legacy stream) before `stream`
        cuda::attention_decode_scratch_init(scratch.get(), scratch_bytes, stream);
        const Operand oq{u.q, 1, batch, ldq};
        // with a kv_index the K/V sequences are addressed through it: any count, full stride
        const bool indexed = !kv_index_obj.is_none();
        const int64_t k_bs = is_paged ? 0 : indexed ? ok.rows * ok.ld : batch_stride(ok, batch, "k");
        const int64_t v_bs = is_paged ? 0 : indexed ? ov.rows * ov.ld : batch_stride(ov, batch, "v");
        need(repeat >= 1, "repeat >= 1");
        for (int r = 0; r < repeat; ++r) {  // the same scratch each time (merge counters reset)
          if (r > 0) SC_CUDA_CHECK(cudaMemsetAsync(out.get(), 0xFF, out.bytes(), stream));
          cuda::attention_decode(t, at(oq, q_col, t), ldq, ldq, at(ok, k_col, t), ok.ld, k_bs, at(ov, v_col, t),
                                 ov.ld, v_bs, out.get(), out_ld, out_ld,
                                 lens.as<int32_t>(), kv_index_obj.is_none() ? nullptr : index.as<int32_t>(),
                                 static_cast<int>(batch), heads, head_dim, max_kv_len,
                                 scratch.get(), stream, is_paged ? &paged : nullptr, kv_static);
        }
        return cudatest::download(out, {batch, out_ld}, t);
      },
      py::arg("q"), py::arg("k"), py::arg("v"), py::arg("kv_lengths"), py::arg("heads"), py::arg("head_dim") = 64,
      py::arg("dtype") = "float32", py::arg("q_col") = 0, py::arg("k_col") = 0, py::arg("v_col") = 0,
      py::arg("out_ld") = py::none(), py::arg("kv_index") = py::none(), py::arg("block_table") = py::none(),
      py::arg("block_size") = 16, py::arg("max_kv_len") = py::none(), py::arg("repeat") = 1,
      py::arg("kv_static") = false,
      "q [batch, ldq] (one query row per sequence), k/v [batch or 1, max_kv_len, ld], kv_lengths int32 "
      "[batch], kv_index int32 [batch] (K/V sequence of each row; None = identity). Paged: block_table int32 "
      "[batch, table_stride] of block_size-row blocks of the pool k/v [1, rows, ld], max_kv_len (default: pool "
      "rows). repeat: calls on the same scratch (output re-poisoned before each). kv_static: the first K/V "
      "loads before the programmatic-launch wait (not paged). Returns the whole poisoned-then-written output "
      "[batch, out_ld] as float32.");

  m.def(
      "cross_query_attention",
      [](FloatArray x, FloatArray ln_gamma, FloatArray ln_beta, FloatArray wq, py::object bq, FloatArray kv,
         IntArray kv_lengths, IntArray kv_index, int heads, const std::string& dtype, float ln_eps, int repeat,
         py::object w_out, py::object x_acc, py::object x_bias) {
        const cuda::DataType t = cudatest::parse_dtype(dtype);
        need(x.ndim() == 2, "x: expected [rows, d]");
        const int64_t rows = x.shape(0), d = x.shape(1);
        need(ln_gamma.ndim() == 1 && ln_gamma.shape(0) == d && ln_beta.ndim() == 1 && ln_beta.shape(0) == d,
             "ln_gamma, ln_beta: expected [d]");
        need(wq.ndim() == 2 && wq.shape(0) == d && wq.shape(1) == d, "wq: expected [d, d]");
        need(kv.ndim() == 3 && kv.shape(2) == 2 * d, "kv: expected [slots, max_kv_len, 2 d] (K | V)");
        need(kv_lengths.ndim() == 1 && kv_lengths.shape(0) == rows, "kv_lengths: expected [rows] int32");
        need(kv_index.ndim() == 1 && kv_index.shape(0) == rows, "kv_index: expected [rows] int32");
        for (py::ssize_t i = 0; i < kv_index.size(); ++i)
          need(kv_index.data()[i] >= 0 && kv_index.data()[i] < kv.shape(0), "kv_index out of range");
        need(repeat >= 1, "repeat >= 1");
        DeviceBuffer dx = cudatest::upload(x, t), dg = cudatest::upload(ln_gamma, t),
                     db = cudatest::upload(ln_beta, t), dw = cudatest::upload(wq, t), dkv = cudatest::upload(kv, t),
                     dbq;
        if (!bq.is_none()) dbq = cudatest::upload(bq.cast<FloatArray>(), t);
        DeviceBuffer lens = cudatest::upload_ints(kv_lengths), index = cudatest::upload_ints(kv_index);
        DeviceBuffer out = cudatest::poisoned(static_cast<size_t>(rows * d), t);
        const int64_t max_kv_len = kv.shape(1);
        Fold fold(w_out, rows, d, t);
        cuda::ResidualTerms xt;  // x read as x + x_acc * 2^-32 + x_bias
        DeviceBuffer dxa, dxb;
        if (!x_acc.is_none()) {
          Int64Array xa = x_acc.cast<Int64Array>();
          need(xa.ndim() == 2 && xa.shape(0) == rows && xa.shape(1) == d, "x_acc: expected int64 [rows, d]");
          dxa = cudatest::upload_int64(xa);
          xt.acc[0] = dxa.as<int64_t>();
          if (!x_bias.is_none()) {
            dxb = cudatest::upload(x_bias.cast<FloatArray>(), t);
            xt.bias[0] = dxb.get();
          }
          xt.terms = 1;
        }
        const cudaStream_t stream = decode_stream();
        SC_CUDA_CHECK(cudaDeviceSynchronize());  // uploads and fills (legacy stream) before `stream`
        const size_t es = cuda::data_type_size(t);
        for (int r = 0; r < repeat; ++r) {
          fold.reset(stream);
          cuda::cross_query_attention(t, dx.get(), dg.get(), db.get(), ln_eps, dw.get(),
                                      bq.is_none() ? nullptr : dbq.get(), dkv.get(),
                                      static_cast<const char*>(dkv.get()) + d * es, 2 * d, max_kv_len * 2 * d,
                                      index.as<int32_t>(), lens.as<int32_t>(), max_kv_len,
                                      fold.on() ? nullptr : out.get(), d, static_cast<int>(rows), static_cast<int>(d),
                                      heads, stream, &xt, fold.get());
        }
        if (fold.on()) return py::object(fold.result(rows, d));
        return py::object(cudatest::download(out, {rows, d}, t));
      },
      py::arg("x"), py::arg("ln_gamma"), py::arg("ln_beta"), py::arg("wq"), py::arg("bq"), py::arg("kv"),
      py::arg("kv_lengths"), py::arg("kv_index"), py::arg("heads"), py::arg("dtype") = "bfloat16",
      py::arg("ln_eps") = 1e-5f, py::arg("repeat") = 1, py::arg("w_out") = py::none(), py::arg("x_acc") = py::none(),
      py::arg("x_bias") = py::none(),
      "x [rows, d], wq [d, d], kv [slots, max_kv_len, 2 d] (K | V), kv_lengths and kv_index int32 [rows]: "
      "cuda::cross_query_attention (query product with its layer norm + attention, one kernel). Returns the "
      "poisoned-then-written output [rows, d] as float32; with w_out [d, d] (OutputFold) the int64 "
      "accumulators [rows, d] instead (zeroed before each repeat). x_acc int64 [rows, d] (+ x_bias [d]): x read "
      "through that residual term.");
  m.def(
      "self_qkv_attention",
      [](FloatArray x, FloatArray ln_gamma, FloatArray ln_beta, FloatArray w, py::object bias, FloatArray cache,
         IntArray kv_rows, IntArray kv_lengths, py::object kv_index_obj, int heads, const std::string& dtype,
         int64_t max_kv_len, py::object block_table_obj, int block_size, float ln_eps, int repeat, py::object w_out) {
        const cuda::DataType t = cudatest::parse_dtype(dtype);
        need(x.ndim() == 2, "x: expected [rows, d]");
        const int64_t rows = x.shape(0), d = x.shape(1);
        need(ln_gamma.ndim() == 1 && ln_gamma.shape(0) == d && ln_beta.ndim() == 1 && ln_beta.shape(0) == d,
             "ln_gamma, ln_beta: expected [d]");
        need(w.ndim() == 2 && w.shape(0) == 3 * d && w.shape(1) == d, "w: expected [3 d, d]");
        need(cache.ndim() == 2 && cache.shape(1) == 2 * d, "cache: expected [cache rows, 2 d] (K | V)");
        need(kv_rows.ndim() == 1 && kv_rows.shape(0) == rows && kv_lengths.ndim() == 1 && kv_lengths.shape(0) == rows,
             "kv_rows, kv_lengths: expected [rows] int32");
        for (py::ssize_t i = 0; i < rows; ++i)
          need(kv_rows.data()[i] >= 0 && kv_rows.data()[i] < cache.shape(0), "kv_rows out of range");
        need(repeat >= 1, "repeat >= 1");
        DeviceBuffer dx = cudatest::upload(x, t), dg = cudatest::upload(ln_gamma, t),
                     db = cudatest::upload(ln_beta, t), dw = cudatest::upload(w, t), dc = cudatest::upload(cache, t),
                     dbias, index, table;
        if (!bias.is_none()) dbias = cudatest::upload(bias.cast<FloatArray>(), t);
        DeviceBuffer drows = cudatest::upload_ints(kv_rows), lens = cudatest::upload_ints(kv_lengths);
        cuda::PagedKV paged;
        if (!block_table_obj.is_none()) {
          IntArray bt = block_table_obj.cast<IntArray>();
          need(bt.ndim() == 2 && bt.shape(0) == rows, "block_table: expected [rows, table_stride] int32");
          for (py::ssize_t i = 0; i < bt.size(); ++i)
            need(bt.data()[i] >= 0 && (static_cast<int64_t>(bt.data()[i]) + 1) * block_size <= cache.shape(0),
                 "block_table entry out of the cache");
          table = cudatest::upload_ints(bt);
          paged.block_table = table.as<int32_t>();
          paged.table_stride = bt.shape(1);
          paged.block_size = block_size;
        } else {
          IntArray kv_index = kv_index_obj.cast<IntArray>();
          need(kv_index.ndim() == 1 && kv_index.shape(0) == rows, "kv_index: expected [rows] int32");
          for (py::ssize_t i = 0; i < rows; ++i)
            need(kv_index.data()[i] >= 0 && (kv_index.data()[i] + 1) * max_kv_len <= cache.shape(0),
                 "kv_index out of the cache");
          index = cudatest::upload_ints(kv_index);
        }
        DeviceBuffer out = cudatest::poisoned(static_cast<size_t>(rows * d), t);
        Fold fold(w_out, rows, d, t);
        const cudaStream_t stream = decode_stream();
        SC_CUDA_CHECK(cudaDeviceSynchronize());  // uploads and fills (legacy stream) before `stream`
        for (int r = 0; r < repeat; ++r) {
          fold.reset(stream);
          cuda::self_qkv_attention(t, dx.get(), dg.get(), db.get(), ln_eps, dw.get(),
                                   bias.is_none() ? nullptr : dbias.get(), dc.get(), drows.as<int32_t>(),
                                   lens.as<int32_t>(), block_table_obj.is_none() ? index.as<int32_t>() : nullptr,
                                   &paged, max_kv_len, fold.on() ? nullptr : out.get(), d, static_cast<int>(rows),
                                   static_cast<int>(d), heads, stream, fold.get());
        }
        py::object first = fold.on() ? py::object(fold.result(rows, d))
                                     : py::object(cudatest::download(out, {rows, d}, t));
        return py::make_tuple(first, cudatest::download(dc, {cache.shape(0), 2 * d}, t));
      },
      py::arg("x"), py::arg("ln_gamma"), py::arg("ln_beta"), py::arg("w"), py::arg("bias"), py::arg("cache"),
      py::arg("kv_rows"), py::arg("kv_lengths"), py::arg("kv_index"), py::arg("heads"), py::arg("dtype") = "bfloat16",
      py::arg("max_kv_len") = 448, py::arg("block_table") = py::none(), py::arg("block_size") = 16,
      py::arg("ln_eps") = 1e-5f, py::arg("repeat") = 1, py::arg("w_out") = py::none(),
      "x [rows, d], w [3 d, d], cache [cache rows, 2 d] (K | V), kv_rows / kv_lengths int32 [rows], kv_index "
      "int32 [rows] (contiguous: row j of a sequence at kv_index * max_kv_len + j) or block_table [rows, stride] "
      "(paged): cuda::self_qkv_attention. Returns (out [rows, d], the cache after) as float32; with w_out [d, d] "
      "(OutputFold) the int64 accumulators [rows, d] in place of out (zeroed before each repeat).");
  m.def("self_qkv_attention_supported",
        [](const std::string& dtype, int d, int heads, int64_t max_kv_len) {
          return cuda::self_qkv_attention_supported(cudatest::parse_dtype(dtype), d, heads, max_kv_len);
        },
        py::arg("dtype"), py::arg("d"), py::arg("heads"), py::arg("max_kv_len"));
  m.def("cross_query_attention_supported",
        [](const std::string& dtype, int d, int heads, int64_t max_kv_len) {
          return cuda::cross_query_attention_supported(cudatest::parse_dtype(dtype), d, heads, max_kv_len);
        },
        py::arg("dtype"), py::arg("d"), py::arg("heads"), py::arg("max_kv_len"));

  m.def(
      "attention_decode_split",
      [](int batch, int heads, int64_t max_kv_len) {
        const cuda::AttentionDecodeSplit s = cuda::attention_decode_split(batch, heads, max_kv_len);
        return py::make_tuple(s.splits, s.chunk);
      },
      py::arg("batch"), py::arg("heads"), py::arg("max_kv_len"), "(splits, chunk) attention_decode uses");
  m.def("attention_decode_scratch_bytes", &cuda::attention_decode_scratch_bytes, py::arg("batch"),
        py::arg("heads"), py::arg("head_dim"), py::arg("max_kv_len"));

  m.def(
      "attention_absorbed",
      [](FloatArray qa, FloatArray x, int heads, const std::string& dtype, py::object kv_lengths_obj,
         py::object kv_index_obj, int rows_per_slot, float scale, bool x_static, int repeat) {
        const cuda::DataType t = cudatest::parse_dtype(dtype);
        need(qa.ndim() == 2, "qa: expected [rows, heads * dim]");
        need(x.ndim() == 3, "x: expected [slots, max_kv_len, dim]");
        const int64_t rows = qa.shape(0), slots = x.shape(0), max_len = x.shape(1), dim = x.shape(2);
        need(qa.shape(1) == heads * dim, "qa: expected [rows, heads * dim]");
        DeviceBuffer dq = cudatest::upload(qa, t), dx = cudatest::upload(x, t), lens, index;
        if (!kv_lengths_obj.is_none()) {
          IntArray l = kv_lengths_obj.cast<IntArray>();
          need(l.ndim() == 1 && l.shape(0) == rows, "kv_lengths: expected [rows] int32");
          lens = cudatest::upload_ints(l);
        }
        if (!kv_index_obj.is_none()) {
          IntArray ix = kv_index_obj.cast<IntArray>();
          need(ix.ndim() == 1 && ix.shape(0) == rows, "kv_index: expected [rows] int32");
          for (py::ssize_t i = 0; i < ix.size(); ++i) need(ix.data()[i] >= 0 && ix.data()[i] < slots, "kv_index out of range");
          index = cudatest::upload_ints(ix);
        } else {
          need(rows_per_slot >= 1 && (rows + rows_per_slot - 1) / rows_per_slot <= slots, "rows_per_slot: too few slots");
        }
        DeviceBuffer out = cudatest::poisoned(static_cast<size_t>(rows * heads * dim), t);
        const size_t scratch_bytes =
            cuda::attention_absorbed_scratch_bytes(static_cast<int>(rows), heads, static_cast<int>(dim), max_len);
        DeviceBuffer scratch(scratch_bytes);
        fill_device(scratch, 0xFF);  // NaN: partials a split fails to write would show
        const cudaStream_t stream = decode_stream();
        SC_CUDA_CHECK(cudaDeviceSynchronize());
        need(repeat >= 1, "repeat >= 1");
        for (int r = 0; r < repeat; ++r)
          cuda::attention_absorbed(t, dq.get(), heads * dim, dx.get(), max_len * dim, out.get(), heads * dim,
                                   kv_lengths_obj.is_none() ? nullptr : lens.as<int32_t>(),
                                   kv_index_obj.is_none() ? nullptr : index.as<int32_t>(), rows_per_slot,
                                   static_cast<int>(rows), heads, static_cast<int>(dim), max_len, scale,
                                   scratch.get(), stream, x_static);
        SC_CUDA_CHECK(cudaStreamSynchronize(stream));
        return cudatest::download(out, {rows, heads * dim}, t);
      },
      py::arg("qa"), py::arg("x"), py::arg("heads"), py::arg("dtype") = "bfloat16", py::arg("kv_lengths") = py::none(),
      py::arg("kv_index") = py::none(), py::arg("rows_per_slot") = 1, py::arg("scale") = 0.125f,
      py::arg("x_static") = false, py::arg("repeat") = 1,
      "Absorbed cross-attention: qa [rows, heads * dim], x [slots, max_kv_len, dim]; row r reads slot "
      "kv_index[r] (None: r // rows_per_slot), kv_lengths[r] keys (None: all). Returns float32 [rows, heads * dim].");
  m.def(
      "attention_absorbed_split",
      [](int rows, int64_t max_kv_len) {
        const cuda::AttentionDecodeSplit s = cuda::attention_absorbed_split(rows, max_kv_len);
        return py::make_tuple(s.splits, s.chunk);
      },
      py::arg("rows"), py::arg("max_kv_len"));
  m.def("attention_absorbed_supported",
        [](const std::string& dtype, int heads, int dim) {
          return cuda::attention_absorbed_supported(cudatest::parse_dtype(dtype), heads, dim);
        },
        py::arg("dtype"), py::arg("heads"), py::arg("dim"));
  m.def(
      "attention_absorbed_benchmark",
      [](int rows, int heads, int dim, int64_t t, const std::string& dtype, int iters, bool products) {
        // rows queries, each against its own slot of t keys (timing only). products: also the two
        // per-head products around the kernel (q [rows, heads * 64] -> qa through W_k; the
        // attention over X -> [rows, heads * 64] through W_v), as a decoder layer runs them.
        // Returns ms per call.
        const cuda::DataType ty = cudatest::parse_dtype(dtype);
        need(iters >= 1, "iters >= 1");
        const int64_t es = cuda::data_type_size(ty), hd = 64, d = heads * hd;
        DeviceBuffer qa(static_cast<size_t>(rows * heads * dim * es)), x(static_cast<size_t>(rows * t * dim * es)),
            out(static_cast<size_t>(rows * heads * dim * es));
        DeviceBuffer scratch(cuda::attention_absorbed_scratch_bytes(rows, heads, dim, t) + 16);
        DeviceBuffer q, w, att;
        static cuda::GemmRunner gemm;
        if (products) {
          q = DeviceBuffer(static_cast<size_t>(rows * d * es));
          w = DeviceBuffer(static_cast<size_t>(2 * d * dim * es));  // W_k rows, then W_v rows
          att = DeviceBuffer(static_cast<size_t>(rows * d * es));
          fill_device(q, 0x3C);
          fill_device(w, 0x3C);
        }
        fill_device(qa, 0x3C);
        fill_device(x, 0x3C);
        auto call = [&] {
          if (products)
            gemm.batched(ty, q.get(), d, hd, w.get(), dim, hd * dim, true, qa.get(), heads * dim, dim, rows, dim, hd,
                         heads, nullptr);
          cuda::attention_absorbed(ty, qa.get(), heads * dim, x.get(), t * dim, out.get(), heads * dim, nullptr, nullptr,
                                   1, rows, heads, dim, t, 0.125f, scratch.get(), nullptr, true);
          if (products)
            gemm.batched(ty, out.get(), heads * dim, dim, static_cast<const char*>(w.get()) + d * dim * es, dim,
                         hd * dim, false, att.get(), d, hd, rows, hd, dim, heads, nullptr);
        };
        return milliseconds_per_call(call, iters);
      },
      py::arg("rows"), py::arg("heads"), py::arg("dim"), py::arg("t") = 1500, py::arg("dtype") = "bfloat16",
      py::arg("iters") = 10, py::arg("products") = false);
  m.def(
      "attention_decode_benchmark",
      [](int rows, int heads, int head_dim, int64_t t, const std::string& dtype, int iters) {
        // The K/V path's cross-attention of a decoder layer: rows queries, each against its own
        // slot of t keys in a fused [t, 2 * heads * head_dim] K | V layout, K/V loads before the
        // dependency wait (timing only). Returns ms per call.
        const cuda::DataType ty = cudatest::parse_dtype(dtype);
        need(iters >= 1, "iters >= 1");
        const int64_t es = cuda::data_type_size(ty), d = static_cast<int64_t>(heads) * head_dim;
        DeviceBuffer q(static_cast<size_t>(rows * d * es)), kv(static_cast<size_t>(rows * t * 2 * d * es)),
            out(static_cast<size_t>(rows * d * es)), lens(static_cast<size_t>(rows) * 4);
        const size_t sb = cuda::attention_decode_scratch_bytes(rows, heads, head_dim, t);
        DeviceBuffer scratch(sb + 16);
        fill_device(q, 0x3C);
        fill_device(kv, 0x3C);
        const std::vector<int32_t> host_lens(static_cast<size_t>(rows), static_cast<int32_t>(t));
        SC_CUDA_CHECK(cudaMemcpy(lens.get(), host_lens.data(), host_lens.size() * 4, cudaMemcpyHostToDevice));
        cuda::attention_decode_scratch_init(scratch.get(), sb, nullptr);
        const char* k = static_cast<const char*>(kv.get());
        auto call = [&] {
          cuda::attention_decode(ty, q.get(), d, d, k, 2 * d, t * 2 * d, k + d * es, 2 * d, t * 2 * d, out.get(), d, d,
                                 lens.as<int32_t>(), nullptr, rows, heads, head_dim, t, scratch.get(), nullptr, nullptr,
                                 true);
        };
        return milliseconds_per_call(call, iters);
      },
      py::arg("rows"), py::arg("heads"), py::arg("head_dim") = 64, py::arg("t") = 1500,
      py::arg("dtype") = "bfloat16", py::arg("iters") = 10);
  m.def(
      "attention_prefill_benchmark",
      [](int batch, int64_t t, int heads, int head_dim, int64_t causal_offset, const std::string& dtype,
         int iters) {
        // Encoder-style fused QKV [batch, t, 3 * heads * head_dim] -> out [batch, t, heads * head_dim];
        // inputs are a constant byte pattern (timing only). Returns milliseconds per call.
        const cuda::DataType ty = cudatest::parse_dtype(dtype);
        need(iters >= 1, "iters >= 1");
        const int64_t d = static_cast<int64_t>(heads) * head_dim, es = cuda::data_type_size(ty);
        DeviceBuffer qkv(static_cast<size_t>(batch * t * 3 * d * es)), out(static_cast<size_t>(batch * t * d * es));
        fill_device(qkv, 0x3C);
        const char* base = static_cast<const char*>(qkv.get());
        auto call = [&] {
          cuda::attention_prefill(ty, base, 3 * d, t * 3 * d, base + d * es, 3 * d, t * 3 * d, base + 2 * d * es,
                                  3 * d, t * 3 * d, out.get(), d, t * d, batch, t, t, heads, head_dim, causal_offset,
                                  nullptr);
        };
        return milliseconds_per_call(call, iters);
      },
      py::arg("batch"), py::arg("t"), py::arg("heads"), py::arg("head_dim") = 64, py::arg("causal_offset") = -1,
      py::arg("dtype") = "bfloat16", py::arg("iters") = 10);
}

}  // namespace speechcore::bindings
