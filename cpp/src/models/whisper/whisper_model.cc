#include "models/whisper/whisper_model.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/status.h"

namespace speechcore::models::whisper {

namespace {
Tensor buffer(int64_t rows, int64_t cols) { return Tensor::empty({rows, cols}, DType::kFloat32); }

// Decoder inputs are checked before any state changes (kInvalidArgument).
void check_token_ids(const int* tokens, int64_t n, int vocab_size) {
  for (int64_t i = 0; i < n; ++i)
    SC_CHECK(tokens[i] >= 0 && tokens[i] < vocab_size, ErrorCode::kInvalidArgument, "token id ", tokens[i],
             " is outside the vocabulary (", vocab_size, ")");
}

// y[m, n] = x[m, k] w[n, k]^T (+ bias) (+ y if accumulate) for the few rows of lock-step
// decoding (beams, samples): a GEMM would pack all of w for a handful of rows, so instead each
// thread walks blocks of w small enough to stay in cache and runs one matrix-vector product
// per row on each block: w is read from memory once.
void linear_rows(const ops::Context& cx, const float* x, const float* w, const float* bias, float* y, int64_t m,
                 int64_t n, int64_t k, bool accumulate = false) {
  if (m == 1 || m > 16 || cx.pool == nullptr) return ops::linear(cx, x, w, bias, y, m, n, k, accumulate);
  const int64_t block = std::max<int64_t>(16, ((32 * 1024) / k) / 16 * 16);  // ~128 KiB of w
  const int64_t blocks = (n + block - 1) / block;
  const int threads = cx.pool->num_threads();
  const ops::Context one{nullptr};  // single-threaded products inside a block
  cx.pool->parallel_for(blocks, (blocks + threads - 1) / threads, [&](int64_t b, int64_t e) {
    for (int64_t blk = b; blk < e; ++blk) {
      const int64_t n0 = blk * block, nb = std::min(n, n0 + block) - n0;
      for (int64_t i = 0; i < m; ++i)
        ops::linear(one, x + i * k, w + n0 * k, bias ? bias + n0 : nullptr, y + i * n + n0, 1, nb, k, accumulate);
    }
  });
}
}  // namespace

WhisperModel::WhisperModel(WhisperWeights weights, int threads)
    : weights_(std::move(weights)),
      pool_(std::make_unique<core::ThreadPool>(threads)) {}

CrossKV WhisperModel::encode(const float* mel) const {
  encoder_passes_.fetch_add(1, std::memory_order_relaxed);
  const WhisperConfig& c = weights_.config;
  const ops::Context cx = ctx();
  const int64_t d = c.d_model, t_in = n_frames(), t = c.n_audio_ctx;
  const int heads = c.encoder_heads, hd = c.d_model / c.encoder_heads;

  // Activations live in one arena released on return; only the cross K/V outlive the call.
  core::Workspace ws(core::default_allocator(Device::kCPU));
  auto scratch = [&](int64_t rows, int64_t cols) { return ws.tensor({rows, cols}, DType::kFloat32); };
  // Conv stem: [n_mels, 3000] -> [3000, d] -> [1500, d], GELU after each conv.
  Tensor h1 = scratch(t_in, d);
  {
    Tensor col = scratch(t_in, c.n_mels * 3);
    ops::conv1d(cx, mel, c.n_mels, t_in, /*cstride=*/t_in, /*tstride=*/1, weights_.conv1_w.data<float>(),
                weights_.conv1_b.data<float>(), d, 3, 1, 1, h1.data<float>(), col.data<float>());
  }
  ops::gelu(cx, h1.data<float>(), h1.numel());
  const int64_t t2 = ops::conv1d_output_length(t_in, 3, 2, 1);
  SC_ASSERT(t2 == t);
  Tensor x = scratch(t, d);
  {
    Tensor col = scratch(t, d * 3);
    ops::conv1d(cx, h1.data<float>(), d, t_in, /*cstride=*/1, /*tstride=*/d, weights_.conv2_w.data<float>(),
                weights_.conv2_b.data<float>(), d, 3, 2, 1, x.data<float>(), col.data<float>());
  }
  ops::gelu(cx, x.data<float>(), x.numel());
  ops::add(cx, weights_.enc_pos.data<float>(), x.data<float>(), t * d);

  Tensor h = scratch(t, d);
  Tensor qkv = scratch(t, 3 * d);
  Tensor att = scratch(t, d);
  Tensor ff = scratch(t, 4 * d);
  Tensor scores = scratch(ops::attention_scratch_floats(cx, t, t, heads), 1);
  float* X = x.data<float>();
  for (const EncoderLayer& L : weights_.enc_layers) {
    const AttentionWeights& A = L.self_attn;
    ops::layer_norm(cx, X, A.ln_gamma.data<float>(), A.ln_beta.data<float>(), h.data<float>(), t, d);
    ops::linear(cx, h.data<float>(), A.qkv_w.data<float>(), A.qkv_b.data<float>(), qkv.data<float>(), t, 3 * d, d);
    const float* Q = qkv.data<float>();
    ops::attention(cx, Q, 3 * d, Q + d, 3 * d, Q + 2 * d, 3 * d, att.data<float>(), t, t, heads, hd, -1,
                   scores.data<float>());
    ops::linear(cx, att.data<float>(), A.out_w.data<float>(), A.out_b.data<float>(), X, t, d, d, true);
    const FfnWeights& F = L.ffn;
    ops::layer_norm(cx, X, F.ln_gamma.data<float>(), F.ln_beta.data<float>(), h.data<float>(), t, d);
    ops::linear(cx, h.data<float>(), F.fc1_w.data<float>(), F.fc1_b.data<float>(), ff.data<float>(), t, 4 * d, d);
    ops::gelu(cx, ff.data<float>(), ff.numel());
    ops::linear(cx, ff.data<float>(), F.fc2_w.data<float>(), F.fc2_b.data<float>(), X, t, d, 4 * d, true);
  }
  ops::layer_norm(cx, X, weights_.enc_ln_gamma.data<float>(), weights_.enc_ln_beta.data<float>(), h.data<float>(), t, d);

  CrossKV out;
  out.kv.reserve(weights_.dec_layers.size());
  for (const DecoderLayer& L : weights_.dec_layers) {
    Tensor kv = buffer(t, 2 * d);
    ops::linear(cx, h.data<float>(), L.cross_attn.kv_w.data<float>(), L.cross_attn.kv_b.data<float>(),
                kv.data<float>(), t, 2 * d, d);
    out.kv.push_back(std::move(kv));
  }
  return out;
}

DecoderState WhisperModel::new_state() const {
  const WhisperConfig& c = weights_.config;
  DecoderState s;
  for (size_t i = 0; i < weights_.dec_layers.size(); ++i) {
    s.k.push_back(buffer(c.n_text_ctx, c.d_model));
    s.v.push_back(buffer(c.n_text_ctx, c.d_model));
  }
  s.workspace = std::make_unique<core::Workspace>(core::default_allocator(Device::kCPU));
  return s;
}

void WhisperModel::decode(DecoderState& state, const CrossKV& cross, const int* tokens, int n,
                          const std::vector<int>& logit_rows, float* logits, CrossAttentionCapture* capture) const {
  const WhisperConfig& c = weights_.config;
  const ops::Context cx = ctx();
  const int64_t d = c.d_model, p0 = state.length, t_enc = c.n_audio_ctx;
  const int heads = c.decoder_heads, hd = c.d_model / c.decoder_heads;
  SC_CHECK(n > 0 && p0 + n <= c.n_text_ctx, ErrorCode::kInvalidArgument, "decoder sequence of ", p0 + n,
           " tokens exceeds the model's ", c.n_text_ctx, " positions");
  SC_ASSERT(cross.kv.size() == weights_.dec_layers.size());

  check_token_ids(tokens, n, c.vocab_size);
  core::Workspace& ws = *state.workspace;
  ws.reset();
  auto scratch = [&](int64_t rows, int64_t cols) { return ws.tensor({rows, cols}, DType::kFloat32); };
  Tensor x = scratch(n, d);
  float* X = x.data<float>();
  ops::embedding(weights_.tok_emb.data<float>(), tokens, n, d, weights_.dec_pos.data<float>() + p0 * d, X);
  Tensor h = scratch(n, d);
  Tensor qkv = scratch(n, 3 * d);
  Tensor att = scratch(n, d);
  Tensor ff = scratch(n, 4 * d);
  Tensor scores = scratch(std::max(ops::attention_scratch_floats(cx, n, p0 + n, heads),
                                   ops::attention_scratch_floats(cx, n, t_enc, heads)), 1);
  if (capture != nullptr) {
    for (const auto& [layer, head] : capture->heads)
      SC_CHECK(layer >= 0 && layer < static_cast<int>(weights_.dec_layers.size()) && head >= 0 && head < heads,
               ErrorCode::kInvalidArgument, "alignment head (", layer, ", ", head, ") is outside the decoder (",
               weights_.dec_layers.size(), " layers of ", heads, " heads)");
    capture->scores.assign(capture->heads.size() * static_cast<size_t>(n) * t_enc, 0.0f);
  }

  for (size_t li = 0; li < weights_.dec_layers.size(); ++li) {
    const DecoderLayer& L = weights_.dec_layers[li];
    // masked self-attention over the cache
    const AttentionWeights& S = L.self_attn;
    ops::layer_norm(cx, X, S.ln_gamma.data<float>(), S.ln_beta.data<float>(), h.data<float>(), n, d);
    ops::linear(cx, h.data<float>(), S.qkv_w.data<float>(), S.qkv_b.data<float>(), qkv.data<float>(), n, 3 * d, d);
    float* K = state.k[li].data<float>();
    float* V = state.v[li].data<float>();
    for (int i = 0; i < n; ++i) {
      std::memcpy(K + (p0 + i) * d, qkv.data<float>() + i * 3 * d + d, sizeof(float) * d);
      std::memcpy(V + (p0 + i) * d, qkv.data<float>() + i * 3 * d + 2 * d, sizeof(float) * d);
    }
    ops::attention(cx, qkv.data<float>(), 3 * d, K, d, V, d, att.data<float>(), n, p0 + n, heads, hd, p0,
                   scores.data<float>());
    ops::linear(cx, att.data<float>(), S.out_w.data<float>(), S.out_b.data<float>(), X, n, d, d, true);
    // cross-attention over the window's encoder output
    const AttentionWeights& C = L.cross_attn;
    ops::layer_norm(cx, X, C.ln_gamma.data<float>(), C.ln_beta.data<float>(), h.data<float>(), n, d);
    ops::linear(cx, h.data<float>(), C.qkv_w.data<float>(), C.qkv_b.data<float>(), qkv.data<float>(), n, d, d);
    const float* KV = cross.kv[li].data<float>();
    ops::attention(cx, qkv.data<float>(), d, KV, 2 * d, KV + d, 2 * d, att.data<float>(), n, t_enc, heads, hd, -1,
                   scores.data<float>());
    if (capture != nullptr) capture_cross_scores(*capture, static_cast<int>(li), qkv.data<float>(), KV, n);
    ops::linear(cx, att.data<float>(), C.out_w.data<float>(), C.out_b.data<float>(), X, n, d, d, true);
    // feed-forward
    const FfnWeights& F = L.ffn;
    ops::layer_norm(cx, X, F.ln_gamma.data<float>(), F.ln_beta.data<float>(), h.data<float>(), n, d);
    ops::linear(cx, h.data<float>(), F.fc1_w.data<float>(), F.fc1_b.data<float>(), ff.data<float>(), n, 4 * d, d);
    ops::gelu(cx, ff.data<float>(), n * 4 * d);
    ops::linear(cx, ff.data<float>(), F.fc2_w.data<float>(), F.fc2_b.data<float>(), X, n, d, 4 * d, true);
  }
  state.length = static_cast<int>(p0 + n);

  if (logit_rows.empty()) return;
  const int64_t m = static_cast<int64_t>(logit_rows.size());
  Tensor rows = scratch(m, d);
  for (int64_t r = 0; r < m; ++r) {
    SC_ASSERT(logit_rows[r] >= 0 && logit_rows[r] < n);
    ops::layer_norm(cx, X + logit_rows[r] * d, weights_.dec_ln_gamma.data<float>(), weights_.dec_ln_beta.data<float>(),
                    rows.data<float>() + r * d, 1, d);
  }
  ops::linear(cx, rows.data<float>(), weights_.tok_emb.data<float>(), nullptr, logits, m, c.vocab_size, d);
}

void WhisperModel::capture_cross_scores(CrossAttentionCapture& capture, int layer, const float* q, const float* kv,
                                        int64_t n) const {
  const WhisperConfig& c = weights_.config;
  const ops::Context cx = ctx();
  const int64_t d = c.d_model, t_enc = c.n_audio_ctx, hd = c.d_model / c.decoder_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  std::vector<float> qh(static_cast<size_t>(n * hd)), kh(static_cast<size_t>(t_enc * hd));
  for (size_t i = 0; i < capture.heads.size(); ++i) {
    if (capture.heads[i].first != layer) continue;
    const int64_t off = capture.heads[i].second * hd;
    for (int64_t r = 0; r < n; ++r)  // q: [n, d] (the cross query), scaled as the attention does
      for (int64_t j = 0; j < hd; ++j) qh[r * hd + j] = q[r * d + off + j] * scale;
    for (int64_t r = 0; r < t_enc; ++r)  // k: [t_enc, 2d] (K | V)
      std::memcpy(kh.data() + r * hd, kv + r * 2 * d + off, sizeof(float) * hd);
    ops::linear(cx, qh.data(), kh.data(), nullptr, capture.scores.data() + i * n * t_enc, n, t_enc, hd);
  }
}

BatchDecoderState WhisperModel::new_batch_state(int capacity, int positions) const {
  const WhisperConfig& c = weights_.config;
  SC_CHECK(capacity >= 1 && positions >= 1 && positions <= c.n_text_ctx, ErrorCode::kInvalidArgument,
           "a batch decoder state needs at least one row of 1 to ", c.n_text_ctx, " positions");
  BatchDecoderState s;
  s.capacity = capacity;
  s.positions = positions;
  for (size_t i = 0; i < weights_.dec_layers.size(); ++i) {
    s.k.push_back(buffer(static_cast<int64_t>(capacity) * positions, c.d_model));
    s.v.push_back(buffer(static_cast<int64_t>(capacity) * positions, c.d_model));
  }
  s.workspace = std::make_unique<core::Workspace>(core::default_allocator(Device::kCPU));
  return s;
}

void WhisperModel::broadcast(const DecoderState& from, BatchDecoderState& to, int rows) const {
  const WhisperConfig& c = weights_.config;
  SC_ASSERT(rows >= 1 && rows <= to.capacity && from.k.size() == to.k.size() && from.length <= to.positions);
  const size_t row_floats = static_cast<size_t>(to.positions) * c.d_model;
  const size_t used = static_cast<size_t>(from.length) * c.d_model;
  for (size_t li = 0; li < to.k.size(); ++li) {
    for (int r = 0; r < rows; ++r) {
      std::memcpy(to.k[li].data<float>() + r * row_floats, from.k[li].data<float>(), sizeof(float) * used);
      std::memcpy(to.v[li].data<float>() + r * row_floats, from.v[li].data<float>(), sizeof(float) * used);
    }
  }
  to.rows = rows;
  to.length = from.length;
}

void WhisperModel::reorder(BatchDecoderState& s, const std::vector<int>& origins) const {
  const WhisperConfig& c = weights_.config;
  const int n = static_cast<int>(origins.size());
  SC_ASSERT(n >= 1 && n <= s.capacity);
  for (int o : origins) SC_ASSERT(o >= 0 && o < s.rows);
  // A source row that is itself overwritten is saved first.
  std::vector<int> slot(static_cast<size_t>(s.rows), -1);
  int saved_rows = 0;
  for (int i = 0; i < n; ++i) {
    const int o = origins[i];
    if (o == i) continue;
    if (o < n && origins[o] != o && slot[o] < 0) slot[o] = saved_rows++;
  }
  const size_t row_floats = static_cast<size_t>(s.positions) * c.d_model;
  const size_t used = static_cast<size_t>(s.length) * c.d_model;
  if (s.saved.size() < saved_rows * used) s.saved.resize(saved_rows * used);
  for (size_t li = 0; li < s.k.size(); ++li) {
    for (Tensor* t : {&s.k[li], &s.v[li]}) {
      float* base = t->data<float>();
      for (int r = 0; r < s.rows; ++r)
        if (slot[r] >= 0) std::memcpy(s.saved.data() + slot[r] * used, base + r * row_floats, sizeof(float) * used);
      for (int i = 0; i < n; ++i) {
        const int o = origins[i];
        if (o == i) continue;
        const float* src = slot[o] >= 0 ? s.saved.data() + slot[o] * used : base + o * row_floats;
        std::memcpy(base + i * row_floats, src, sizeof(float) * used);
      }
    }
  }
  s.rows = n;
}

void WhisperModel::decode_rows(BatchDecoderState& state, const CrossKV& cross, const int* tokens,
                               float* logits) const {
  const WhisperConfig& c = weights_.config;
  const ops::Context cx = ctx();
  const int64_t d = c.d_model, p0 = state.length, t_enc = c.n_audio_ctx, n = state.rows;
  const int heads = c.decoder_heads, hd = c.d_model / c.decoder_heads;
  SC_CHECK(n > 0 && p0 + 1 <= state.positions, ErrorCode::kInvalidArgument, "decoder sequence of ", p0 + 1,
           " tokens exceeds the state's ", state.positions, " positions");
  SC_ASSERT(cross.kv.size() == weights_.dec_layers.size());
  check_token_ids(tokens, n, c.vocab_size);
  core::Workspace& ws = *state.workspace;
  ws.reset();
  auto scratch = [&](int64_t rows, int64_t cols) { return ws.tensor({rows, cols}, DType::kFloat32); };
  Tensor x = scratch(n, d);
  float* X = x.data<float>();
  for (int64_t i = 0; i < n; ++i)  // every row is at position p0
    ops::embedding(weights_.tok_emb.data<float>(), tokens + i, 1, d, weights_.dec_pos.data<float>() + p0 * d, X + i * d);
  Tensor h = scratch(n, d);
  Tensor qkv = scratch(n, 3 * d);
  Tensor att = scratch(n, d);
  Tensor ff = scratch(n, 4 * d);
  Tensor scores = scratch(std::max(ops::attention_scratch_floats(cx, 1, p0 + 1, heads),
                                   ops::attention_scratch_floats(cx, n, t_enc, heads)), 1);
  const int64_t row_floats = static_cast<int64_t>(state.positions) * d;

  for (size_t li = 0; li < weights_.dec_layers.size(); ++li) {
    const DecoderLayer& L = weights_.dec_layers[li];
    // self-attention: each row over its own cache
    const AttentionWeights& S = L.self_attn;
    ops::layer_norm(cx, X, S.ln_gamma.data<float>(), S.ln_beta.data<float>(), h.data<float>(), n, d);
    linear_rows(cx, h.data<float>(), S.qkv_w.data<float>(), S.qkv_b.data<float>(), qkv.data<float>(), n, 3 * d, d);
    for (int64_t r = 0; r < n; ++r) {
      float* K = state.k[li].data<float>() + r * row_floats;
      float* V = state.v[li].data<float>() + r * row_floats;
      const float* q = qkv.data<float>() + r * 3 * d;
      std::memcpy(K + p0 * d, q + d, sizeof(float) * d);
      std::memcpy(V + p0 * d, q + 2 * d, sizeof(float) * d);
      ops::attention(cx, q, 3 * d, K, d, V, d, att.data<float>() + r * d, 1, p0 + 1, heads, hd, p0,
                     scores.data<float>());
    }
    linear_rows(cx, att.data<float>(), S.out_w.data<float>(), S.out_b.data<float>(), X, n, d, d, true);
    // cross-attention: all rows query the window's one encoder output
    const AttentionWeights& C = L.cross_attn;
    ops::layer_norm(cx, X, C.ln_gamma.data<float>(), C.ln_beta.data<float>(), h.data<float>(), n, d);
    linear_rows(cx, h.data<float>(), C.qkv_w.data<float>(), C.qkv_b.data<float>(), qkv.data<float>(), n, d, d);
    const float* KV = cross.kv[li].data<float>();
    ops::attention(cx, qkv.data<float>(), d, KV, 2 * d, KV + d, 2 * d, att.data<float>(), n, t_enc, heads, hd, -1,
                   scores.data<float>());
    linear_rows(cx, att.data<float>(), C.out_w.data<float>(), C.out_b.data<float>(), X, n, d, d, true);
    // feed-forward
    const FfnWeights& F = L.ffn;
    ops::layer_norm(cx, X, F.ln_gamma.data<float>(), F.ln_beta.data<float>(), h.data<float>(), n, d);
    linear_rows(cx, h.data<float>(), F.fc1_w.data<float>(), F.fc1_b.data<float>(), ff.data<float>(), n, 4 * d, d);
    ops::gelu(cx, ff.data<float>(), n * 4 * d);
    linear_rows(cx, ff.data<float>(), F.fc2_w.data<float>(), F.fc2_b.data<float>(), X, n, d, 4 * d, true);
  }
  state.length = static_cast<int>(p0 + 1);
  ops::layer_norm(cx, X, weights_.dec_ln_gamma.data<float>(), weights_.dec_ln_beta.data<float>(), h.data<float>(), n, d);
  linear_rows(cx, h.data<float>(), weights_.tok_emb.data<float>(), nullptr, logits, n, c.vocab_size, d);
}

}  // namespace speechcore::models::whisper
