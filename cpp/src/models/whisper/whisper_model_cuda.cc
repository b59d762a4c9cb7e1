#include "models/whisper/whisper_model_cuda.h"

#include <algorithm>
#include <cstring>

#include "core/half.h"
#include "core/status.h"
#include "speechcore_cuda/attention.h"
#include "speechcore_cuda/elementwise.h"

namespace speechcore::models::whisper {

namespace {
DType to_dtype(cuda::DataType t) {
  switch (t) {
    case cuda::DataType::kFloat32: return DType::kFloat32;
    case cuda::DataType::kFloat16: return DType::kFloat16;
    case cuda::DataType::kBFloat16: return DType::kBFloat16;
  }
  return DType::kFloat32;
}
constexpr float kLnEps = 1e-5f;
}  // namespace

Tensor WhisperModelCuda::upload(const Tensor& host) const {
  SC_ASSERT(host.dtype() == DType::kFloat32 && host.device() == Device::kCPU && host.is_contiguous());
  Tensor out = Tensor::empty(host.shape(), to_dtype(dtype_), Device::kCUDA);
  const int64_t n = host.numel();
  const float* src = host.data<float>();
  if (dtype_ == cuda::DataType::kFloat32) {
    SC_CUDA_CHECK(cudaMemcpy(out.raw(), src, n * sizeof(float), cudaMemcpyHostToDevice));
  } else {
    std::vector<uint16_t> h(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i)
      h[i] = dtype_ == cuda::DataType::kFloat16 ? core::float_to_half(src[i]) : core::float_to_bf16(src[i]);
    SC_CUDA_CHECK(cudaMemcpy(out.raw(), h.data(), n * sizeof(uint16_t), cudaMemcpyHostToDevice));
  }
  return out;
}

Tensor WhisperModelCuda::scratch(int64_t rows, int64_t cols) const {
  return Tensor::empty({rows, cols}, to_dtype(dtype_), Device::kCUDA);
}

void* WhisperModelCuda::at(const Tensor& t, int64_t elements) const {
  return static_cast<char*>(const_cast<void*>(t.raw())) + elements * static_cast<int64_t>(cuda::data_type_size(dtype_));
}

void WhisperModelCuda::linear(const Tensor& x, int64_t m, const Tensor& w, const Tensor& b, Tensor& y,
                              bool accumulate) const {
  gemm_->linear(dtype_, x.raw(), w.raw(), b.defined() ? b.raw() : nullptr, y.raw(), m, w.dim(0), w.dim(1), accumulate,
                stream_);
}

WhisperModelCuda::WhisperModelCuda(const WhisperWeights& w, cuda::DataType dtype) : config_(w.config), dtype_(dtype) {
  SC_CHECK(config_.d_model % config_.encoder_heads == 0 && config_.d_model / config_.encoder_heads == 64 &&
               config_.d_model / config_.decoder_heads == 64,
           ErrorCode::kUnsupported, "the CUDA backend supports Whisper's head size 64 only");
  SC_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  gemm_ = std::make_unique<cuda::GemmRunner>();
  auto up = [&](const Tensor& t) {
    Tensor d = upload(t);
    weight_bytes_ += d.nbytes();
    return d;
  };
  // conv weights [d, c_in, 3] are [d, c_in * 3] row-major: the im2col column order.
  conv1_w_ = up(w.conv1_w).reshape({w.conv1_w.dim(0), w.conv1_w.dim(1) * 3});
  conv1_b_ = up(w.conv1_b);
  conv2_w_ = up(w.conv2_w).reshape({w.conv2_w.dim(0), w.conv2_w.dim(1) * 3});
  conv2_b_ = up(w.conv2_b);
  enc_pos_ = up(w.enc_pos);
  enc_ln_g_ = up(w.enc_ln_gamma);
  enc_ln_b_ = up(w.enc_ln_beta);
  tok_emb_ = up(w.tok_emb);
  dec_pos_ = up(w.dec_pos);
  dec_ln_g_ = up(w.dec_ln_gamma);
  dec_ln_b_ = up(w.dec_ln_beta);
  auto attn = [&](const AttentionWeights& a) {
    Attn o;
    o.ln_g = up(a.ln_gamma);
    o.ln_b = up(a.ln_beta);
    o.qkv_w = up(a.qkv_w);
    o.qkv_b = up(a.qkv_b);
    if (a.kv_w.defined()) {
      o.kv_w = up(a.kv_w);
      o.kv_b = up(a.kv_b);
    }
    o.out_w = up(a.out_w);
    o.out_b = up(a.out_b);
    return o;
  };
  auto ffn = [&](const FfnWeights& f) {
    return Ffn{up(f.ln_gamma), up(f.ln_beta), up(f.fc1_w), up(f.fc1_b), up(f.fc2_w), up(f.fc2_b)};
  };
  for (const auto& L : w.enc_layers) enc_.push_back(EncLayer{attn(L.self_attn), ffn(L.ffn)});
  for (const auto& L : w.dec_layers) dec_.push_back(DecLayer{attn(L.self_attn), attn(L.cross_attn), ffn(L.ffn)});
  SC_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

WhisperModelCuda::~WhisperModelCuda() {
  if (stream_) cudaStreamDestroy(stream_);
}

CrossKVCuda WhisperModelCuda::encode(const float* mel) const {
  const WhisperConfig& c = config_;
  const int64_t d = c.d_model, t_in = 2 * c.n_audio_ctx, t = c.n_audio_ctx, nm = c.n_mels;
  const cuda::DataType dt = dtype_;
  // features: host float32 -> device dtype
  Tensor mel_host = Tensor::view(const_cast<float*>(mel), {nm, t_in}, DType::kFloat32);
  Tensor x_mel = upload(mel_host);
  Tensor col1 = scratch(t_in, nm * 3);
  cuda::im2col_conv1d(dt, x_mel.raw(), nm, t_in, t_in, 1, 1, nm * t_in, 3, 1, 1, col1.raw(), stream_);
  Tensor h1 = scratch(t_in, d);
  linear(col1, t_in, conv1_w_, conv1_b_, h1, false);
  cuda::gelu(dt, h1.raw(), t_in * d, stream_);
  Tensor col2 = scratch(t, d * 3);
  cuda::im2col_conv1d(dt, h1.raw(), d, t_in, 1, d, 1, t_in * d, 3, 2, 1, col2.raw(), stream_);
  Tensor x = scratch(t, d);
  linear(col2, t, conv2_w_, conv2_b_, x, false);
  cuda::gelu(dt, x.raw(), t * d, stream_);
  cuda::add_positional(dt, x.raw(), enc_pos_.raw(), 1, t, d, stream_);

  Tensor h = scratch(t, d), qkv = scratch(t, 3 * d), att = scratch(t, d), ff = scratch(t, 4 * d);
  const int heads = c.encoder_heads;
  for (const EncLayer& L : enc_) {
    cuda::layer_norm(dt, x.raw(), L.self_attn.ln_g.raw(), L.self_attn.ln_b.raw(), h.raw(), t, d, kLnEps, stream_);
    linear(h, t, L.self_attn.qkv_w, L.self_attn.qkv_b, qkv, false);
    cuda::attention_prefill(dt, qkv.raw(), 3 * d, t * 3 * d, at(qkv, d), 3 * d, t * 3 * d, at(qkv, 2 * d), 3 * d,
                            t * 3 * d, att.raw(), d, t * d, 1, t, t, heads, 64, -1, stream_);
    linear(att, t, L.self_attn.out_w, L.self_attn.out_b, x, true);
    cuda::layer_norm(dt, x.raw(), L.ffn.ln_g.raw(), L.ffn.ln_b.raw(), h.raw(), t, d, kLnEps, stream_);
    linear(h, t, L.ffn.fc1_w, L.ffn.fc1_b, ff, false);
    cuda::gelu(dt, ff.raw(), t * 4 * d, stream_);
    linear(ff, t, L.ffn.fc2_w, L.ffn.fc2_b, x, true);
  }
  cuda::layer_norm(dt, x.raw(), enc_ln_g_.raw(), enc_ln_b_.raw(), h.raw(), t, d, kLnEps, stream_);
  CrossKVCuda out;
  for (const DecLayer& L : dec_) {
    Tensor kv = scratch(t, 2 * d);
    linear(h, t, L.cross_attn.kv_w, L.cross_attn.kv_b, kv, false);
    out.kv.push_back(std::move(kv));
  }
  // The scratch tensors above return to the caching pool when this function returns; the
  // pool hands them out again only to work queued later on this same stream.
  SC_CUDA_CHECK(cudaStreamSynchronize(stream_));
  return out;
}

DecoderStateCuda WhisperModelCuda::new_state() const {
  DecoderStateCuda s;
  for (size_t i = 0; i < dec_.size(); ++i) {
    s.k.push_back(scratch(config_.n_text_ctx, config_.d_model));
    s.v.push_back(scratch(config_.n_text_ctx, config_.d_model));
  }
  return s;
}

void WhisperModelCuda::decode(DecoderStateCuda& state, const CrossKVCuda& cross, const int* tokens, int n,
                              const std::vector<int>& logit_rows, float* logits) const {
  const WhisperConfig& c = config_;
  const cuda::DataType dt = dtype_;
  const int64_t d = c.d_model, p0 = state.length, t_enc = c.n_audio_ctx, ctx_len = c.n_text_ctx;
  const size_t es = cuda::data_type_size(dt);
  const int heads = c.decoder_heads;
  SC_CHECK(n > 0 && p0 + n <= ctx_len, ErrorCode::kInvalidArgument, "decoder sequence of ", p0 + n,
           " tokens exceeds the model's ", ctx_len, " positions");
  for (int i = 0; i < n; ++i)
    SC_CHECK(tokens[i] >= 0 && tokens[i] < c.vocab_size, ErrorCode::kInvalidArgument, "token id ", tokens[i],
             " is outside the vocabulary (", c.vocab_size, ")");
  // ids, positions, then the two KV lengths (self: p0 + n, cross: n_audio_ctx) in one upload
  std::vector<int32_t> ints(static_cast<size_t>(2 * n + 2));
  for (int i = 0; i < n; ++i) {
    ints[i] = tokens[i];
    ints[n + i] = static_cast<int32_t>(p0 + i);
  }
  ints[2 * n] = static_cast<int32_t>(p0 + n);
  ints[2 * n + 1] = static_cast<int32_t>(t_enc);
  Tensor ints_dev = Tensor::empty({static_cast<int64_t>(ints.size())}, DType::kInt32, Device::kCUDA);
  SC_CUDA_CHECK(cudaMemcpyAsync(ints_dev.raw(), ints.data(), ints.size() * 4, cudaMemcpyHostToDevice, stream_));
  const int32_t* ids = ints_dev.data<int32_t>();
  const int32_t* self_len = ids + 2 * n;
  const int32_t* cross_len = ids + 2 * n + 1;

  Tensor x = scratch(n, d), h = scratch(n, d), qkv = scratch(n, 3 * d), att = scratch(n, d), ff = scratch(n, 4 * d);
  const size_t dec_scratch_bytes = cuda::attention_decode_scratch_bytes(1, heads, 64, std::max(ctx_len, t_enc));
  Tensor dscratch = Tensor::empty({static_cast<int64_t>(std::max<size_t>(dec_scratch_bytes, 16))}, DType::kUInt8,
                                  Device::kCUDA);
  cuda::embedding(dt, tok_emb_.raw(), ids, ids + n, dec_pos_.raw(), x.raw(), n, d, stream_);
  for (size_t li = 0; li < dec_.size(); ++li) {
    const DecLayer& L = dec_[li];
    cuda::layer_norm(dt, x.raw(), L.self_attn.ln_g.raw(), L.self_attn.ln_b.raw(), h.raw(), n, d, kLnEps, stream_);
    linear(h, n, L.self_attn.qkv_w, L.self_attn.qkv_b, qkv, false);
    Tensor& K = state.k[li];
    Tensor& V = state.v[li];
    SC_CUDA_CHECK(cudaMemcpy2DAsync(at(K, p0 * d), d * es, at(qkv, d), 3 * d * es, d * es, n, cudaMemcpyDeviceToDevice,
                                    stream_));
    SC_CUDA_CHECK(cudaMemcpy2DAsync(at(V, p0 * d), d * es, at(qkv, 2 * d), 3 * d * es, d * es, n,
                                    cudaMemcpyDeviceToDevice, stream_));
    if (n == 1) {
      cuda::attention_decode(dt, qkv.raw(), 3 * d, 3 * d, K.raw(), d, ctx_len * d, V.raw(), d, ctx_len * d, att.raw(), d,
                             d, self_len, 1, heads, 64, ctx_len, dscratch.raw(), stream_);
    } else {
      cuda::attention_prefill(dt, qkv.raw(), 3 * d, n * 3 * d, K.raw(), d, ctx_len * d, V.raw(), d, ctx_len * d,
                              att.raw(), d, n * d, 1, n, p0 + n, heads, 64, p0, stream_);
    }
    linear(att, n, L.self_attn.out_w, L.self_attn.out_b, x, true);
    // cross-attention over the window's encoder output
    cuda::layer_norm(dt, x.raw(), L.cross_attn.ln_g.raw(), L.cross_attn.ln_b.raw(), h.raw(), n, d, kLnEps, stream_);
    linear(h, n, L.cross_attn.qkv_w, L.cross_attn.qkv_b, qkv, false);  // q only: [n, d] in qkv's first columns
    const Tensor& KV = cross.kv[li];
    if (n == 1) {
      cuda::attention_decode(dt, qkv.raw(), d, d, KV.raw(), 2 * d, t_enc * 2 * d, at(KV, d), 2 * d, t_enc * 2 * d,
                             att.raw(), d, d, cross_len, 1, heads, 64, t_enc, dscratch.raw(), stream_);
    } else {
      cuda::attention_prefill(dt, qkv.raw(), d, n * d, KV.raw(), 2 * d, t_enc * 2 * d, at(KV, d), 2 * d,
                              t_enc * 2 * d, att.raw(), d, n * d, 1, n, t_enc, heads, 64, -1, stream_);
    }
    linear(att, n, L.cross_attn.out_w, L.cross_attn.out_b, x, true);
    cuda::layer_norm(dt, x.raw(), L.ffn.ln_g.raw(), L.ffn.ln_b.raw(), h.raw(), n, d, kLnEps, stream_);
    linear(h, n, L.ffn.fc1_w, L.ffn.fc1_b, ff, false);
    cuda::gelu(dt, ff.raw(), n * 4 * d, stream_);
    linear(ff, n, L.ffn.fc2_w, L.ffn.fc2_b, x, true);
  }
  state.length = static_cast<int>(p0 + n);
  if (!logit_rows.empty()) {
    const int64_t m = static_cast<int64_t>(logit_rows.size());
    Tensor rows = scratch(m, d);
    for (int64_t r = 0; r < m; ++r) {
      SC_ASSERT(logit_rows[r] >= 0 && logit_rows[r] < n);
      cuda::layer_norm(dt, at(x, logit_rows[r] * d), dec_ln_g_.raw(), dec_ln_b_.raw(), at(rows, r * d), 1, d, kLnEps,
                       stream_);
    }
    Tensor out = Tensor::empty({m, c.vocab_size}, DType::kFloat32, Device::kCUDA);
    gemm_->linear_f32_out(dt, rows.raw(), tok_emb_.raw(), out.data<float>(), m, c.vocab_size, d, stream_);
    SC_CUDA_CHECK(cudaMemcpyAsync(logits, out.raw(), out.nbytes(), cudaMemcpyDeviceToHost, stream_));
  }
  SC_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

}  // namespace speechcore::models::whisper
