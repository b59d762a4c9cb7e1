#include "models/whisper/whisper_model_cuda.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "core/half.h"
#include "core/status.h"
#include "ops/ops.h"
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

// n float32 values -> the model's element type in host memory at dst (a copy for float32).
void to_model_type(const float* src, int64_t n, cuda::DataType dt, void* dst) {
  if (dt == cuda::DataType::kFloat32) {
    std::memcpy(dst, src, sizeof(float) * static_cast<size_t>(n));
    return;
  }
  uint16_t* h = static_cast<uint16_t*>(dst);
  if (dt == cuda::DataType::kFloat16) {
    for (int64_t i = 0; i < n; ++i) h[i] = core::float_to_half(src[i]);
  } else {  // a loop of its own vectorizes: a window's features in ~0.15 ms instead of ~0.25
    for (int64_t i = 0; i < n; ++i) h[i] = core::float_to_bf16(src[i]);
  }
}
}  // namespace

Tensor WhisperModelCuda::upload(const float* src, std::vector<int64_t> shape) const {
  Tensor out = Tensor::empty(std::move(shape), to_dtype(dtype_), Device::kCUDA);
  const int64_t n = out.numel();
  if (dtype_ == cuda::DataType::kFloat32) {
    SC_CUDA_CHECK(cudaMemcpyAsync(out.raw(), src, n * sizeof(float), cudaMemcpyHostToDevice, stream_));
  } else {
    std::vector<uint16_t> h(static_cast<size_t>(n));
    to_model_type(src, n, dtype_, h.data());
    SC_CUDA_CHECK(cudaMemcpyAsync(out.raw(), h.data(), n * sizeof(uint16_t), cudaMemcpyHostToDevice, stream_));
  }
  SC_CUDA_CHECK(cudaStreamSynchronize(stream_));  // the host staging buffer dies here
  return out;
}

Tensor WhisperModelCuda::scratch(int64_t rows, int64_t cols) const {
  return Tensor::empty({rows, cols}, to_dtype(dtype_), Device::kCUDA);
}

void* WhisperModelCuda::at(const Tensor& t, int64_t elements) const {
  return static_cast<char*>(const_cast<void*>(t.raw())) + elements * static_cast<int64_t>(cuda::data_type_size(dtype_));
}

void WhisperModelCuda::linear(const void* x, int64_t m, const Tensor& w, const Tensor& b, void* y,
                              bool accumulate) const {
  gemm_->linear(dtype_, x, w.raw(), b.defined() ? b.raw() : nullptr, y, m, w.dim(0), w.dim(1), accumulate, stream_);
}

void WhisperModelCuda::linear_gelu(const void* x, int64_t m, const Tensor& w, const Tensor& b, void* y) const {
  gemm_->linear_gelu(dtype_, x, w.raw(), b.raw(), y, m, w.dim(0), w.dim(1), stream_);
}

WhisperModelCuda::WhisperModelCuda(const WhisperWeights& w, cuda::DataType dtype) : config_(w.config), dtype_(dtype) {
  SC_CHECK(config_.d_model % config_.encoder_heads == 0 && config_.d_model / config_.encoder_heads == 64 &&
               config_.d_model / config_.decoder_heads == 64,
           ErrorCode::kUnsupported, "the CUDA backend supports Whisper's head size 64 only");
  // The model's stream (decoder steps, prefills, picks) at the device's highest priority: the
  // engine's encoder lane and the log-mel stream keep the default (lowest) one, so while an
  // admission is encoded the block scheduler hands free SMs to a decoder step's kernels first
  // instead of queueing them behind the encoder's. SPEECHCORE_STREAM_PRIORITY=0 at load keeps
  // the default priority (measurements).
  int least = 0, greatest = 0;
  SC_CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&least, &greatest));
  const char* prio_env = std::getenv("SPEECHCORE_STREAM_PRIORITY");
  const bool prioritize = prio_env == nullptr || std::strcmp(prio_env, "0") != 0;
  SC_CUDA_CHECK(cudaStreamCreateWithPriority(&stream_, cudaStreamNonBlocking, prioritize ? greatest : least));
  gemm_ = std::make_unique<cuda::GemmRunner>();
  if (const char* e = std::getenv("SPEECHCORE_DECODE_FUSION")) decode_fusion_ = std::strcmp(e, "0") != 0;
  if (const char* e = std::getenv("SPEECHCORE_CROSS_PREFETCH")) cross_prefetch_ = std::strcmp(e, "0") != 0;
  if (const char* e = std::getenv("SPEECHCORE_CROSS_QUERY_FUSED")) cross_query_fused_ = std::strcmp(e, "0") != 0;
  cross_query_fused_ = cross_query_fused_ && cuda::cross_query_attention_supported(
                                                 dtype_, config_.d_model, config_.decoder_heads, config_.n_audio_ctx);
  if (const char* e = std::getenv("SPEECHCORE_SELF_QKV_FUSED")) self_qkv_fused_ = std::strcmp(e, "0") != 0;
  self_qkv_fused_ = self_qkv_fused_ && cuda::self_qkv_attention_supported(dtype_, config_.d_model,
                                                                          config_.decoder_heads, config_.n_text_ctx);
  if (const char* e = std::getenv("SPEECHCORE_OUT_FOLD")) out_fold_ = std::strcmp(e, "0") != 0;
  if (const char* e = std::getenv("SPEECHCORE_SUBLAYER_ROWS")) sublayer_rows_ = std::clamp(std::atoi(e), 1, 8);
  out_fold_ = out_fold_ && self_qkv_fused_ && cross_query_fused_ &&
              cuda::gemv_row_prefetch_fits(dtype_, 4 * config_.d_model, config_.d_model, true) &&
              cuda::gemv_row_prefetch_fits(dtype_, config_.d_model, 4 * config_.d_model, false);
  if (const char* e = std::getenv("SPEECHCORE_PREFILL_CROSS_ROWS")) prefill_cross_rows_ = std::strcmp(e, "0") != 0;
  if (const char* e = std::getenv("SPEECHCORE_CROSS_ABSORB")) absorb_min_slots_ = std::max(0, std::atoi(e));
  if (!cuda::attention_absorbed_supported(dtype_, config_.decoder_heads, config_.d_model)) absorb_min_slots_ = 0;
  auto up = [&](const Tensor& t) {
    SC_ASSERT(t.dtype() == DType::kFloat32 && t.device() == Device::kCPU && t.is_contiguous());
    Tensor d = upload(t.data<float>(), t.shape());
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
  for (const auto& L : w.dec_layers) {
    dec_.push_back(DecLayer{attn(L.self_attn), attn(L.cross_attn), ffn(L.ffn)});
    if (absorb_min_slots_ > 0) {  // V's bias passes through the softmax: fold it into the output bias
      const AttentionWeights& a = L.cross_attn;
      const int64_t d = config_.d_model;
      std::vector<float> b(static_cast<size_t>(d));  // out_b + b_v W_o^T
      ops::linear(ops::Context{}, a.kv_b.data<float>() + d, a.out_w.data<float>(), a.out_b.data<float>(), b.data(), 1,
                  d, d);
      dec_.back().cross_attn.out_b_absorbed = upload(b.data(), {d});
      weight_bytes_ += dec_.back().cross_attn.out_b_absorbed.nbytes();
    }
  }
  setup_persistent_step();
}

void WhisperModelCuda::setup_persistent_step() {
  const WhisperConfig& c = config_;
  persist_plan_ = cuda::persistent_step_plan(dtype_, static_cast<int>(dec_.size()), c.d_model, c.decoder_heads,
                                             4 * c.d_model, c.n_text_ctx, c.n_audio_ctx);
  if (persist_plan_.grid == 0 || dec_.empty()) {
    persist_plan_ = {};
    return;
  }
  auto ptr = [](const Tensor& t) -> const void* { return t.defined() ? t.raw() : nullptr; };
  std::vector<cuda::DecoderLayerWeights> table;
  for (const DecLayer& L : dec_) {
    cuda::DecoderLayerWeights w{};
    w.ln1_g = ptr(L.self_attn.ln_g), w.ln1_b = ptr(L.self_attn.ln_b);
    w.qkv_w = ptr(L.self_attn.qkv_w), w.qkv_b = ptr(L.self_attn.qkv_b);
    w.out_w = ptr(L.self_attn.out_w), w.out_b = ptr(L.self_attn.out_b);
    w.ln2_g = ptr(L.cross_attn.ln_g), w.ln2_b = ptr(L.cross_attn.ln_b);
    w.q_w = ptr(L.cross_attn.qkv_w), w.q_b = ptr(L.cross_attn.qkv_b);
    w.cout_w = ptr(L.cross_attn.out_w), w.cout_b = ptr(L.cross_attn.out_b);
    w.ln3_g = ptr(L.ffn.ln_g), w.ln3_b = ptr(L.ffn.ln_b);
    w.fc1_w = ptr(L.ffn.fc1_w), w.fc1_b = ptr(L.ffn.fc1_b);
    w.fc2_w = ptr(L.ffn.fc2_w), w.fc2_b = ptr(L.ffn.fc2_b);
    table.push_back(w);
  }
  const int64_t table_bytes = static_cast<int64_t>(table.size() * sizeof(cuda::DecoderLayerWeights));
  persist_layers_ = Tensor::empty({table_bytes}, DType::kUInt8, Device::kCUDA);
  SC_CUDA_CHECK(cudaMemcpyAsync(persist_layers_.raw(), table.data(), table_bytes, cudaMemcpyHostToDevice, stream_));
  persist_ws_ = Tensor::empty({static_cast<int64_t>(persist_plan_.workspace_bytes)}, DType::kUInt8, Device::kCUDA);
  cuda::persistent_step_init(persist_ws_.raw(), persist_plan_.workspace_bytes, stream_);
  SC_CUDA_CHECK(cudaStreamSynchronize(stream_));  // the host table dies here
}

WhisperModelCuda::~WhisperModelCuda() {
  if (stream_) cudaStreamDestroy(stream_);
}

namespace {
// Largest attention_decode scratch over every batch size up to `slots` (the split policy gives
// small batches more splits).
size_t decode_scratch_bytes(int slots, int heads, int64_t max_len) {
  size_t most = 16;
  for (int b = 1; b <= slots; ++b) most = std::max(most, cuda::attention_decode_scratch_bytes(b, heads, 64, max_len));
  return most;
}
}  // namespace

bool WhisperModelCuda::absorbed_for(int slots) const { return absorb_min_slots_ > 0 && slots >= absorb_min_slots_; }

size_t WhisperModelCuda::bytes_per_slot(int ctx, bool absorbed) const {
  const WhisperConfig& c = config_;
  const size_t es = cuda::data_type_size(dtype_), d = c.d_model, layers = c.decoder_layers;
  const size_t cross = absorbed ? c.n_audio_ctx * d : layers * c.n_audio_ctx * 2 * d;
  const size_t self = layers * 2 * static_cast<size_t>(ctx) * d;
  const size_t step = 10 * d + (absorbed ? 2 * c.decoder_heads * d : 0);  // x, h, qkv, att, ff (qa, za) rows
  const size_t scratch = c.decoder_heads * (32 * (64 + 2)) * sizeof(float);  // split-K partials, generous
  // (plus attention_decode's fixed merge-counter region once per batch: well inside that margin)
  return es * (cross + self + step) + 2 * sizeof(float) * c.vocab_size + scratch + 8 * sizeof(int32_t);
}

size_t WhisperModelCuda::encoder_bytes(int windows) const {
  const WhisperConfig& c = config_;
  const size_t es = cuda::data_type_size(dtype_), d = c.d_model, t = c.n_audio_ctx, t_in = 2 * t, nm = c.n_mels;
  // mel + col1 + conv1 output + col2, then x, h, qkv, att, ff of the layers
  return es * windows * (t_in * nm * 4 + t_in * d + t * 3 * d + t * d * 10);
}

WhisperBatchCuda WhisperModelCuda::new_batch(int slots, int ctx, int64_t kv_rows) const {
  const WhisperConfig& c = config_;
  SC_CHECK(slots >= 1 && ctx >= 1 && ctx <= c.n_text_ctx, ErrorCode::kInvalidArgument, "new_batch: bad sizes ",
           slots, ", ", ctx);
  const int64_t d = c.d_model, L = c.decoder_layers, s = slots;
  const DType dt = to_dtype(dtype_);
  WhisperBatchCuda b;
  b.slots = slots;
  b.ctx = ctx;
  b.absorbed = absorbed_for(slots);
  if (b.absorbed) {
    b.cross = Tensor::empty({s * c.n_audio_ctx, d}, dt, Device::kCUDA);
    b.qa = scratch(s, c.decoder_heads * d);
    b.za = scratch(s, c.decoder_heads * d);
  } else {
    b.cross = Tensor::empty({L, s * c.n_audio_ctx, 2 * d}, dt, Device::kCUDA);
  }
  if (kv_rows != 0) b.self_kv = Tensor::empty({L, kv_rows < 0 ? s * ctx : kv_rows, 2 * d}, dt, Device::kCUDA);
  b.x = scratch(s, d);
  b.h = scratch(s, d);
  b.qkv = scratch(s, 3 * d);
  b.att = scratch(s, d);
  b.ff = scratch(s, 4 * d);
  const size_t sb = decode_scratch_bytes(slots, c.decoder_heads, std::max(ctx, c.n_audio_ctx));
  if (b.absorbed) {  // splits happen below 66 rows (prefills too): the largest of those
    size_t ab = 16;
    for (int r = 1; r <= 66; ++r)
      ab = std::max(ab, cuda::attention_absorbed_scratch_bytes(r, c.decoder_heads, static_cast<int>(d), c.n_audio_ctx));
    b.absorb_scratch = Tensor::empty({static_cast<int64_t>(ab)}, DType::kUInt8, Device::kCUDA);
  }
  b.attn_scratch = Tensor::empty({static_cast<int64_t>(sb)}, DType::kUInt8, Device::kCUDA);
  cuda::attention_decode_scratch_init(b.attn_scratch.raw(), sb, stream_);
  if (out_fold()) {
    b.resid_acc = Tensor::empty({2 * d * static_cast<int64_t>(sizeof(int64_t))}, DType::kUInt8, Device::kCUDA);
    SC_CUDA_CHECK(cudaMemsetAsync(b.resid_acc.raw(), 0, b.resid_acc.nbytes(), stream_));
  }
  b.logits = Tensor::empty({2 * s, static_cast<int64_t>(c.vocab_size)}, DType::kFloat32, Device::kCUDA);
  b.step_ints = Tensor::empty({WhisperBatchCuda::kStepArrays, s}, DType::kInt32, Device::kCUDA);
  b.cross_len = Tensor::empty({s}, DType::kInt32, Device::kCUDA);
  const std::vector<int32_t> lens(static_cast<size_t>(s), c.n_audio_ctx);
  SC_CUDA_CHECK(cudaMemcpyAsync(b.cross_len.raw(), lens.data(), lens.size() * 4, cudaMemcpyHostToDevice, stream_));
  SC_CUDA_CHECK(cudaStreamSynchronize(stream_));
  return b;
}

void WhisperModelCuda::encode(const float* const* mels, int n, WhisperBatchCuda& batch, int slot0, int chunk) const {
  SC_CHECK(n >= 0 && slot0 >= 0 && slot0 + n <= batch.slots && chunk >= 1, ErrorCode::kInvalidArgument,
           "encode: windows [", slot0, ", ", slot0 + n, ") do not fit a batch of ", batch.slots);
  const EncodeCtx ec{stream_, gemm_.get(), nullptr};
  for (int i = 0; i < n; i += chunk) encode_chunk(mels + i, std::min(chunk, n - i), batch, slot0 + i, nullptr, ec);
}

void WhisperModelCuda::encode(const float* const* mels, int n, WhisperBatchCuda& batch, const int* slots,
                              int chunk) const {
  SC_CHECK(n >= 0 && chunk >= 1 && (n == 0 || slots != nullptr), ErrorCode::kInvalidArgument, "encode: bad arguments");
  for (int i = 0; i < n; ++i)
    SC_CHECK(slots[i] >= 0 && slots[i] < batch.slots, ErrorCode::kInvalidArgument, "encode: slot ", slots[i],
             " is outside a batch of ", batch.slots);
  const EncodeCtx ec{stream_, gemm_.get(), nullptr};
  for (int i = 0; i < n; i += chunk) encode_chunk(mels + i, std::min(chunk, n - i), batch, 0, slots + i, ec);
}

EncoderLane::~EncoderLane() {
  if (stream) cudaStreamSynchronize(stream);
  for (cudaEvent_t e : staged) cudaEventDestroy(e);
  if (staging) cudaFreeHost(staging);
  if (stream) cudaStreamDestroy(stream);
}

int EncoderLane::free_windows() const {
  const int k = static_cast<int>(staged.size());
  int free = 0;
  for (; free < k; ++free) {
    const cudaError_t q = cudaEventQuery(staged[static_cast<size_t>((next_region + free) % k)]);
    if (q == cudaErrorNotReady) break;
    SC_CUDA_CHECK(q);
  }
  return free * windows;
}

std::unique_ptr<EncoderLane> WhisperModelCuda::new_encoder_lane(int windows, int admission) const {
  SC_CHECK(windows >= 1 && admission >= 0, ErrorCode::kInvalidArgument,
           "new_encoder_lane: windows must be >= 1 and admission >= 0");
  const WhisperConfig& c = config_;
  const int64_t d = c.d_model, t_in = 2 * c.n_audio_ctx, t = c.n_audio_ctx, nm = c.n_mels;
  const int64_t n = windows, nt = n * t;
  auto lane = std::make_unique<EncoderLane>();
  lane->windows = windows;
  SC_CUDA_CHECK(cudaStreamCreateWithFlags(&lane->stream, cudaStreamNonBlocking));
  // one region per chunk of the largest admission: its chunks never wait for each other's encoder
  int regions = std::max((admission + windows - 1) / windows, 1);
  if (const char* v = std::getenv("SPEECHCORE_LANE_REGIONS"); v != nullptr && std::atoi(v) >= 1) regions = std::atoi(v);
  lane->staged.assign(static_cast<size_t>(regions), nullptr);
  for (cudaEvent_t& e : lane->staged) SC_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  lane->gemm = std::make_unique<cuda::GemmRunner>();
  lane->region_bytes = static_cast<size_t>(n * nm * t_in) * cuda::data_type_size(dtype_);
  SC_CUDA_CHECK(cudaMallocHost(&lane->staging, lane->region_bytes * static_cast<size_t>(regions)));
  lane->x_mel = scratch(n * nm, t_in);
  lane->col1 = scratch(n * t_in, nm * 3);
  lane->h1 = scratch(n * t_in, d);
  lane->col2 = scratch(nt, d * 3);
  lane->x = scratch(nt, d);
  lane->h = scratch(nt, d);
  lane->qkv = scratch(nt, 3 * d);
  lane->att = scratch(nt, d);
  lane->ff = scratch(nt, 4 * d);
  for (cudaEvent_t e : lane->staged) SC_CUDA_CHECK(cudaEventRecord(e, lane->stream));
  return lane;
}

void WhisperModelCuda::encode_async(const float* const* mels, int n, WhisperBatchCuda& batch, const int* slots,
                                    EncoderLane& lane, cudaStream_t after) const {
  SC_CHECK(n >= 0 && (n == 0 || slots != nullptr), ErrorCode::kInvalidArgument, "encode_async: bad arguments");
  for (int i = 0; i < n; ++i)
    SC_CHECK(slots[i] >= 0 && slots[i] < batch.slots, ErrorCode::kInvalidArgument, "encode_async: slot ", slots[i],
             " is outside a batch of ", batch.slots);
  if (n == 0) return;
  cudaEvent_t before = nullptr;                     // the work already on `after`
  SC_CUDA_CHECK(cudaEventCreateWithFlags(&before, cudaEventDisableTiming));
  SC_CUDA_CHECK(cudaEventRecord(before, after));
  SC_CUDA_CHECK(cudaStreamWaitEvent(lane.stream, before, 0));
  SC_CUDA_CHECK(cudaEventDestroy(before));  // released once the wait is done
  const EncodeCtx ec{lane.stream, lane.gemm.get(), &lane};
  for (int i = 0; i < n; i += lane.windows) {
    const auto t0 = std::chrono::steady_clock::now();
    const double staged = lane.wait_s + lane.stage_s;
    encode_chunk(mels + i, std::min(lane.windows, n - i), batch, 0, slots + i, ec);
    lane.launch_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() -
                     (lane.wait_s + lane.stage_s - staged);
    lane.chunks += 1;
  }
}

void WhisperModelCuda::encode_chunk(const float* const* mels, int n, WhisperBatchCuda& batch, int slot0,
                                    const int* slots, const EncodeCtx& ec) const {
  encoder_passes_.fetch_add(static_cast<uint64_t>(n), std::memory_order_relaxed);
  const WhisperConfig& c = config_;
  const int64_t d = c.d_model, t_in = 2 * c.n_audio_ctx, t = c.n_audio_ctx, nm = c.n_mels, nt = n * t;
  const cuda::DataType dt = dtype_;
  const cudaStream_t s = ec.stream;
  const int64_t es = static_cast<int64_t>(cuda::data_type_size(dt));
  auto off = [&](void* p, int64_t elements) { return static_cast<void*>(static_cast<char*>(p) + elements * es); };
  auto lin = [&](const void* x, int64_t m, const Tensor& w, const Tensor& b, void* y, bool accumulate) {
    ec.gemm->linear(dt, x, w.raw(), b.defined() ? b.raw() : nullptr, y, m, w.dim(0), w.dim(1), accumulate, s);
  };
  // Activations: pooled scratch on the model's stream (returned to the pool at the end: handed
  // out again only to work queued later on that stream), or the lane's own buffers.
  std::vector<Tensor> held;
  auto buf = [&](Tensor& lane_buf, int64_t rows, int64_t cols) -> void* {
    if (ec.lane) return lane_buf.raw();
    held.push_back(scratch(rows, cols));
    return held.back().raw();
  };
  // features: host float32 -> device dtype, [n, n_mels, t_in]
  void* x_mel;
  if (ec.lane) {
    EncoderLane& lane = *ec.lane;
    const int64_t per = nm * t_in;
    const int r = lane.next_region;  // the ring's next region: its previous copy out must be done
    lane.next_region = (r + 1) % static_cast<int>(lane.staged.size());
    const auto t0 = std::chrono::steady_clock::now();
    SC_CUDA_CHECK(cudaEventSynchronize(lane.staged[r]));
    const auto t1 = std::chrono::steady_clock::now();
    char* region = static_cast<char*>(lane.staging) + static_cast<size_t>(r) * lane.region_bytes;
    for (int i = 0; i < n; ++i) to_model_type(mels[i], per, dt, region + i * per * es);
    lane.wait_s += std::chrono::duration<double>(t1 - t0).count();
    lane.stage_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
    x_mel = lane.x_mel.raw();
    SC_CUDA_CHECK(cudaMemcpyAsync(x_mel, region, static_cast<size_t>(n * per * es), cudaMemcpyHostToDevice, s));
    SC_CUDA_CHECK(cudaEventRecord(lane.staged[r], s));
  } else {
    std::vector<float> host(static_cast<size_t>(n * nm * t_in));
    for (int i = 0; i < n; ++i) std::memcpy(host.data() + i * nm * t_in, mels[i], sizeof(float) * nm * t_in);
    held.push_back(upload(host.data(), {n, nm, t_in}));
    x_mel = held.back().raw();
  }
  EncoderLane* L = ec.lane;
  Tensor none;
  void* col1 = buf(L ? L->col1 : none, n * t_in, nm * 3);
  cuda::im2col_conv1d(dt, x_mel, nm, t_in, t_in, 1, n, nm * t_in, 3, 1, 1, col1, s);
  void* h1 = buf(L ? L->h1 : none, n * t_in, d);
  lin(col1, n * t_in, conv1_w_, conv1_b_, h1, false);
  cuda::gelu(dt, h1, n * t_in * d, s);
  void* col2 = buf(L ? L->col2 : none, nt, d * 3);
  cuda::im2col_conv1d(dt, h1, d, t_in, 1, d, n, t_in * d, 3, 2, 1, col2, s);
  void* x = buf(L ? L->x : none, nt, d);
  lin(col2, nt, conv2_w_, conv2_b_, x, false);
  cuda::gelu(dt, x, nt * d, s);
  cuda::add_positional(dt, x, enc_pos_.raw(), n, t, d, s);

  void* h = buf(L ? L->h : none, nt, d);
  void* qkv = buf(L ? L->qkv : none, nt, 3 * d);
  void* att = buf(L ? L->att : none, nt, d);
  void* ff = buf(L ? L->ff : none, nt, 4 * d);
  const int heads = c.encoder_heads;
  for (const EncLayer& Lr : enc_) {
    cuda::layer_norm(dt, x, Lr.self_attn.ln_g.raw(), Lr.self_attn.ln_b.raw(), h, nt, d, kLnEps, s);
    lin(h, nt, Lr.self_attn.qkv_w, Lr.self_attn.qkv_b, qkv, false);
    cuda::attention_prefill(dt, qkv, 3 * d, t * 3 * d, off(qkv, d), 3 * d, t * 3 * d, off(qkv, 2 * d), 3 * d,
                            t * 3 * d, att, d, t * d, n, t, t, heads, 64, -1, s);
    lin(att, nt, Lr.self_attn.out_w, Lr.self_attn.out_b, x, true);
    cuda::layer_norm(dt, x, Lr.ffn.ln_g.raw(), Lr.ffn.ln_b.raw(), h, nt, d, kLnEps, s);
    ec.gemm->linear_gelu(dt, h, Lr.ffn.fc1_w.raw(), Lr.ffn.fc1_b.raw(), ff, nt, Lr.ffn.fc1_w.dim(0),
                         Lr.ffn.fc1_w.dim(1), s);
    lin(ff, nt, Lr.ffn.fc2_w, Lr.ffn.fc2_b, x, true);
  }
  cuda::layer_norm(dt, x, enc_ln_g_.raw(), enc_ln_b_.raw(), h, nt, d, kLnEps, s);
  if (batch.absorbed) {  // the encoder output itself is the cross-attention's memory
    for (int i = 0; i < n; ++i) {
      const int64_t slot = slots ? slots[i] : slot0 + i;
      SC_CUDA_CHECK(cudaMemcpyAsync(at(batch.cross, slot * t * d), off(h, i * t * d), static_cast<size_t>(t * d * es),
                                    cudaMemcpyDeviceToDevice, s));
    }
    return;
  }
  const int64_t layer_stride = static_cast<int64_t>(batch.slots) * t * 2 * d;
  for (size_t li = 0; li < dec_.size(); ++li) {
    if (!slots) {
      lin(h, nt, dec_[li].cross_attn.kv_w, dec_[li].cross_attn.kv_b,
          at(batch.cross, li * layer_stride + slot0 * t * 2 * d), false);
      continue;
    }
    for (int i = 0; i < n; ++i)  // each window's K/V to its own slot
      lin(off(h, i * t * d), t, dec_[li].cross_attn.kv_w, dec_[li].cross_attn.kv_b,
          at(batch.cross, li * layer_stride + static_cast<int64_t>(slots[i]) * t * 2 * d), false);
  }
  // The scratch tensors (held) return to the caching pool here; the pool hands them out again
  // only to work queued later on the model's stream. A lane keeps its buffers.
}

void WhisperModelCuda::cross_absorbed(const WhisperBatchCuda& b, size_t li, const void* q, int64_t rows,
                                      const int32_t* lens, const int32_t* kv_index, int rows_per_slot, int slot0,
                                      void* qa, void* za, void* att, void* scratch) const {
  const WhisperConfig& c = config_;
  const int64_t d = c.d_model, t_enc = c.n_audio_ctx, hd = 64;
  const int heads = c.decoder_heads;
  const Tensor& kv_w = dec_[li].cross_attn.kv_w;  // [2d, d]: W_k rows, then W_v rows
  // qa[r, h, :] = q[r, h*64:(h+1)*64] W_k[h*64:(h+1)*64, :]
  gemm_->batched(dtype_, q, d, hd, kv_w.raw(), d, hd * d, true, qa, heads * d, d, rows, d, hd, heads, stream_);
  cuda::attention_absorbed(dtype_, qa, heads * d, at(b.cross, static_cast<int64_t>(slot0) * t_enc * d), t_enc * d, za,
                           heads * d, lens, kv_index, rows_per_slot, static_cast<int>(rows), heads,
                           static_cast<int>(d), t_enc, 1.0f / std::sqrt(static_cast<float>(hd)), scratch, stream_,
                           cross_prefetch_);
  // att[r, h*64:(h+1)*64] = za[r, h, :] W_v[h*64:(h+1)*64, :]^T
  gemm_->batched(dtype_, za, heads * d, d, at(kv_w, d * d), d, hd * d, false, att, d, hd, rows, hd, d, heads, stream_);
}

Tensor WhisperModelCuda::prefill(WhisperBatchCuda& batch, const int32_t* ints, int n, int len, int slot0,
                                 const int* slots, const CrossScoresCuda* capture) const {
  const WhisperConfig& c = config_;
  const cuda::DataType dt = dtype_;
  if (slots)
    for (int i = 0; i < n; ++i)
      SC_CHECK(slots[i] >= 0 && slots[i] < batch.slots, ErrorCode::kInvalidArgument, "prefill: slot ", slots[i],
               " is outside a batch of ", batch.slots);
  SC_CHECK(n >= 1 && slot0 >= 0 && (slots || slot0 + n <= batch.slots) && len >= 1 && len <= batch.ctx,
           ErrorCode::kInvalidArgument, "prefill: ", n, " prompts of ", len, " tokens at slot ", slot0,
           " do not fit the batch");
  const int64_t d = c.d_model, t_enc = c.n_audio_ctx, R = static_cast<int64_t>(n) * len;
  const int heads = c.decoder_heads;
  if (capture) {
    SC_CHECK(n == 1 && capture->scores != nullptr, ErrorCode::kInvalidArgument,
             "prefill: cross-attention scores are captured for one sequence");
    for (const auto& [layer, head] : capture->heads)
      SC_CHECK(layer >= 0 && layer < static_cast<int>(dec_.size()) && head >= 0 && head < heads,
               ErrorCode::kInvalidArgument, "alignment head (", layer, ", ", head, ") is outside the decoder (",
               dec_.size(), " layers of ", heads, " heads)");
  }
  const int32_t* ids = ints;
  const int32_t* pos = ints + R;
  const int32_t* kv_rows = ints + 2 * R;
  // Prompts against their own slots: the decode kernel over all rows when its split scratch fits
  // the batch's (SPEECHCORE_PREFILL_CROSS_ROWS=0: one prefill call per sequence, measurements).
  const bool rows_cross = slots && prefill_cross_rows_ && R <= 65535 &&
                          cuda::attention_decode_scratch_bytes(static_cast<int>(R), heads, 64, t_enc) <=
                              batch.attn_scratch.nbytes();
  Tensor x = scratch(R, d), h = scratch(R, d), qkv = scratch(R, 3 * d), att = scratch(R, d), ff = scratch(R, 4 * d);
  Tensor qa, za;
  if (batch.absorbed) {
    qa = scratch(R, heads * d);
    za = scratch(R, heads * d);
  }
  cuda::embedding(dt, tok_emb_.raw(), ids, pos, dec_pos_.raw(), x.raw(), R, d, stream_);
  const int64_t self_layer = batch.self_kv.dim(1) * 2 * d;
  const int64_t cross_layer = static_cast<int64_t>(batch.slots) * t_enc * 2 * d;
  for (size_t li = 0; li < dec_.size(); ++li) {
    const DecLayer& L = dec_[li];
    void* KV_self = at(batch.self_kv, li * self_layer);
    cuda::layer_norm(dt, x.raw(), L.self_attn.ln_g.raw(), L.self_attn.ln_b.raw(), h.raw(), R, d, kLnEps, stream_);
    linear(h.raw(), R, L.self_attn.qkv_w, L.self_attn.qkv_b, qkv.raw(), false);
    cuda::copy_rows(dt, at(qkv, d), 3 * d, nullptr, KV_self, 2 * d, kv_rows, R, 2 * d, stream_);  // K | V
    // the prompt attends to itself: K/V straight from the fused QKV rows, causal
    cuda::attention_prefill(dt, qkv.raw(), 3 * d, len * 3 * d, at(qkv, d), 3 * d, len * 3 * d, at(qkv, 2 * d), 3 * d,
                            len * 3 * d, att.raw(), d, len * d, n, len, len, heads, 64, 0, stream_);
    linear(att.raw(), R, L.self_attn.out_w, L.self_attn.out_b, x.raw(), true);
    cuda::layer_norm(dt, x.raw(), L.cross_attn.ln_g.raw(), L.cross_attn.ln_b.raw(), h.raw(), R, d, kLnEps, stream_);
    linear(h.raw(), R, L.cross_attn.qkv_w, L.cross_attn.qkv_b, qkv.raw(), false);  // q only: [R, d]
    if (batch.absorbed) {
      // every row against its sequence's encoder output (the slot map, or row / len from slot0)
      if (slots)
        cross_absorbed(batch, li, qkv.raw(), R, ints + 4 * R, ints + 3 * R, 1, 0, qa.raw(), za.raw(), att.raw(),
                       batch.absorb_scratch.raw());
      else
        cross_absorbed(batch, li, qkv.raw(), R, nullptr, nullptr, len, slot0, qa.raw(), za.raw(), att.raw(),
                       batch.absorb_scratch.raw());
      if (capture) {  // the alignment heads' raw scores: qa_h against the encoder output
        const int64_t x0 = static_cast<int64_t>(slots ? slots[0] : slot0) * t_enc * d;
        for (size_t i = 0; i < capture->heads.size(); ++i) {
          if (capture->heads[i].first != static_cast<int>(li)) continue;
          cuda::attention_scores(dt, at(qa, capture->heads[i].second * d), heads * d, at(batch.cross, x0), d, len,
                                 static_cast<int>(t_enc), static_cast<int>(d), 1.0f / std::sqrt(64.0f),
                                 capture->scores + static_cast<int64_t>(i) * len * t_enc, stream_);
        }
      }
    } else {
      if (capture) {  // the alignment heads' raw scores against this sequence's encoder K
        const int64_t hd = d / heads;
        const int64_t cross0 = li * cross_layer + static_cast<int64_t>(slots ? slots[0] : slot0) * t_enc * 2 * d;
        for (size_t i = 0; i < capture->heads.size(); ++i) {
          if (capture->heads[i].first != static_cast<int>(li)) continue;
          const int64_t off = capture->heads[i].second * hd;
          cuda::attention_scores(dt, at(qkv, off), d, at(batch.cross, cross0 + off), 2 * d, len, static_cast<int>(t_enc),
                                 static_cast<int>(hd), 1.0f / std::sqrt(static_cast<float>(hd)),
                                 capture->scores + static_cast<int64_t>(i) * len * t_enc, stream_);
        }
      }
      if (rows_cross) {  // every row against its sequence's slot: one flash-decoding call
        const int64_t cross0 = li * cross_layer;
        cuda::attention_decode(dt, qkv.raw(), d, d, at(batch.cross, cross0), 2 * d, t_enc * 2 * d,
                               at(batch.cross, cross0 + d), 2 * d, t_enc * 2 * d, att.raw(), d, d, ints + 4 * R,
                               ints + 3 * R, static_cast<int>(R), heads, 64, t_enc, batch.attn_scratch.raw(), stream_,
                               nullptr, cross_prefetch_);
      } else if (slots) {  // each sequence against its own slot's K/V
        for (int i = 0; i < n; ++i) {
          const int64_t cross0 = li * cross_layer + static_cast<int64_t>(slots[i]) * t_enc * 2 * d;
          cuda::attention_prefill(dt, at(qkv, i * len * d), d, len * d, at(batch.cross, cross0), 2 * d, t_enc * 2 * d,
                                  at(batch.cross, cross0 + d), 2 * d, t_enc * 2 * d, at(att, i * len * d), d, len * d, 1,
                                  len, t_enc, heads, 64, -1, stream_);
        }
      } else {
        const int64_t cross0 = li * cross_layer + static_cast<int64_t>(slot0) * t_enc * 2 * d;
        void* KV = at(batch.cross, cross0);
        cuda::attention_prefill(dt, qkv.raw(), d, len * d, KV, 2 * d, t_enc * 2 * d, at(batch.cross, cross0 + d),
                                2 * d, t_enc * 2 * d, att.raw(), d, len * d, n, len, t_enc, heads, 64, -1, stream_);
      }
    }
    linear(att.raw(), R, L.cross_attn.out_w, batch.absorbed ? L.cross_attn.out_b_absorbed : L.cross_attn.out_b,
           x.raw(), true);
    cuda::layer_norm(dt, x.raw(), L.ffn.ln_g.raw(), L.ffn.ln_b.raw(), h.raw(), R, d, kLnEps, stream_);
    linear_gelu(h.raw(), R, L.ffn.fc1_w, L.ffn.fc1_b, ff.raw());
    linear(ff.raw(), R, L.ffn.fc2_w, L.ffn.fc2_b, x.raw(), true);
  }
  return x;
}

void WhisperModelCuda::step(WhisperBatchCuda& b, int n) const {
  const WhisperConfig& c = config_;
  const cuda::DataType dt = dtype_;
  SC_CHECK(n >= 1 && n <= b.slots, ErrorCode::kInvalidArgument, "step: ", n, " rows for a batch of ", b.slots);
  const int64_t d = c.d_model, t_enc = c.n_audio_ctx, ctx = b.ctx;
  const int heads = c.decoder_heads;
  const int32_t* ids = b.step_array(0);
  const int32_t* pos = b.step_array(1);
  const int32_t* kv_rows = b.step_array(2);
  const int32_t* slot = b.step_array(3);
  const int32_t* self_len = b.step_array(4);
  const int64_t self_layer = b.self_kv.dim(1) * 2 * d;
  const int64_t cross_layer = static_cast<int64_t>(b.slots) * t_enc * 2 * d;
  cuda::PagedKV paged;
  if (b.block_size > 0) {
    paged.block_table = b.block_table.data<int32_t>();
    paged.table_stride = b.table_stride;
    paged.block_size = b.block_size;
  }
  const cuda::PagedKV* self_paged = b.block_size > 0 ? &paged : nullptr;
  void* x = b.x.raw();
  void* h = b.h.raw();
  void* qkv = b.qkv.raw();
  void* att = b.att.raw();
  void* ff = b.ff.raw();
  void* scr = b.attn_scratch.raw();
  cuda::embedding(dt, tok_emb_.raw(), ids, pos, dec_pos_.raw(), x, n, d, stream_);
  // Cross-attention of the n rows' queries (qkv[:, 0:d]) into att, and its output bias.
  auto cross = [&](size_t li) -> const Tensor& {
    const DecLayer& L = dec_[li];
    if (b.absorbed) {
      cross_absorbed(b, li, qkv, n, b.cross_len.data<int32_t>(), slot, 1, 0, b.qa.raw(), b.za.raw(), att,
                     b.absorb_scratch.raw());
      return L.cross_attn.out_b_absorbed;
    }
    cuda::attention_decode(dt, qkv, d, d, at(b.cross, li * cross_layer), 2 * d, t_enc * 2 * d,
                           at(b.cross, li * cross_layer + d), 2 * d, t_enc * 2 * d, att, d, d,
                           b.cross_len.data<int32_t>(), slot, n, heads, 64, t_enc, scr, stream_, nullptr,
                           cross_prefetch_);
    return L.cross_attn.out_b;
  };
  if (n == 1 && decode_fusion_ && persist_plan_.grid > 0 && ctx <= persist_plan_.self_max && !b.absorbed) {
    cuda::PersistentStepArgs a;
    a.layers = static_cast<const cuda::DecoderLayerWeights*>(persist_layers_.raw());
    a.n_layers = static_cast<int>(dec_.size());
    a.d = static_cast<int>(d);
    a.heads = heads;
    a.ffn = static_cast<int>(4 * d);
    a.ln_eps = kLnEps;
    a.x = x;
    a.qkv = qkv;
    a.att = att;
    a.ff = ff;
    a.self_kv = b.self_kv.raw();
    a.self_layer = self_layer;
    a.self_batch_stride = ctx * 2 * d;
    a.paged = paged;
    a.self_max = static_cast<int>(ctx);
    a.cross = b.cross.raw();
    a.cross_layer = cross_layer;
    a.cross_batch_stride = t_enc * 2 * d;
    a.t_enc = static_cast<int>(t_enc);
    a.kv_row = kv_rows;
    a.slot = slot;
    a.self_len = self_len;
    a.cross_len = b.cross_len.data<int32_t>();
    cuda::persistent_step(dt, a, persist_plan_, const_cast<void*>(persist_ws_.raw()), stream_);
    return;
  }
  if (decode_fusion_ && n <= gemm_->gemv_max_rows()) {
    // Fused: 8 kernels per layer (each launched with programmatic dependent launch on Hopper);
    // one fewer with the cross-attention's query product inside its attention kernel, and one
    // fewer with the self-attention's QKV product inside its attention kernel (up to
    // sublayer_rows_ rows: one by default).
    const bool cross_query_one_kernel = cross_query_fused_ && n <= sublayer_rows_ && !b.absorbed;
    const bool self_qkv_one_kernel = self_qkv_fused_ && n <= sublayer_rows_ &&
                                     cuda::self_qkv_attention_supported(dt, static_cast<int>(d), heads, ctx);
    // 4 kernels a layer (one row): the output products inside the attention kernels, their sums
    // in b.resid_acc (acc[0] self, acc[1] cross) until fc2's epilogue adds them to x, zeroing them
    const bool fold =
        out_fold() && n == 1 && self_qkv_one_kernel && cross_query_one_kernel && b.resid_acc.defined();
    int64_t* acc0 = fold ? static_cast<int64_t*>(b.resid_acc.raw()) : nullptr;
    int64_t* acc1 = fold ? acc0 + d : nullptr;
    auto gemv = [&](const void* in, const Tensor& w, const Tensor& bias, void* out, bool accumulate, bool gelu,
                    const cuda::GemvFusion* f) {
      cuda::gemv(dt, in, w.raw(), bias.defined() ? bias.raw() : nullptr, out, false, n, w.dim(0), w.dim(1), accumulate,
                 gelu, stream_, f);
    };
    for (size_t li = 0; li < dec_.size(); ++li) {
      const DecLayer& L = dec_[li];
      void* KV_self = at(b.self_kv, li * self_layer);
      cuda::GemvFusion f;
      f.ln_gamma = L.self_attn.ln_g.raw();
      f.ln_beta = L.self_attn.ln_b.raw();
      f.ln_eps = kLnEps;
      f.split_col = d;  // q -> qkv[:, 0:d]; K | V -> KV-cache row kv_rows[i]
      f.y2 = KV_self;
      f.ld2 = 2 * d;
      f.rows2 = kv_rows;
      // fold: the output products run inside the attention kernels (OutputFold); the cross kernel
      // reads x + the self-attention's term, fc1 x + both, fc2's epilogue materializes x and
      // zeroes the terms (ResidualTerms)
      cuda::ResidualTerms terms;
      if (fold) {
        terms.acc[0] = acc0;
        terms.acc[1] = acc1;
        terms.bias[0] = L.self_attn.out_b.defined() ? L.self_attn.out_b.raw() : nullptr;
        terms.bias[1] = L.cross_attn.out_b.defined() ? L.cross_attn.out_b.raw() : nullptr;
      }
      cuda::OutputFold self_fold, cross_fold;
      self_fold.w_out = L.self_attn.out_w.raw();
      self_fold.acc = acc0;
      cross_fold.w_out = L.cross_attn.out_w.raw();
      cross_fold.acc = acc1;
      if (self_qkv_one_kernel) {
        cuda::self_qkv_attention(dt, x, L.self_attn.ln_g.raw(), L.self_attn.ln_b.raw(), kLnEps, L.self_attn.qkv_w.raw(),
                                 L.self_attn.qkv_b.defined() ? L.self_attn.qkv_b.raw() : nullptr, KV_self, kv_rows,
                                 self_len, slot, self_paged, ctx, fold ? nullptr : att, d, n, static_cast<int>(d),
                                 heads, stream_, fold ? &self_fold : nullptr);
      } else {
        gemv(x, L.self_attn.qkv_w, L.self_attn.qkv_b, qkv, false, false, &f);
        cuda::attention_decode(dt, qkv, 3 * d, 3 * d, KV_self, 2 * d, ctx * 2 * d,
                               at(b.self_kv, li * self_layer + d), 2 * d, ctx * 2 * d, att, d, d, self_len, slot, n,
                               heads, 64, ctx, scr, stream_, self_paged);
      }
      if (!fold) gemv(att, L.self_attn.out_w, L.self_attn.out_b, x, true, false, nullptr);
      const Tensor* cout_b = &L.cross_attn.out_b;
      if (cross_query_one_kernel) {
        cuda::ResidualTerms x_terms = terms;  // x + the self-attention's output
        x_terms.terms = fold ? 1 : 0;
        cuda::cross_query_attention(dt, x, L.cross_attn.ln_g.raw(), L.cross_attn.ln_b.raw(), kLnEps,
                                    L.cross_attn.qkv_w.raw(),
                                    L.cross_attn.qkv_b.defined() ? L.cross_attn.qkv_b.raw() : nullptr,
                                    at(b.cross, li * cross_layer), at(b.cross, li * cross_layer + d), 2 * d,
                                    t_enc * 2 * d, slot, b.cross_len.data<int32_t>(), t_enc, fold ? nullptr : att, d,
                                    n, static_cast<int>(d), heads, stream_, &x_terms, fold ? &cross_fold : nullptr);
      } else {
        cuda::GemvFusion fc;
        fc.ln_gamma = L.cross_attn.ln_g.raw();
        fc.ln_beta = L.cross_attn.ln_b.raw();
        fc.ln_eps = kLnEps;
        gemv(x, L.cross_attn.qkv_w, L.cross_attn.qkv_b, qkv, false, false, &fc);  // q only: [n, d]
        cout_b = &cross(li);
      }
      if (!fold) gemv(att, L.cross_attn.out_w, *cout_b, x, true, false, nullptr);
      cuda::GemvFusion ff_ln;
      ff_ln.ln_gamma = L.ffn.ln_g.raw();
      ff_ln.ln_beta = L.ffn.ln_b.raw();
      ff_ln.ln_eps = kLnEps;
      if (fold) {
        ff_ln.residual = terms;
        ff_ln.residual.terms = 2;
      }
      gemv(x, L.ffn.fc1_w, L.ffn.fc1_b, ff, false, true, &ff_ln);
      cuda::GemvFusion fc2;
      if (fold) {
        fc2.residual = ff_ln.residual;
        fc2.residual.zero = true;
      }
      gemv(ff, L.ffn.fc2_w, L.ffn.fc2_b, x, true, false, fold ? &fc2 : nullptr);
    }
    return;
  }
  for (size_t li = 0; li < dec_.size(); ++li) {
    const DecLayer& L = dec_[li];
    void* KV_self = at(b.self_kv, li * self_layer);
    cuda::layer_norm(dt, x, L.self_attn.ln_g.raw(), L.self_attn.ln_b.raw(), h, n, d, kLnEps, stream_);
    linear(h, n, L.self_attn.qkv_w, L.self_attn.qkv_b, qkv, false);
    cuda::copy_rows(dt, at(b.qkv, d), 3 * d, nullptr, KV_self, 2 * d, kv_rows, n, 2 * d, stream_);  // K | V
    cuda::attention_decode(dt, qkv, 3 * d, 3 * d, KV_self, 2 * d, ctx * 2 * d, at(b.self_kv, li * self_layer + d),
                           2 * d, ctx * 2 * d, att, d, d, self_len, slot, n, heads, 64, ctx, scr, stream_, self_paged);
    linear(att, n, L.self_attn.out_w, L.self_attn.out_b, x, true);
    cuda::layer_norm(dt, x, L.cross_attn.ln_g.raw(), L.cross_attn.ln_b.raw(), h, n, d, kLnEps, stream_);
    linear(h, n, L.cross_attn.qkv_w, L.cross_attn.qkv_b, qkv, false);  // q only: [n, d]
    const Tensor& cout_b = cross(li);
    linear(att, n, L.cross_attn.out_w, cout_b, x, true);
    cuda::layer_norm(dt, x, L.ffn.ln_g.raw(), L.ffn.ln_b.raw(), h, n, d, kLnEps, stream_);
    linear_gelu(h, n, L.ffn.fc1_w, L.ffn.fc1_b, ff);
    linear(ff, n, L.ffn.fc2_w, L.ffn.fc2_b, x, true);
  }
}

void WhisperModelCuda::logits(WhisperBatchCuda& b, const Tensor& x, const int32_t* rows, int m, int out_row) const {
  const WhisperConfig& c = config_;
  const int64_t d = c.d_model, vocab = c.vocab_size;
  SC_CHECK(m >= 1 && out_row >= 0 && out_row + m <= 2 * b.slots, ErrorCode::kInvalidArgument, "logits: ", m,
           " rows at ", out_row, " do not fit");
  Tensor tmp;
  void* h = b.h.raw();
  if (m > b.slots) {
    tmp = scratch(m, d);
    h = tmp.raw();
  }
  float* out = b.logits.data<float>() + out_row * vocab;
  if (!rows && decode_fusion_ && m <= gemm_->gemv_max_rows()) {  // final layer norm inside the product
    cuda::GemvFusion f;
    f.ln_gamma = dec_ln_g_.raw();
    f.ln_beta = dec_ln_b_.raw();
    f.ln_eps = kLnEps;
    cuda::gemv(dtype_, x.raw(), tok_emb_.raw(), nullptr, out, true, m, vocab, d, false, false, stream_, &f);
    return;
  }
  if (rows) {
    cuda::copy_rows(dtype_, x.raw(), d, rows, h, d, nullptr, m, d, stream_);
    cuda::layer_norm(dtype_, h, dec_ln_g_.raw(), dec_ln_b_.raw(), h, m, d, kLnEps, stream_);
  } else {
    cuda::layer_norm(dtype_, x.raw(), dec_ln_g_.raw(), dec_ln_b_.raw(), h, m, d, kLnEps, stream_);
  }
  gemm_->linear_f32_out(dtype_, h, tok_emb_.raw(), out, m, vocab, d, stream_);
}

}  // namespace speechcore::models::whisper
