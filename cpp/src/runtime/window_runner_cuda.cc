// The CUDA WindowRunner: windows decoded as one batch on the GPU. The encoder runs over the
// batch in chunks, the prompts are prefilled together (right-padded), then every decoder step
// runs all unfinished windows at once (finished ones drop out: rows are re-packed and the
// attention kernels reach each window's caches through a slot map, so nothing is copied).
// Whisper's logits rules and the greedy pick run on the device; one step copies back only the
// chosen token ids and their log-probabilities.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <string>
#include <map>
#include <mutex>
#include <tuple>
#include <unordered_map>

#include "core/allocator.h"
#include "core/status.h"
#include "core/thread_pool.h"
#include "engine/step_runner.h"
#include "models/whisper/whisper_model_cuda.h"
#include "runtime/whisper_align.h"
#include "runtime/whisper_beam.h"
#include "runtime/whisper_decoding.h"
#include "io/audio.h"
#include "speechcore_cuda/mel.h"
#include "speechcore_cuda/sampling.h"

namespace speechcore::runtime {

namespace {

using models::whisper::WhisperBatchCuda;
using models::whisper::WhisperModelCuda;

constexpr int kMaxSlots = 256;        // windows decoded together at most
constexpr int kEncoderChunk = 8;      // windows per encoder forward pass
constexpr size_t kReserveBytes = size_t(1) << 30;  // left free for cuBLASLt, graphs, other users
constexpr size_t kGraphReserveBytes = size_t(256) << 20;  // the engine's graphs and small buffers

struct HostBuffer {  // pinned host staging (asynchronous copies, no pageable bounce)
  void* ptr = nullptr;
  size_t bytes = 0;
  void reserve(size_t n) {
    if (n <= bytes) return;
    if (ptr) cudaFreeHost(ptr);
    ptr = nullptr;
    bytes = 0;
    SC_CUDA_CHECK(cudaMallocHost(&ptr, n));
    bytes = n;
  }
  ~HostBuffer() {
    if (ptr) cudaFreeHost(ptr);
  }
  template <typename T> T* as() { return static_cast<T*>(ptr); }
};

// The logits rules' parameters of a window (the device-side twin of apply_whisper_logits_rules).
cuda::WhisperRuleParams rule_params(const WhisperSpecialTokens& sp, const WindowOptions& o, bool timestamps) {
  cuda::WhisperRuleParams p;
  p.eot = sp.eot;
  p.no_timestamps = sp.no_timestamps;
  p.timestamp_begin = sp.timestamp_begin;
  p.timestamp_end = sp.timestamp_end;
  p.max_initial_timestamp_index = o.max_initial_timestamp_index;
  p.timestamps = timestamps;
  return p;
}

// What both CUDA runners decode (needs_search's windows through the host-side search) and
// align (CudaWindowRunner::align).
DecodingSupport cuda_decoding_support() {
  DecodingSupport s;
  s.beam_search = true;
  s.sampling = true;
  s.penalties = true;
  s.word_timestamps = true;
  s.prefix = true;
  return s;
}

Tensor device_ints(int64_t n) { return Tensor::empty({std::max<int64_t>(n, 1)}, DType::kInt32, Device::kCUDA); }

// SPEECHCORE_PROFILE=1: per batch, wall time of the encoder, the prefill and the decoder steps on
// stderr (each phase synchronized; for measurements only).
bool profile_enabled() {
  const char* v = std::getenv("SPEECHCORE_PROFILE");
  return v && std::string(v) == "1";
}

bool graphs_enabled() {
  const char* v = std::getenv("SPEECHCORE_CUDA_GRAPHS");
  return !(v && std::string(v) == "0");
}

// The engine's decoder steps run over a bucket of rows: the count itself up to 16, else the next
// multiple of 8 (at most the batch's slots). Each bucket gets one CUDA graph, so a batch whose
// row count moves (windows joining and leaving) replays graphs instead of launching steps
// eagerly (~25 ms of host time each at large-v3 batch 128). Small counts stay exact: a padding
// row's cross-attention costs about as much as a real row's, a large share at a few rows
// (serving). SPEECHCORE_STEP_BUCKETS=0 (or SPEECHCORE_CUDA_GRAPHS=0): exact counts.
bool step_buckets_enabled() {
  const char* v = std::getenv("SPEECHCORE_STEP_BUCKETS");
  return !(v && std::string(v) == "0");
}
int step_bucket(int rows, int slots) { return rows <= 16 ? rows : std::min((rows + 7) / 8 * 8, slots); }

// A batch's device state kept between calls (so repeated calls of the same shape reuse memory
// and captured graphs), with one CUDA graph per number of active rows: a decoder step plus the
// logits, replayed with one launch instead of ~15 per layer.
struct CachedBatch {
  WhisperBatchCuda batch;
  std::map<int, cudaGraphExec_t> graphs;
  int last_rows = -1;  // a graph is captured when a row count repeats
  CachedBatch() = default;
  CachedBatch(const CachedBatch&) = delete;
  CachedBatch& operator=(const CachedBatch&) = delete;
  ~CachedBatch() {
    for (auto& [rows, exec] : graphs) cudaGraphExecDestroy(exec);
  }
};

// Sampling on the device for one window's rows (SearchRows::decode_draw): the window's logits
// rules (suppress lists on the device), and per step each row's history (its generated tokens)
// and uniform uploaded, cuda::whisper_sample_step over the rows' logits, tokens and log-probs
// back through pinned memory. enqueue() only enqueues; the caller synchronizes the stream
// before results().
class DeviceDraws {
 public:
  DeviceDraws(const WhisperSpecialTokens& sp, const WindowOptions& o, bool timestamps, int rows, int max_steps)
      : params_(rule_params(sp, o, timestamps)), temperature_(o.temperature), rows_(rows), max_steps_(max_steps),
        n_suppress_(static_cast<int>(o.suppress_tokens.size())),
        n_begin_(static_cast<int>(o.suppress_tokens_begin.size())) {
    std::vector<int32_t> lists(o.suppress_tokens.begin(), o.suppress_tokens.end());
    lists.insert(lists.end(), o.suppress_tokens_begin.begin(), o.suppress_tokens_begin.end());
    lists_ = device_ints(static_cast<int64_t>(lists.size()));
    if (!lists.empty())
      SC_CUDA_CHECK(cudaMemcpy(lists_.raw(), lists.data(), lists.size() * 4, cudaMemcpyHostToDevice));
    // int32 offsets (device and pinned host alike): histories [rows, max_steps], steps [rows],
    // uniforms (float64, 8-byte aligned) [rows], then the outputs: tokens [rows], log-probs [rows]
    steps_at_ = static_cast<size_t>(rows) * max_steps;
    uniforms_at_ = (steps_at_ + rows + 1) / 2 * 2;
    out_at_ = uniforms_at_ + 2 * static_cast<size_t>(rows);
    ints_ = device_ints(static_cast<int64_t>(out_at_ + 2 * static_cast<size_t>(rows)));
    host_.reserve((out_at_ + 2 * static_cast<size_t>(rows)) * 4);
  }

  void set(const std::vector<double>& uniforms, const std::vector<const std::vector<int>*>& history) {
    SC_CHECK(uniforms.size() == history.size() && static_cast<int>(uniforms.size()) <= rows_, ErrorCode::kInternal,
             "device draws for ", uniforms.size(), " rows of ", rows_);
    count_ = static_cast<int>(uniforms.size());
    int32_t* h = host_.as<int32_t>();
    for (int r = 0; r < count_; ++r) {
      const std::vector<int>& t = *history[r];
      SC_CHECK(static_cast<int>(t.size()) <= max_steps_, ErrorCode::kInternal, "a history of ", t.size(), " tokens");
      std::copy(t.begin(), t.end(), h + static_cast<size_t>(r) * max_steps_);
      h[steps_at_ + r] = static_cast<int32_t>(t.size());
    }
    std::memcpy(h + uniforms_at_, uniforms.data(), uniforms.size() * sizeof(double));
  }

  // The draws over logits [count, vocab] (device float32, masked in place).
  void enqueue(float* logits, int count, int vocab, cudaStream_t stream) {
    SC_CHECK(count == count_, ErrorCode::kInternal, "device draws set for ", count_, " rows, stepped ", count);
    int32_t* h = host_.as<int32_t>();
    int32_t* d = ints_.data<int32_t>();
    SC_CUDA_CHECK(cudaMemcpyAsync(d, h, out_at_ * 4, cudaMemcpyHostToDevice, stream));
    const int32_t* lists = lists_.data<int32_t>();
    int32_t* tok = d + out_at_;
    cuda::whisper_sample_step(logits, d, nullptr, false, d + steps_at_, lists, n_suppress_, lists + n_suppress_,
                              n_begin_, params_, reinterpret_cast<const double*>(d + uniforms_at_), temperature_, tok,
                              reinterpret_cast<float*>(tok + rows_), count, vocab, max_steps_, stream);
    SC_CUDA_CHECK(cudaMemcpyAsync(h + out_at_, tok, 2 * static_cast<size_t>(rows_) * 4, cudaMemcpyDeviceToHost, stream));
  }

  void results(int* picked, float* logprobs, int count) const {
    SC_CHECK(count == count_, ErrorCode::kInternal, "device draws of ", count_, " rows read as ", count);
    const int32_t* out = const_cast<HostBuffer&>(host_).as<int32_t>() + out_at_;
    std::copy(out, out + count, picked);
    std::memcpy(logprobs, out + rows_, static_cast<size_t>(count) * sizeof(float));
  }

 private:
  cuda::WhisperRuleParams params_;
  float temperature_;
  int rows_, max_steps_, n_suppress_, n_begin_;
  int count_ = 0;
  size_t steps_at_ = 0, uniforms_at_ = 0, out_at_ = 0;
  Tensor lists_, ints_;
  HostBuffer host_;
};

// The device draws of a sampled window's `rows` candidates (null for beams and greedy).
std::unique_ptr<DeviceDraws> device_draws(const WhisperSpecialTokens& sp, const WindowOptions& o,
                                          const PromptLayout& layout, int rows) {
  if (o.temperature <= 0.0f) return nullptr;
  return std::make_unique<DeviceDraws>(sp, o, layout.timestamps, rows, std::max(layout.max_new, 1));
}

class CudaWindowRunner final : public WindowRunner {
  friend class CudaStepRunner;
  friend class CudaSearchRows;

 public:
  CudaWindowRunner(const models::whisper::WhisperWeights& weights, cuda::DataType dtype) : model_(weights, dtype) {}
  const models::whisper::WhisperConfig& config() const override { return model_.config(); }
  std::string device() const override { return "cuda"; }
  std::string compute_type() const override { return cuda::data_type_name(model_.dtype()); }
  size_t weight_bytes() const { return model_.weight_bytes(); }
  int absorb_min_slots() const { return model_.absorb_min_slots(); }
  std::string decoder_step() const {
    if (model_.persistent_step() && model_.decode_fusion()) return "persistent";
    if (!model_.decode_fusion()) return "unfused";
    // one-kernel attention sub-layers (SPEECHCORE_SELF_QKV_FUSED / SPEECHCORE_CROSS_QUERY_FUSED=0
    // off), their output products folded in (SPEECHCORE_OUT_FOLD=1)
    return std::string("fused") + (model_.self_qkv_fused() ? "+self_qkv" : "") +
           (model_.cross_query_fused() ? "+cross_query" : "") + (model_.out_fold() ? "+out_fold" : "");
  }
  // The GPU keeps no encoder output between calls: a fallback attempt encodes its window again
  // (WindowRequest::encoder_output is for backends that keep them, the CPU).
  uint64_t encoder_passes() const override { return model_.encoder_passes(); }
  DecodingSupport decoding_support() const override { return cuda_decoding_support(); }

  WindowResult run(const float* mel, const std::vector<int>& prompt, const WhisperSpecialTokens& special,
                   const WindowOptions& options) const override {
    std::vector<WindowRequest> one(1);
    one[0].mel = mel;
    one[0].prompt = prompt;
    one[0].options = options;
    return run_batch(one, special)[0];
  }

  std::vector<WindowResult> run_batch(const std::vector<WindowRequest>& requests,
                                      const WhisperSpecialTokens& special) const override {
    std::vector<PromptLayout> layouts;
    for (const WindowRequest& r : requests) {
      SC_CHECK(r.mel != nullptr, ErrorCode::kInvalidArgument, "run_batch: a window has no features");
      layouts.push_back(prompt_layout(r.prompt, special, r.options));  // reject bad prompts up front
    }
    // Windows decoded together share the logits rules' parameters.
    using Key = std::tuple<std::vector<int>, std::vector<int>, int, bool>;
    std::map<Key, std::vector<int>> groups;
    for (size_t i = 0; i < requests.size(); ++i) {
      const WindowOptions& o = requests[i].options;
      groups[Key(o.suppress_tokens, o.suppress_tokens_begin, o.max_initial_timestamp_index, layouts[i].timestamps)]
          .push_back(static_cast<int>(i));
    }
    std::vector<WindowResult> results(requests.size());
    std::lock_guard<std::mutex> lock(mutex_);  // one stream per model: one batch at a time
    for (auto& [key, members] : groups) {
      // Beam search, sampling and host-side rules: one window at a time, its rows in lock step
      // (search_window).
      std::vector<int> greedy;
      for (int i : members) {
        if (needs_search(requests[i].options, layouts[i]))
          results[i] = search_window(requests[i], special);
        else
          greedy.push_back(i);
      }
      members = std::move(greedy);
    }
    for (const auto& [key, members] : groups) {
      size_t done = 0;
      while (done < members.size()) {
        const int n = slots_for(requests, layouts, members, done);
        std::vector<int> chunk(members.begin() + done, members.begin() + done + n);
        decode_chunk(requests, layouts, chunk, special, results);
        done += n;
      }
    }
    return results;
  }

  // On a mel stage's own stream and buffers, without the model's lock: the engine prepares
  // requests on other threads while its step loop decodes (neither waits for the other), and
  // up to kMelStages of them compute their features at once.
  Tensor log_mel(const std::vector<float>& samples) const override {
    const int padding = io::MelOptions().padding;
    // Clips under a second cost little on the CPU, which also reports too-short input.
    if (samples.size() < static_cast<size_t>(io::kWhisperSampleRate)) return WindowRunner::log_mel(samples);
    const int nm = config().n_mels;
    const int64_t n = static_cast<int64_t>(samples.size());
    const int64_t frames = cuda::log_mel_num_frames(n, padding);
    std::unique_lock<std::mutex> lock;
    MelStage* stage = nullptr;
    for (MelStage& m : mel_) {  // a free stage, else wait for one in turn
      lock = std::unique_lock<std::mutex>(m.mutex, std::try_to_lock);
      if (lock.owns_lock()) {
        stage = &m;
        break;
      }
    }
    if (stage == nullptr) {
      stage = &mel_[mel_turn_.fetch_add(1) % kMelStages];
      lock = std::unique_lock<std::mutex>(stage->mutex);
    }
    MelStage& m = *stage;
    if (m.stream == nullptr) {
      SC_CUDA_CHECK(cudaStreamCreateWithFlags(&m.stream, cudaStreamNonBlocking));
      const std::vector<float> f = io::mel_filters(io::kWhisperSampleRate, cuda::kMelNFft, nm);
      m.filters = m.buffer(0, f.size() * sizeof(float));
      SC_CUDA_CHECK(cudaMemcpy(m.filters, f.data(), f.size() * sizeof(float), cudaMemcpyHostToDevice));
    }
    const size_t audio_bytes = static_cast<size_t>(n) * sizeof(float);
    const size_t mel_bytes = static_cast<size_t>(nm * frames) * sizeof(float);
    float* audio = static_cast<float*>(m.buffer(1, audio_bytes));
    float* mel = static_cast<float*>(m.buffer(2, mel_bytes));
    void* scratch = m.buffer(3, std::max<size_t>(cuda::log_mel_scratch_bytes(n, padding, nm), 16));
    // through pinned staging: a pageable copy goes through the driver's own bounce buffers
    void* pinned = m.host(std::max(audio_bytes, mel_bytes));
    Tensor out = Tensor::empty({nm, frames}, DType::kFloat32, Device::kCPU);
    std::memcpy(pinned, samples.data(), audio_bytes);
    SC_CUDA_CHECK(cudaMemcpyAsync(audio, pinned, audio_bytes, cudaMemcpyHostToDevice, m.stream));
    cuda::log_mel(audio, n, padding, static_cast<const float*>(m.filters), nm, mel, scratch, m.stream);
    SC_CUDA_CHECK(cudaMemcpyAsync(pinned, mel, mel_bytes, cudaMemcpyDeviceToHost, m.stream));
    SC_CUDA_CHECK(cudaStreamSynchronize(m.stream));
    std::memcpy(out.raw(), pinned, mel_bytes);
    return out;
  }

  std::unique_ptr<engine::StepRunner> make_step_runner(const engine::StepRunnerConfig& config) const override;
  const WhisperModelCuda& model() const { return model_; }

  // Word alignment (whisper_align.h): the window encoded again (the GPU keeps no encoder output
  // past its decoding), one prefill of the alignment input capturing the alignment heads' raw
  // cross-attention scores, the text rows' logits; the post-processing and DTW on the host.
  Alignment align(const AlignRequest& request, const WhisperSpecialTokens& special) const override {
    const auto& cfg = config();
    const AlignInput in = alignment_input(request, special, cfg);
    if (in.text_length == 0) return {};
    SC_CHECK(request.mel != nullptr, ErrorCode::kInvalidArgument, "align: no features");
    const cudaStream_t stream = model_.stream();
    const int len = static_cast<int>(in.tokens.size());
    const int64_t t_enc = cfg.n_audio_ctx;
    models::whisper::CrossScoresCuda capture;
    capture.heads = alignment_heads(cfg);
    const int64_t n_scores = static_cast<int64_t>(capture.heads.size()) * len * t_enc;
    std::lock_guard<std::mutex> lock(mutex_);
    WhisperBatchCuda& b = batch_for(1, len);
    Tensor scores = Tensor::empty({std::max<int64_t>(n_scores, 1)}, DType::kFloat32, Device::kCUDA);
    capture.scores = scores.data<float>();
    model_.encode(&request.mel, 1, b, 0, 1);
    Tensor x = prefill(b, {in.tokens}, len, 0, nullptr, nullptr, &capture);
    // logits of the text rows, as many per pass as the batch's logits buffer holds
    const int vocab = cfg.vocab_size;
    const int per_pass = static_cast<int>(b.logits.dim(0));
    std::vector<float> logits(static_cast<size_t>(in.text_length) * vocab);
    Tensor rows = device_ints(in.text_length);
    SC_CUDA_CHECK(cudaMemcpyAsync(rows.raw(), in.logit_rows.data(), static_cast<size_t>(in.text_length) * 4,
                                  cudaMemcpyHostToDevice, stream));
    for (int r0 = 0; r0 < in.text_length; r0 += per_pass) {
      const int m = std::min(per_pass, in.text_length - r0);
      model_.logits(b, x, rows.data<int32_t>() + r0, m, 0);
      SC_CUDA_CHECK(cudaMemcpyAsync(logits.data() + static_cast<size_t>(r0) * vocab, b.logits.data<float>(),
                                    static_cast<size_t>(m) * vocab * sizeof(float), cudaMemcpyDeviceToHost, stream));
    }
    std::vector<float> host_scores(static_cast<size_t>(n_scores));
    SC_CUDA_CHECK(cudaMemcpyAsync(host_scores.data(), scores.raw(), host_scores.size() * sizeof(float),
                                  cudaMemcpyDeviceToHost, stream));
    SC_CUDA_CHECK(cudaStreamSynchronize(stream));
    return alignment_result(request, special, cfg, in, logits.data(), std::move(host_scores),
                            static_cast<int>(capture.heads.size()));
  }

  std::vector<float> prompt_logits(const float* mel, const std::vector<int>& prompt) const override {
    const int len = static_cast<int>(prompt.size());
    SC_CHECK(len >= 1 && len <= config().n_text_ctx, ErrorCode::kInvalidArgument, "prompt_logits: the prompt needs 1 to ",
             config().n_text_ctx, " tokens");
    for (int t : prompt)
      SC_CHECK(t >= 0 && t < config().vocab_size, ErrorCode::kInvalidArgument, "token id ", t,
               " is outside the vocabulary (", config().vocab_size, ")");
    std::lock_guard<std::mutex> lock(mutex_);
    WhisperBatchCuda& b = batch_for(1, len);
    model_.encode(&mel, 1, b, 0, 1);
    Tensor x = prefill(b, {prompt}, len);
    Tensor row = device_ints(1);
    const int32_t last = len - 1;
    SC_CUDA_CHECK(cudaMemcpyAsync(row.raw(), &last, 4, cudaMemcpyHostToDevice, model_.stream()));
    model_.logits(b, x, row.data<int32_t>(), 1, 0);
    std::vector<float> out(static_cast<size_t>(config().vocab_size));
    SC_CUDA_CHECK(cudaMemcpyAsync(out.data(), b.logits.data<float>(), out.size() * sizeof(float),
                                  cudaMemcpyDeviceToHost, model_.stream()));
    SC_CUDA_CHECK(cudaStreamSynchronize(model_.stream()));
    return out;
  }

 private:
  // One window decoded by beam search or sampling (whisper_beam.h's search over CudaSearchRows).
  WindowResult search_window(const WindowRequest& request, const WhisperSpecialTokens& special) const;

  // The batch of a search over `rows` rows of up to ctx positions: the cached one when the
  // shape matches, else a new one with a paged self-attention pool of 2 * rows blocks of ctx
  // positions (one block per row, and as many spare for reordering).
  CachedBatch& search_batch(int rows, int ctx) const {
    ctx = round_ctx(ctx);
    if (search_cached_ && search_cached_->batch.slots == rows && search_cached_->batch.ctx == ctx)
      return *search_cached_;
    search_cached_.reset();
    const auto& cfg = config();
    auto c = std::make_unique<CachedBatch>();
    WhisperBatchCuda& b = c->batch;
    b = model_.new_batch(rows, ctx, 0);
    b.self_kv = Tensor::empty({cfg.decoder_layers, static_cast<int64_t>(2 * rows) * ctx, 2 * cfg.d_model},
                              b.x.dtype(), Device::kCUDA);
    b.block_size = ctx;
    b.table_stride = 1;
    b.block_table = device_ints(rows);
    search_cached_ = std::move(c);
    return *search_cached_;
  }

  // How many of members[first..] to decode together: bounded by kMaxSlots and by free memory.
  int slots_for(const std::vector<WindowRequest>& requests, const std::vector<PromptLayout>& layouts,
                const std::vector<int>& members, size_t first) const {
    const int remaining = static_cast<int>(members.size() - first);
    int ctx = 1, len = 1;
    for (size_t i = first; i < members.size(); ++i) {
      const int pl = static_cast<int>(requests[members[i]].prompt.size());
      len = std::max(len, pl);
      ctx = std::max(ctx, pl + std::max(layouts[members[i]].max_new, 0));
    }
    ctx = round_ctx(std::max(ctx, len));
    size_t free_bytes = 0, total = 0;
    SC_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total));
    free_bytes += core::default_allocator(Device::kCUDA).stats().bytes_cached;
    if (cached_)  // reusable
      free_bytes += cached_->batch.slots * model_.bytes_per_slot(cached_->batch.ctx, cached_->batch.absorbed);
    const size_t fixed = kReserveBytes + model_.encoder_bytes(kEncoderChunk);
    const size_t prefill = static_cast<size_t>(len) * 10 * config().d_model * cuda::data_type_size(model_.dtype());
    auto fit_for = [&](bool absorbed) {  // slots that fit when each takes a K/V or an absorbed slot
      const size_t per_slot = model_.bytes_per_slot(ctx, absorbed) + prefill;
      return free_bytes > fixed ? static_cast<int64_t>((free_bytes - fixed) / per_slot) : int64_t{0};
    };
    int64_t fit = fit_for(false);
    SC_CHECK(fit >= 1, ErrorCode::kOutOfMemory, "not enough GPU memory to decode one window (",
             (free_bytes >> 20), " MiB free, need about ", ((fixed + model_.bytes_per_slot(ctx) + prefill) >> 20),
             " MiB)");
    // A batch large enough for absorbed cross-attention (model_.absorbed_for) needs far less a slot.
    const int64_t fit_absorbed = fit_for(true);
    if (model_.absorbed_for(static_cast<int>(std::min<int64_t>({fit_absorbed, remaining, kMaxSlots}))))
      fit = fit_absorbed;
    return static_cast<int>(std::min<int64_t>({fit, remaining, kMaxSlots}));
  }

  int round_ctx(int ctx) const { return std::min((ctx + 63) / 64 * 64, config().n_text_ctx); }

  // The batch state for n windows of up to ctx positions: the cached one when it fits without
  // wasting more than half of it, else a new one (the old one is freed first).
  WhisperBatchCuda& batch_for(int n, int ctx) const {
    ctx = round_ctx(ctx);
    if (cached_ && cached_->batch.slots >= n && cached_->batch.slots <= 2 * n && cached_->batch.ctx == ctx)
      return cached_->batch;
    cached_.reset();
    auto c = std::make_unique<CachedBatch>();
    c->batch = model_.new_batch(n, ctx);
    cached_ = std::move(c);
    return cached_->batch;
  }

  // One decoder step for `rows` active rows plus their logits: eager the first time a row count
  // is seen, captured into a CUDA graph when it repeats, replayed after that.
  // Returns how: 0 eager, 1 captured (and launched), 2 a captured graph replayed.
  int step_and_logits(int rows) const { return step_and_logits(*cached_, rows); }
  int step_and_logits(CachedBatch& c, int rows) const {
    WhisperBatchCuda& b = c.batch;
    const cudaStream_t stream = model_.stream();
    auto eager = [&] {
      model_.step(b, rows);
      model_.logits(b, b.x, nullptr, rows, 0);
      return 0;
    };
    if (!use_graphs_) return eager();
    auto it = c.graphs.find(rows);
    const bool capture = it == c.graphs.end();
    if (capture) {
      if (c.last_rows != rows) {
        c.last_rows = rows;
        return eager();
      }
      cudaGraph_t graph = nullptr;
      SC_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
      try {
        eager();
      } catch (...) {
        cudaStreamEndCapture(stream, &graph);
        if (graph) cudaGraphDestroy(graph);
        throw;
      }
      SC_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
      cudaGraphExec_t exec = nullptr;
      const cudaError_t rc = cudaGraphInstantiate(&exec, graph, 0);
      cudaGraphDestroy(graph);
      SC_CUDA_CHECK(rc);
      it = c.graphs.emplace(rows, exec).first;
    }
    SC_CUDA_CHECK(cudaGraphLaunch(it->second, stream));
    return capture ? 1 : 2;
  }

  // Prefill prompts (slot i <- prompts[i]) right-padded to `len`; returns the hidden states.
  // Uses the pinned buffer's first 3 * n * len ints and waits for the copy.
  // With kv_row (a paged batch), prompt i's position j K/V go to row kv_row(i, j), and slots
  // lists each prompt's cross-attention slot.
  Tensor prefill(WhisperBatchCuda& b, const std::vector<std::vector<int>>& prompts, int len, int slot0 = 0,
                 const std::function<int32_t(int, int)>& kv_row = nullptr, const int* slots = nullptr,
                 const models::whisper::CrossScoresCuda* capture = nullptr) const {
    const int n = static_cast<int>(prompts.size());
    const int64_t R = static_cast<int64_t>(n) * len;
    const int64_t arrays = slots ? 5 : 3;  // with slots: each row's slot and cross-attention length too
    host_.reserve(static_cast<size_t>(arrays * R) * sizeof(int32_t));
    int32_t* h = host_.as<int32_t>();
    for (int i = 0; i < n; ++i)
      for (int j = 0; j < len; ++j) {
        const int64_t r = static_cast<int64_t>(i) * len + j;
        const std::vector<int>& p = prompts[i];
        h[r] = j < static_cast<int>(p.size()) ? p[j] : p.back();  // padding: any valid id
        h[R + r] = j;
        h[2 * R + r] = kv_row ? kv_row(i, j) : static_cast<int32_t>(static_cast<int64_t>(slot0 + i) * b.ctx + j);
        if (slots) {
          h[3 * R + r] = slots[i];
          h[4 * R + r] = config().n_audio_ctx;
        }
      }
    Tensor ints = device_ints(arrays * R);
    SC_CUDA_CHECK(cudaMemcpyAsync(ints.raw(), h, static_cast<size_t>(arrays * R) * 4, cudaMemcpyHostToDevice,
                                  model_.stream()));
    SC_CUDA_CHECK(cudaStreamSynchronize(model_.stream()));  // the pinned buffer is reused next
    return model_.prefill(b, ints.data<int32_t>(), n, len, slot0, slots, capture);
  }

  void decode_chunk(const std::vector<WindowRequest>& requests, const std::vector<PromptLayout>& layouts,
                    const std::vector<int>& chunk, const WhisperSpecialTokens& sp,
                    std::vector<WindowResult>& results) const {
    const auto& cfg = config();
    const cudaStream_t stream = model_.stream();
    const int n = static_cast<int>(chunk.size());
    const int vocab = cfg.vocab_size;
    const WindowOptions& o = requests[chunk[0]].options;
    int len = 1, ctx = 1, max_steps = 1;
    std::vector<std::vector<int>> prompts;
    std::vector<const float*> mels;
    for (int idx : chunk) {
      const int pl = static_cast<int>(requests[idx].prompt.size());
      len = std::max(len, pl);
      ctx = std::max(ctx, pl + std::max(layouts[idx].max_new, 0));
      max_steps = std::max(max_steps, layouts[idx].max_new);
      prompts.push_back(requests[idx].prompt);
      mels.push_back(requests[idx].mel);
    }
    using Clock = std::chrono::steady_clock;
    const Clock::time_point t0 = Clock::now();
    auto mark = [&] {
      if (!profile_) return Clock::now();
      SC_CUDA_CHECK(cudaStreamSynchronize(stream));
      return Clock::now();
    };
    WhisperBatchCuda& b = batch_for(n, std::max(ctx, len));
    ctx = b.ctx;
    model_.encode(mels.data(), n, b, 0, kEncoderChunk);
    const Clock::time_point t_enc = mark();
    Tensor x = prefill(b, prompts, len);

    // Pinned staging, one region per purpose so no host write races an asynchronous copy:
    // logits rows [2n], suppress lists, step inputs [6 S] (laid out as b.step_ints, so that one
    // copy a step uploads them), downloads [3n].
    const int n_sup = static_cast<int>(o.suppress_tokens.size()), n_beg = static_cast<int>(o.suppress_tokens_begin.size());
    const int S = b.slots;
    host_.reserve(static_cast<size_t>(2 * n + n_sup + n_beg + WhisperBatchCuda::kStepArrays * S + 3 * n) * 4);
    int32_t* h_rows = host_.as<int32_t>();
    int32_t* h_sup = h_rows + 2 * n;
    int32_t* h = h_sup + n_sup + n_beg;                 // step inputs
    int32_t* tok = h + WhisperBatchCuda::kStepArrays * S;  // downloads: token, log-prob, no-speech probability
    float* lp = reinterpret_cast<float*>(tok + n);
    const float* h_ns = reinterpret_cast<const float*>(tok + 2 * n);

    // logits at each window's start-of-transcript row (no-speech probability) and last row
    for (int i = 0; i < n; ++i) {
      h_rows[i] = i * len + layouts[chunk[i]].sot_index;
      h_rows[n + i] = i * len + static_cast<int>(prompts[i].size()) - 1;
    }
    Tensor rows = device_ints(2 * n);
    SC_CUDA_CHECK(cudaMemcpyAsync(rows.raw(), h_rows, static_cast<size_t>(2 * n) * 4, cudaMemcpyHostToDevice, stream));
    model_.logits(b, x, rows.data<int32_t>(), 2 * n, 0);
    x = Tensor();

    // the rules' parameters and the device-side history of generated tokens
    const cuda::WhisperRuleParams p = rule_params(sp, o, layouts[chunk[0]].timestamps);
    Tensor suppress = device_ints(n_sup + n_beg);
    Tensor generated = device_ints(static_cast<int64_t>(n) * max_steps);
    Tensor picked = device_ints(2 * n + n);  // next token [n], log-prob [n] (float), no-speech [n] (float)
    int32_t* d_tok = picked.data<int32_t>();
    float* d_lp = reinterpret_cast<float*>(d_tok + n);
    float* d_ns = reinterpret_cast<float*>(d_tok + 2 * n);
    std::copy(o.suppress_tokens.begin(), o.suppress_tokens.end(), h_sup);
    std::copy(o.suppress_tokens_begin.begin(), o.suppress_tokens_begin.end(), h_sup + n_sup);
    if (n_sup + n_beg > 0)
      SC_CUDA_CHECK(cudaMemcpyAsync(suppress.raw(), h_sup, static_cast<size_t>(n_sup + n_beg) * 4,
                                    cudaMemcpyHostToDevice, stream));
    SC_CUDA_CHECK(cudaMemsetAsync(b.step_array(5), 0, static_cast<size_t>(n) * 4, stream));  // step 0 for all
    const int32_t* d_sup = suppress.data<int32_t>();
    auto pick = [&](const float* logits_rows, int rows_n, const int32_t* slot_map) {
      cuda::whisper_greedy_step(const_cast<float*>(logits_rows), generated.data<int32_t>(), slot_map, true,
                                b.step_array(5), d_sup, n_sup, d_sup + n_sup, n_beg, p, d_tok, d_lp, rows_n, vocab,
                                max_steps, stream);
    };
    cuda::no_speech_prob(b.logits.data<float>(), n, vocab, sp.no_speech >= 0 ? sp.no_speech : 0, d_ns, stream);
    pick(b.logits.data<float>() + static_cast<int64_t>(n) * vocab, n, nullptr);
    SC_CUDA_CHECK(cudaMemcpyAsync(tok, d_tok, static_cast<size_t>(3 * n) * 4, cudaMemcpyDeviceToHost, stream));
    SC_CUDA_CHECK(cudaStreamSynchronize(stream));

    const Clock::time_point t_pre = mark();
    int steps = 0;
    std::vector<WindowResult> out(static_cast<size_t>(n));
    std::vector<char> finished(static_cast<size_t>(n), 0);
    for (int i = 0; i < n; ++i) {
      out[i].no_speech_prob = sp.no_speech >= 0 ? h_ns[i] : 0.0f;
      if (layouts[chunk[i]].max_new <= 0) finished[i] = 1;
    }
    std::vector<int> active(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) active[i] = i;
    while (true) {
      // the tokens picked for the rows of `active`
      std::vector<int> next;
      for (size_t r = 0; r < active.size(); ++r) {
        const int i = active[r];
        if (finished[i]) continue;
        if (add_pick(out[i], tok[r], lp[r], sp.eot, layouts[chunk[i]].max_new)) finished[i] = 1;
        else next.push_back(i);
      }
      active.swap(next);
      const int na = static_cast<int>(active.size());
      if (na == 0) break;
      // step inputs: id, position, KV row, slot, self-attention length, tokens generated so far
      for (int r = 0; r < na; ++r) {
        const int i = active[r];
        const int k = static_cast<int>(out[i].tokens.size());
        const int pos = static_cast<int>(prompts[i].size()) + k - 1;
        h[r] = out[i].tokens.back();
        h[S + r] = pos;
        h[2 * S + r] = i * ctx + pos;
        h[3 * S + r] = i;
        h[4 * S + r] = pos + 1;
        h[5 * S + r] = k;
      }
      // One copy: each array's first na entries (the rest of a slot row is not read for na rows).
      static_assert(WhisperBatchCuda::kStepArrays == 6, "the step inputs above fill 6 arrays");
      SC_CUDA_CHECK(cudaMemcpyAsync(b.step_array(0), h, static_cast<size_t>(5 * S + na) * 4, cudaMemcpyHostToDevice,
                                    stream));
      step_and_logits(na);
      ++steps;
      pick(b.logits.data<float>(), na, b.step_array(3));
      SC_CUDA_CHECK(cudaMemcpyAsync(tok, d_tok, static_cast<size_t>(2 * n) * 4, cudaMemcpyDeviceToHost, stream));
      SC_CUDA_CHECK(cudaStreamSynchronize(stream));  // token and log-prob of every active row
    }
    if (profile_) {
      const Clock::time_point t_end = Clock::now();
      auto ms = [](Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); };
      std::fprintf(stderr,
                   "[speechcore profile] %d windows: encoder %.2f ms, prefill+first pick %.2f ms, %d steps %.2f ms "
                   "(%.3f ms/step), ctx %d, graphs %s\n",
                   n, ms(t_enc - t0), ms(t_pre - t_enc), steps, ms(t_end - t_pre), steps ? ms(t_end - t_pre) / steps : 0.0,
                   ctx, use_graphs_ ? "on" : "off");
    }
    for (int i = 0; i < n; ++i) {
      finish_window(out[i]);
      results[chunk[i]] = std::move(out[i]);
    }
  }

  WhisperModelCuda model_;
  const bool use_graphs_ = graphs_enabled();
  const bool profile_ = profile_enabled();
  mutable std::mutex mutex_;
  mutable HostBuffer host_;
  mutable std::unique_ptr<CachedBatch> cached_;
  mutable std::unique_ptr<CachedBatch> search_cached_;
  // A log-mel stage: a stream, device buffers apart from the caching allocator (which does not
  // track streams: a block freed by the decoding stream with work pending could be handed out
  // here) and a pinned host buffer. Buffers only grow; the replaced ones are freed with the
  // runner (no cudaFree, which synchronizes the device, while the engine runs).
  struct MelStage {
    std::mutex mutex;
    cudaStream_t stream = nullptr;
    void* filters = nullptr;
    void* bufs[4] = {nullptr, nullptr, nullptr, nullptr};
    size_t sizes[4] = {0, 0, 0, 0};
    void* pinned = nullptr;
    size_t pinned_size = 0;
    std::vector<void*> retired, retired_pinned;
    static size_t grown(size_t bytes, size_t had) { return std::max(bytes + bytes / 4, had * 2); }  // room to grow
    void* buffer(int i, size_t bytes) {
      if (bytes > sizes[i]) {
        if (bufs[i] != nullptr) retired.push_back(bufs[i]);
        const size_t want = grown(bytes, sizes[i]);
        void* p = nullptr;
        SC_CUDA_CHECK(cudaMalloc(&p, want));
        bufs[i] = p;
        sizes[i] = want;
      }
      return bufs[i];
    }
    void* host(size_t bytes) {
      if (bytes > pinned_size) {
        if (pinned != nullptr) retired_pinned.push_back(pinned);
        const size_t want = grown(bytes, pinned_size);
        void* p = nullptr;
        SC_CUDA_CHECK(cudaHostAlloc(&p, want, cudaHostAllocDefault));
        pinned = p;
        pinned_size = want;
      }
      return pinned;
    }
    ~MelStage() {
      if (stream != nullptr) cudaStreamSynchronize(stream);
      for (void* p : retired) cudaFree(p);
      for (void* p : bufs) if (p != nullptr) cudaFree(p);
      for (void* p : retired_pinned) cudaFreeHost(p);
      if (pinned != nullptr) cudaFreeHost(pinned);
      if (stream != nullptr) cudaStreamDestroy(stream);
    }
  };
  static constexpr int kMelStages = 4;  // the engine's most preparation threads (EngineOptions)
  mutable std::array<MelStage, kMelStages> mel_;
  mutable std::atomic<unsigned> mel_turn_{0};
};

// The rows of a beam search or sampling over one window on the GPU: every row reads the
// window's cross-attention K/V in slot 0; row r's self-attention K/V fill one block of the
// search batch's paged pool (blocks_[r]), so reordering rows copies whole blocks on the device,
// or only renumbers them when no row is repeated. Each step's float32 logits come back to the
// host, where the search itself (whisper_beam.cc, shared with the CPU backend) picks tokens.
// The caller holds the runner's lock.
class CudaSearchRows final : public SearchRows {
 public:
  CudaSearchRows(const CudaWindowRunner& owner, const float* mel, int rows, int positions,
                 std::unique_ptr<DeviceDraws> draws)
      : owner_(owner), model_(owner.model_), c_(owner.search_batch(rows, positions)), draws_(std::move(draws)) {
    WhisperBatchCuda& b = c_.batch;
    model_.encode(&mel, 1, b, 0, 1);
    for (int i = 0; i < 2 * rows; ++i) (i < rows ? blocks_ : spare_).push_back(i);
  }

  bool can_draw() const override { return draws_ != nullptr; }
  void feed_draws(const std::vector<double>& uniforms, const std::vector<const std::vector<int>*>& history) override {
    draws_->set(uniforms, history);
  }
  void decode_draw(const int* tokens, int rows, int* picked, float* logprobs) override {
    run_step(tokens, rows);
    draws_->enqueue(c_.batch.logits.data<float>(), rows, model_.config().vocab_size, model_.stream());
    SC_CUDA_CHECK(cudaStreamSynchronize(model_.stream()));
    draws_->results(picked, logprobs, rows);
  }

  float prefill(const std::vector<int>& prompt, int sot_index, int no_speech, float* logits) override {
    WhisperBatchCuda& b = c_.batch;
    const cudaStream_t stream = model_.stream();
    const int vocab = model_.config().vocab_size;
    const int len = static_cast<int>(prompt.size());
    SC_CHECK(len >= 1 && len <= b.ctx, ErrorCode::kInvalidArgument, "the prompt (", len, " tokens) exceeds ", b.ctx,
             " positions");
    const int block = blocks_[0], ctx = b.ctx;
    Tensor x = owner_.prefill(b, {prompt}, len, 0, [&](int, int j) { return static_cast<int32_t>(block * ctx + j); });
    const int32_t rows[2] = {sot_index, len - 1};
    Tensor d_rows = device_ints(2);
    SC_CUDA_CHECK(cudaMemcpyAsync(d_rows.raw(), rows, sizeof(rows), cudaMemcpyHostToDevice, stream));
    model_.logits(b, x, d_rows.data<int32_t>(), 2, 0);
    std::vector<float> out(2 * static_cast<size_t>(vocab));
    SC_CUDA_CHECK(cudaMemcpyAsync(out.data(), b.logits.data<float>(), out.size() * sizeof(float),
                                  cudaMemcpyDeviceToHost, stream));
    SC_CUDA_CHECK(cudaStreamSynchronize(stream));
    std::copy(out.begin() + vocab, out.end(), logits);
    pos_ = len;
    return no_speech_probability(out.data(), vocab, no_speech);
  }

  void broadcast(int rows) override {
    SC_CHECK(rows >= 1 && rows <= c_.batch.slots, ErrorCode::kInternal, "broadcast to ", rows, " rows");
    for (int r = 1; r < rows; ++r) copy_block(blocks_[0], blocks_[r]);
    spare_.insert(spare_.end(), blocks_.begin() + rows, blocks_.end());  // rows not needed
    blocks_.resize(static_cast<size_t>(rows));
    rows_ = rows;
  }

  void decode(const int* tokens, int rows, float* logits) override {
    run_step(tokens, rows);
    const size_t n = static_cast<size_t>(rows) * model_.config().vocab_size;
    SC_CUDA_CHECK(cudaMemcpyAsync(logits, c_.batch.logits.data<float>(), n * sizeof(float), cudaMemcpyDeviceToHost,
                                  model_.stream()));
    SC_CUDA_CHECK(cudaStreamSynchronize(model_.stream()));
  }

  // Enqueues one decoder step of the rows (their logits to the batch's logits buffer).
  void run_step(const int* tokens, int rows) {
    WhisperBatchCuda& b = c_.batch;
    const cudaStream_t stream = model_.stream();
    SC_CHECK(rows == rows_ && pos_ < b.ctx, ErrorCode::kInternal, "search step over ", rows, " rows at position ",
             pos_);
    const int S = b.slots;
    std::vector<int32_t> h(static_cast<size_t>(WhisperBatchCuda::kStepArrays) * S + S, 0);
    int32_t* table = h.data() + static_cast<size_t>(WhisperBatchCuda::kStepArrays) * S;
    for (int r = 0; r < rows; ++r) {
      h[r] = tokens[r];
      h[S + r] = pos_;
      h[2 * S + r] = blocks_[r] * b.ctx + pos_;  // the new K/V's row in the pool
      h[3 * S + r] = 0;                          // the window's cross-attention slot
      h[4 * S + r] = pos_ + 1;
      table[r] = blocks_[r];
    }
    SC_CUDA_CHECK(cudaMemcpyAsync(b.step_array(0), h.data(), static_cast<size_t>(WhisperBatchCuda::kStepArrays) * S * 4,
                                  cudaMemcpyHostToDevice, stream));
    SC_CUDA_CHECK(cudaMemcpyAsync(b.block_table.raw(), table, static_cast<size_t>(rows) * 4, cudaMemcpyHostToDevice,
                                  stream));
    owner_.step_and_logits(c_, rows);
    ++pos_;
  }

  void reorder(const std::vector<int>& origins) override {
    std::vector<int> next(origins.size());
    std::vector<bool> seen(static_cast<size_t>(rows_), false);
    bool repeated = false;
    for (int o : origins) {
      SC_CHECK(o >= 0 && o < rows_, ErrorCode::kInternal, "reorder from row ", o, " of ", rows_);
      repeated = repeated || seen[o];
      seen[o] = true;
    }
    if (!repeated) {  // a permutation or a subset: renumber the blocks, copy nothing
      for (size_t k = 0; k < origins.size(); ++k) next[k] = blocks_[origins[k]];
      for (int r = 0; r < rows_; ++r)
        if (!seen[r]) spare_.push_back(blocks_[r]);
    } else {  // repeated rows: every row copied into a spare block, the old blocks freed
      SC_CHECK(spare_.size() >= origins.size(), ErrorCode::kInternal, "no spare KV blocks for the search");
      for (size_t k = 0; k < origins.size(); ++k) {
        next[k] = spare_.back();
        spare_.pop_back();
        copy_block(blocks_[origins[k]], next[k]);
      }
      for (int r = 0; r < rows_; ++r) spare_.push_back(blocks_[r]);
    }
    blocks_ = std::move(next);
    rows_ = static_cast<int>(blocks_.size());
  }

  void release() override { rows_ = 0; }

 private:
  // Positions [0, pos_) of every layer's K/V from block `from` to block `to` (one strided copy).
  void copy_block(int from, int to) {
    WhisperBatchCuda& b = c_.batch;
    const size_t es = cuda::data_type_size(model_.dtype());
    const size_t row_bytes = static_cast<size_t>(b.self_kv.dim(2)) * es;
    const size_t layer_bytes = static_cast<size_t>(b.self_kv.dim(1)) * row_bytes;
    char* base = static_cast<char*>(b.self_kv.raw());
    SC_CUDA_CHECK(cudaMemcpy2DAsync(base + static_cast<size_t>(to) * b.ctx * row_bytes, layer_bytes,
                                    base + static_cast<size_t>(from) * b.ctx * row_bytes, layer_bytes,
                                    static_cast<size_t>(pos_) * row_bytes, static_cast<size_t>(b.self_kv.dim(0)),
                                    cudaMemcpyDeviceToDevice, model_.stream()));
  }

  const CudaWindowRunner& owner_;
  const WhisperModelCuda& model_;
  CachedBatch& c_;
  std::unique_ptr<DeviceDraws> draws_;  // sampling on the device (null: logits to the host)
  std::vector<int> blocks_, spare_;  // the rows' blocks; free blocks
  int rows_ = 1;
  int pos_ = 0;                      // positions filled in each row's block
};

WindowResult CudaWindowRunner::search_window(const WindowRequest& request, const WhisperSpecialTokens& special) const {
  const WindowOptions& o = request.options;
  const PromptLayout layout = prompt_layout(request.prompt, special, o);
  const int rows = search_rows(o);
  SC_CHECK(rows >= 1 && rows <= kMaxSlots, ErrorCode::kInvalidArgument, "beam_size / best_of must be in [1, ",
           kMaxSlots, "] on the GPU, got ", rows);
  const int positions = std::max(search_positions(request.prompt, layout), static_cast<int>(request.prompt.size()));
  std::unique_ptr<WindowDecoder> d = make_search_decoder(
      std::make_unique<CudaSearchRows>(*this, request.mel, rows, positions, device_draws(special, o, layout, rows)),
      config().vocab_size, request.prompt, special, o);
  while (!d->done()) d->step();
  WindowResult r = d->take_result();
  return r;
}

// The engine's runner on the GPU: `max_windows` slots of one persistent batch (cross K/V and a
// full-context KV cache per slot), windows admitted one by one (encoder + prefill + first pick)
// into free slots, decoder steps over any set of running windows (rows reach their slots
// through the slot map; graphs per row count), logits rules and picks on the device grouped
// by rule set. Shares the model, its stream and its lock with the CudaWindowRunner.
class CudaStepRunner final : public engine::StepRunner {
 public:
  CudaStepRunner(const CudaWindowRunner& owner, const engine::StepRunnerConfig& config)
      : owner_(owner), model_(owner.model_) {
    const int max_windows = config.max_windows;
    SC_CHECK(max_windows >= 1 && config.block_size >= 1, ErrorCode::kInvalidArgument,
             "max_windows and block_size must be >= 1");
    const auto& cfg = model_.config();
    std::lock_guard<std::mutex> lock(owner_.mutex_);
    // Cross-attention slots and step buffers first, then a warm-up of the largest activation
    // (an encoder pass over a full chunk of windows), then the paged self-attention pool.
    state_.batch = model_.new_batch(max_windows, cfg.n_text_ctx, 0);
    WhisperBatchCuda& b = state_.batch;
    const int warm = std::min(max_windows, kEncoderChunk);
    {
      const std::vector<float> zeros(static_cast<size_t>(cfg.n_mels) * owner_.n_frames(), 0.0f);
      std::vector<const float*> mels(static_cast<size_t>(warm), zeros.data());
      model_.encode(mels.data(), warm, b, 0, kEncoderChunk);
      SC_CUDA_CHECK(cudaStreamSynchronize(model_.stream()));
    }
    // Asynchronous admissions (the default; SPEECHCORE_ASYNC_ENCODE=0 at engine start turns them
    // off): an encoder lane of its own stream and buffers, so admitted windows are encoded while
    // the running ones keep decoding. Allocated before the KV pool is sized from what is left.
    const char* async_env = std::getenv("SPEECHCORE_ASYNC_ENCODE");
    if (async_env == nullptr || std::strcmp(async_env, "0") != 0)
      lane_ = model_.new_encoder_lane(std::min(warm, std::max(1, config.max_admit)), std::max(1, config.max_admit));
    // SPEECHCORE_ADMIT_CAP=1 (experimental, off: serving measured slower with it, RESULTS.md
    // session 12): while windows decode, admit only what the lane's free staging takes, so
    // admit() never waits for the encoder. Off, admit() waits (back-pressure from the encoder).
    const char* cap_env = std::getenv("SPEECHCORE_ADMIT_CAP");
    admit_cap_ = cap_env != nullptr && std::strcmp(cap_env, "1") == 0;
    const int bs = config.block_size;
    const int table_stride = (cfg.n_text_ctx + bs - 1) / bs;
    const size_t es = cuda::data_type_size(model_.dtype());
    const size_t block_bytes = static_cast<size_t>(cfg.decoder_layers) * bs * 2 * cfg.d_model * es;
    int blocks = config.num_blocks;
    if (blocks <= 0) {
      size_t free_bytes = 0, total = 0;
      SC_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total));
      // in use now: weights, slots, the allocator's cache (the warm-up's activations, kept for reuse)
      const double used = static_cast<double>(total - free_bytes);
      const double budget = config.gpu_memory_fraction * static_cast<double>(total) - used -
                            static_cast<double>(kGraphReserveBytes);
      const int64_t fit = budget > 0 ? static_cast<int64_t>(budget / static_cast<double>(block_bytes)) : 0;
      blocks = static_cast<int>(std::min<int64_t>(fit, static_cast<int64_t>(max_windows) * table_stride));
      SC_CHECK(blocks >= table_stride, ErrorCode::kOutOfMemory, "gpu_memory_fraction ", config.gpu_memory_fraction,
               " of ", (total >> 20), " MiB leaves ", (budget > 0 ? static_cast<size_t>(budget) >> 20 : 0),
               " MiB for the KV cache after the model and ", max_windows, " cross-attention slots (", (used / 1048576.0),
               " MiB in use); one window needs ", ((block_bytes * table_stride) >> 20),
               " MiB: raise gpu_memory_fraction or lower max_batch");
    }
    num_blocks_ = blocks;
    // one spare block past the scheduler's: padded prompt positions write there
    b.self_kv = Tensor::empty({cfg.decoder_layers, static_cast<int64_t>(blocks + 1) * bs, 2 * cfg.d_model},
                              b.x.dtype(), Device::kCUDA);
    b.block_size = bs;
    b.table_stride = table_stride;
    b.block_table = device_ints(static_cast<int64_t>(max_windows) * table_stride);
    SC_CUDA_CHECK(cudaMemsetAsync(b.block_table.raw(), 0, b.block_table.nbytes(), model_.stream()));
    max_steps_ = cfg.n_text_ctx;
    generated_ = device_ints(static_cast<int64_t>(max_windows) * max_steps_);
    picked_ = device_ints(2 * static_cast<int64_t>(max_windows) + 1);  // tokens, log-probs, no-speech
    rows_ = device_ints(2 * static_cast<int64_t>(max_windows));
    for (int s = max_windows - 1; s >= 0; --s) free_slots_.push_back(s);
    // never reallocated (copies in flight): step inputs [6], downloads and admission [5], tables
    host_.reserve(static_cast<size_t>((11 + table_stride) * max_windows + 8) * 4);
    // Every bucket's step is captured now (an eager run, then the capture), so that a run's
    // steps only replay graphs. All rows are padding rows: their inputs need only be valid.
    if (step_buckets_) {
      const auto t0 = std::chrono::steady_clock::now();
      int32_t* h = host_.as<int32_t>();
      pad_rows(0, max_windows, 0, 0);
      SC_CUDA_CHECK(cudaMemcpyAsync(b.step_array(0), h, static_cast<size_t>(6 * max_windows) * 4,
                                    cudaMemcpyHostToDevice, model_.stream()));
      SC_CUDA_CHECK(cudaMemcpyAsync(b.block_table.raw(), h + 11 * max_windows, b.block_table.nbytes(),
                                    cudaMemcpyHostToDevice, model_.stream()));
      int buckets = 0;
      for (int rows = 1;; rows = step_bucket(rows + 1, max_windows), ++buckets) {
        owner_.step_and_logits(state_, rows);  // eager
        owner_.step_and_logits(state_, rows);  // captured and launched
        if (rows == max_windows) break;
      }
      SC_CUDA_CHECK(cudaStreamSynchronize(model_.stream()));
      if (owner_.profile_)
        std::fprintf(stderr, "[speechcore profile] engine runner: %d step graphs captured at start in %.3f s\n",
                     buckets + 1, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
  }

  ~CudaStepRunner() override {
    for (PendingAdmit& p : pending_) {
      cudaEventSynchronize(p.event);
      cudaEventDestroy(p.event);
    }
    if (owner_.profile_ && encoded_ > 0)
      std::fprintf(stderr, "[speechcore profile] engine runner: encoder %.3f s for %lld windows (%.2f ms each)\n",
                   encode_s_, static_cast<long long>(encoded_), 1e3 * encode_s_ / static_cast<double>(encoded_));
    if (owner_.profile_ && step_laps_.steps > 0) {
      const double k = 1e3 / static_cast<double>(step_laps_.steps);
      const double* t = step_laps_.seconds;
      const StepLapTotals& L = step_laps_;
      std::fprintf(stderr,
                   "[speechcore profile] engine runner: %lld steps, per step (ms): inputs %.3f, step launch %.3f, "
                   "picks and copies %.3f, wait for the device %.3f, tokens %.3f; step launches: %lld eager %.3f s, "
                   "%lld captured %.3f s, %lld graph replays %.3f s\n",
                   static_cast<long long>(L.steps), t[0] * k, t[1] * k, t[2] * k, t[3] * k, t[4] * k,
                   static_cast<long long>(L.launches[0]), L.launch_s[0], static_cast<long long>(L.launches[1]),
                   L.launch_s[1], static_cast<long long>(L.launches[2]), L.launch_s[2]);
    }
    if (owner_.profile_ && lane_ && lane_->chunks > 0)
      std::fprintf(stderr,
                   "[speechcore profile] encoder lane: %lld chunks, host seconds: staging waits %.3f, "
                   "features converted %.3f, copies and kernels enqueued %.3f; cuBLASLt plans chosen (process) %.3f s\n",
                   static_cast<long long>(lane_->chunks), lane_->wait_s,
                   lane_->stage_s, lane_->launch_s, cuda::GemmRunner::plan_seconds());
  }

  int num_blocks() const override { return num_blocks_; }
  DecodingSupport decoding_support() const override { return cuda_decoding_support(); }
  int rows(const WindowOptions& o) const override { return std::max(search_rows(o), 1); }

  void admit(const std::vector<engine::AdmitJob>& jobs, const WhisperSpecialTokens& sp) override {
    if (jobs.empty()) return;
    std::lock_guard<std::mutex> lock(owner_.mutex_);
    special_ = sp;
    WhisperBatchCuda& b = state_.batch;
    const cudaStream_t stream = model_.stream();
    const int vocab = model_.config().vocab_size;
    const int n = static_cast<int>(jobs.size());
    SC_CHECK(n <= static_cast<int>(free_slots_.size()), ErrorCode::kInternal, "admitting ", n, " windows with ",
             free_slots_.size(), " free slots");
    std::vector<Window*> wins;
    std::vector<int> slots;
    std::vector<const float*> mels;
    for (const engine::AdmitJob& j : jobs) {
      SC_CHECK(!windows_.count(j.id), ErrorCode::kInternal, "window ", j.id, " is admitted twice");
      Window w;
      w.id = j.id;
      w.layout = prompt_layout(j.prompt, sp, j.options);
      w.prompt_len = static_cast<int>(j.prompt.size());
      if (needs_search(j.options, w.layout)) {
        w.width = search_rows(j.options);
        SC_CHECK(w.width >= 1 && w.width <= b.slots, ErrorCode::kInvalidArgument, "beam_size / best_of must be in [1, ",
                 b.slots, "] (the engine's max_batch), got ", w.width);
        auto rows = std::make_unique<EngineRows>(*this, j.id, w.width, vocab,
                                                 device_draws(sp, j.options, w.layout, w.width));
        w.rows = rows.get();
        w.search = make_search_decoder(std::move(rows), vocab, j.prompt, sp, j.options);
      } else {
        w.rules = rules_for(j.options, w.layout.timestamps, sp);
      }
      w.slot = free_slots_.back();
      free_slots_.pop_back();
      slots.push_back(w.slot);
      mels.push_back(j.mel);
      wins.push_back(&windows_.emplace(j.id, std::move(w)).first->second);
    }
    try {
      if (lane_) {
        // Encoded on the lane (after the work already on the decoding stream, which may still read
        // the slots' previous windows); prefilled and picked by poll() once the encoder is done.
        PendingAdmit pa;
        SC_CUDA_CHECK(cudaEventCreateWithFlags(&pa.event, cudaEventDisableTiming));
        model_.encode_async(mels.data(), n, b, slots.data(), *lane_, stream);
        SC_CUDA_CHECK(cudaEventRecord(pa.event, lane_->stream));
        for (int i = 0; i < n; ++i) {
          engine::AdmitJob j = jobs[i];
          j.mel = nullptr;  // staged by encode_async; only the prompt and options are needed later
          pa.jobs.push_back(std::move(j));
          wins[i]->pending = true;
        }
        pending_.push_back(std::move(pa));
        return;
      }
      // All windows' encoder passes together (chunks of kEncoderChunk), each K/V to its slot.
      const auto t_enc = std::chrono::steady_clock::now();
      model_.encode(mels.data(), n, b, slots.data(), kEncoderChunk);
      if (owner_.profile_) {  // SPEECHCORE_PROFILE=1: the encoder's share of admissions (synchronized)
        SC_CUDA_CHECK(cudaStreamSynchronize(stream));
        encode_s_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t_enc).count();
        encoded_ += n;
      }
      finish_admission(jobs, wins, slots);
    } catch (...) {
      for (const engine::AdmitJob& j : jobs) release(j.id);  // the engine fails these windows' requests
      throw;
    }
  }

  // The rest of an admission once the windows' encoder output is in their slots: the prompts'
  // prefill, the first picks (on the device for greedy windows, on the host for searches).
 private:
  struct Window;
  void finish_admission(const std::vector<engine::AdmitJob>& jobs, const std::vector<Window*>& wins,
                        const std::vector<int>& slots) {
    WhisperBatchCuda& b = state_.batch;
    const cudaStream_t stream = model_.stream();
    const int vocab = model_.config().vocab_size;
    const int n = static_cast<int>(jobs.size());
    const WhisperSpecialTokens& sp = special_;
    {
      // Prefill each prompt; window i's two logits rows (start of transcript, last prompt
      // token) go to rows 2i, 2i + 1 and its pick to picked_[i] (step arrays column i: its
      // history row and 0 tokens so far), so one synchronization serves all of them.
      int32_t* h = host_.as<int32_t>();
      int32_t* h_rows = h + 6 * b.slots;  // 2 per window
      for (int i = 0; i < n; ++i) {
        h[3 * b.slots + i] = slots[i];
        h[5 * b.slots + i] = 0;
      }
      SC_CUDA_CHECK(cudaMemcpyAsync(b.step_array(3), h + 3 * b.slots, static_cast<size_t>(n) * 4,
                                    cudaMemcpyHostToDevice, stream));
      SC_CUDA_CHECK(cudaMemcpyAsync(b.step_array(5), h + 5 * b.slots, static_cast<size_t>(n) * 4,
                                    cudaMemcpyHostToDevice, stream));
      float* d_ns = reinterpret_cast<float*>(picked_.data<int32_t>() + 2 * b.slots);
      // One prefill for all prompts, right-padded to the longest: a padded position's K/V go
      // to the pool's spare block (nobody reads it), a real one through the window's table.
      int len = 1;
      std::vector<std::vector<int>> prompts;
      std::vector<const std::vector<int>*> tables;
      for (int i = 0; i < n; ++i) {
        len = std::max(len, wins[i]->prompt_len);
        prompts.push_back(jobs[i].prompt);
        tables.push_back(&table(jobs[i].id, wins[i]->prompt_len, wins[i]->width));
      }
      const int bs = b.block_size;
      auto kv_row = [&](int i, int j) -> int32_t {
        if (j >= wins[i]->prompt_len) return num_blocks_ * bs + j % bs;  // the spare block
        return (*tables[i])[(j / bs) * wins[i]->width] * bs + j % bs;    // a search's row 0
      };
      Tensor x = owner_.prefill(b, prompts, len, 0, kv_row, slots.data());
      for (int i = 0; i < n; ++i) {
        h_rows[i] = i * len + wins[i]->layout.sot_index;
        h_rows[n + i] = i * len + wins[i]->prompt_len - 1;
      }
      SC_CUDA_CHECK(cudaMemcpyAsync(rows_.data<int32_t>(), h_rows, static_cast<size_t>(2 * n) * 4,
                                    cudaMemcpyHostToDevice, stream));
      model_.logits(b, x, rows_.data<int32_t>(), 2 * n, 0);  // rows [0, n): start of transcript; [n, 2n): last
      x = Tensor();
      cuda::no_speech_prob(b.logits.data<float>(), n, vocab, sp.no_speech >= 0 ? sp.no_speech : 0, d_ns, stream);
      for (int i0 = 0; i0 < n;) {  // picks grouped by rule set (consecutive windows sharing one)
        if (wins[i0]->search) {     // a search picks on the host
          ++i0;
          continue;
        }
        int i1 = i0 + 1;
        while (i1 < n && !wins[i1]->search && wins[i1]->rules == wins[i0]->rules) ++i1;
        pick(b.logits.data<float>() + static_cast<int64_t>(n + i0) * vocab, i1 - i0, i0, *wins[i0]->rules);
        i0 = i1;
      }
      // a search's raw logits at its start-of-transcript and last prompt positions
      int searching = 0;
      for (int i = 0; i < n; ++i) searching += wins[i]->search != nullptr;
      search_host_.reserve(static_cast<size_t>(2 * searching) * vocab * sizeof(float));
      for (int i = 0, s = 0; i < n; ++i) {
        if (!wins[i]->search) continue;
        float* dst = search_host_.as<float>() + static_cast<size_t>(2 * s++) * vocab;
        for (int half = 0; half < 2; ++half)
          SC_CUDA_CHECK(cudaMemcpyAsync(dst + static_cast<size_t>(half) * vocab,
                                        b.logits.data<float>() + static_cast<int64_t>(half * n + i) * vocab,
                                        static_cast<size_t>(vocab) * sizeof(float), cudaMemcpyDeviceToHost, stream));
      }
      // the picks' tokens, log-probs and no-speech probabilities
      int32_t* tok = h + 8 * b.slots;
      float* lp = reinterpret_cast<float*>(tok + n);
      float* ns = lp + n;
      SC_CUDA_CHECK(cudaMemcpyAsync(tok, picked_.data<int32_t>(), static_cast<size_t>(n) * 4, cudaMemcpyDeviceToHost,
                                    stream));
      SC_CUDA_CHECK(cudaMemcpyAsync(lp, picked_.data<int32_t>() + b.slots, static_cast<size_t>(n) * 4,
                                    cudaMemcpyDeviceToHost, stream));
      SC_CUDA_CHECK(cudaMemcpyAsync(ns, d_ns, static_cast<size_t>(n) * 4, cudaMemcpyDeviceToHost, stream));
      SC_CUDA_CHECK(cudaStreamSynchronize(stream));
      for (int i = 0, s = 0; i < n; ++i) {
        Window& win = *wins[i];
        if (win.search) {
          win.rows->stash(search_host_.as<float>() + static_cast<size_t>(2 * s++) * vocab);
          advance(win);
          continue;
        }
        win.result.no_speech_prob = sp.no_speech >= 0 ? ns[i] : 0.0f;
        if (win.layout.max_new <= 0) {
          finish(win);
        } else {
          record(win, tok[i], lp[i], sp);
        }
      }
    }
  }

 public:
  bool ready(uint64_t id) const override {
    auto it = windows_.find(id);
    return it == windows_.end() || !it->second.pending;
  }
  std::vector<uint64_t> pending_windows() const override {
    std::vector<uint64_t> out;
    for (const PendingAdmit& p : pending_)
      for (const engine::AdmitJob& j : p.jobs) out.push_back(j.id);
    return out;
  }
  std::vector<uint64_t> poll() override {
    std::vector<uint64_t> out;
    std::lock_guard<std::mutex> lock(owner_.mutex_);
    while (!pending_.empty()) {
      const cudaError_t q = cudaEventQuery(pending_.front().event);
      if (q == cudaErrorNotReady) break;
      SC_CUDA_CHECK(q);
      PendingAdmit pa = std::move(pending_.front());
      pending_.pop_front();
      SC_CUDA_CHECK(cudaEventDestroy(pa.event));
      std::vector<Window*> wins;
      std::vector<int> slots;
      for (const engine::AdmitJob& j : pa.jobs) {
        Window& w = windows_.at(j.id);  // release() takes a released window out of pa.jobs
        w.pending = false;
        wins.push_back(&w);
        slots.push_back(w.slot);
      }
      if (pa.jobs.empty()) continue;
      try {
        finish_admission(pa.jobs, wins, slots);
      } catch (...) {
        for (const engine::AdmitJob& j : pa.jobs) release(j.id);
        throw;
      }
      for (const engine::AdmitJob& j : pa.jobs) out.push_back(j.id);
    }
    return out;
  }
  int admit_capacity() const override {
    if (!lane_ || !admit_cap_) return engine::StepRunner::admit_capacity();
    std::lock_guard<std::mutex> lock(owner_.mutex_);
    return lane_->free_windows();
  }
  void wait_pending() override {
    if (!pending_.empty()) SC_CUDA_CHECK(cudaEventSynchronize(pending_.front().event));
  }

  void step(const std::vector<uint64_t>& ids) override {
    if (ids.empty()) return;
    std::lock_guard<std::mutex> lock(owner_.mutex_);
    StepLaps laps(owner_.profile_, step_laps_);
    WhisperBatchCuda& b = state_.batch;
    const cudaStream_t stream = model_.stream();
    // windows grouped by rule set, so each group's rows are contiguous for its pick; searching
    // windows (one row per beam or candidate) last
    std::vector<Window*> wins;
    for (uint64_t id : ids) {
      auto it = windows_.find(id);
      SC_CHECK(it != windows_.end() && !it->second.done, ErrorCode::kInternal, "window ", id, " cannot step");
      wins.push_back(&it->second);
    }
    std::stable_sort(wins.begin(), wins.end(), [](const Window* a, const Window* c) {
      return std::make_tuple(a->search != nullptr, a->rules) < std::make_tuple(c->search != nullptr, c->rules);
    });
    const int stride = b.slots;
    const int bs = b.block_size;
    int32_t* h = host_.as<int32_t>();
    int32_t* h_table = h + 11 * stride;
    int n = 0, greedy = 0;  // rows; rows picked on the device
    // step inputs of one row: token, position, KV row, slot, self-attention length, tokens so far
    auto add_row = [&](const Window& w, const std::vector<int>& t, int phys, int token, int pos, int k) {
      SC_CHECK(n < stride, ErrorCode::kInternal, "a step over more than ", stride, " rows");
      int32_t* row_table = h_table + static_cast<int64_t>(n) * b.table_stride;
      const int blocks = pos / bs + 1;
      for (int j = 0; j < blocks; ++j) row_table[j] = t[static_cast<size_t>(j) * w.width + phys];
      h[n] = token;
      h[stride + n] = pos;
      h[2 * stride + n] = row_table[pos / bs] * bs + pos % bs;
      h[3 * stride + n] = w.slot;
      h[4 * stride + n] = pos + 1;
      h[5 * stride + n] = k;
      ++n;
    };
    for (const Window* w : wins) {
      if (w->search) {
        const EngineRows& rows = *w->rows;
        const std::vector<int>& t = table(w->id, rows.pos() + 1, w->width);
        for (int q = 0; q < rows.count(); ++q) add_row(*w, t, rows.phys(q), rows.next(q), rows.pos(), 0);
        continue;
      }
      const int k = static_cast<int>(w->result.tokens.size());
      const int pos = w->prompt_len + k - 1;
      add_row(*w, table(w->id, pos + 1, 1), 0, w->result.tokens.back(), pos, k);
      ++greedy;
    }
    // Padded to a bucket of rows (step_bucket), so that a few captured graphs serve every row
    // count: a padding row decodes one token at position 0 into the spare block, reads the first
    // row's cross-attention slot, and its logits are never picked.
    const int padded = step_buckets_ ? step_bucket(n, stride) : n;
    pad_rows(n, padded, h[0], h[3 * stride]);
    SC_CUDA_CHECK(cudaMemcpyAsync(b.step_array(0), h, static_cast<size_t>(6 * stride) * 4, cudaMemcpyHostToDevice,
                                  stream));
    SC_CUDA_CHECK(cudaMemcpyAsync(b.block_table.raw(), h_table, static_cast<size_t>(padded) * b.table_stride * 4,
                                  cudaMemcpyHostToDevice, stream));
    laps.lap(0);
    laps.launch(owner_.step_and_logits(state_, padded));
    const int vocab = model_.config().vocab_size;
    for (int r0 = 0; r0 < greedy;) {
      int r1 = r0 + 1;
      while (r1 < greedy && wins[r1]->rules == wins[r0]->rules) ++r1;
      pick(b.logits.data<float>() + static_cast<int64_t>(r0) * vocab, r1 - r0, r0, *wins[r0]->rules);
      r0 = r1;
    }
    int32_t* tok = h + 6 * stride;
    float* lp = reinterpret_cast<float*>(tok + stride);
    if (greedy > 0) {
      SC_CUDA_CHECK(cudaMemcpyAsync(tok, picked_.data<int32_t>(), static_cast<size_t>(greedy) * 4,
                                    cudaMemcpyDeviceToHost, stream));
      SC_CUDA_CHECK(cudaMemcpyAsync(lp, picked_.data<int32_t>() + stride, static_cast<size_t>(greedy) * 4,
                                    cudaMemcpyDeviceToHost, stream));
    }
    // the searches' rows: drawn on the device (sampling), or raw logits to the host
    search_host_.reserve(static_cast<size_t>(n - greedy) * vocab * sizeof(float));
    for (int i = greedy, row = greedy; i < static_cast<int>(wins.size()); ++i) {
      const EngineRows& rows = *wins[i]->rows;
      float* logits = b.logits.data<float>() + static_cast<int64_t>(row) * vocab;
      if (DeviceDraws* d = rows.pending_draws())
        d->enqueue(logits, rows.count(), vocab, stream);
      else
        SC_CUDA_CHECK(cudaMemcpyAsync(search_host_.as<float>() + static_cast<size_t>(row - greedy) * vocab, logits,
                                      static_cast<size_t>(rows.count()) * vocab * sizeof(float),
                                      cudaMemcpyDeviceToHost, stream));
      row += rows.count();
    }
    laps.lap(2);
    SC_CUDA_CHECK(cudaStreamSynchronize(stream));
    laps.lap(3);
    for (int r = 0; r < greedy; ++r) record(*wins[r], tok[r], lp[r], special_);
    for (int i = greedy, row = greedy; i < static_cast<int>(wins.size()); ++i) {
      Window& w = *wins[i];
      if (!w.rows->pending_draws()) w.rows->stash(search_host_.as<float>() + static_cast<size_t>(row - greedy) * vocab);
      row += w.rows->count();
    }
    // The searches' host work (rules, log-softmax, top-k over beams x vocab) is independent per
    // window: spread over threads when several windows search (their reorder copies go to the
    // model's stream, ahead of the next step).
    const int searching = static_cast<int>(wins.size()) - greedy;
    if (searching > 1) {
      if (!pool_) pool_ = std::make_unique<core::ThreadPool>(std::min(core::ThreadPool::hardware_threads(), 16));
      pool_->parallel_for(searching, 1, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) advance(*wins[static_cast<size_t>(greedy + i)]);
      });
    } else if (searching == 1) {
      advance(*wins[static_cast<size_t>(greedy)]);
    }
    laps.lap(4);
  }

  bool done(uint64_t id) const override { return windows_.at(id).done; }
  WindowResult take(uint64_t id) override {
    auto it = windows_.find(id);
    SC_CHECK(it != windows_.end() && it->second.done, ErrorCode::kInternal, "window ", id, " is not done");
    WindowResult r = std::move(it->second.result);
    free_slots_.push_back(it->second.slot);
    windows_.erase(it);
    return r;
  }
  void release(uint64_t id) override {
    auto it = windows_.find(id);
    if (it == windows_.end()) return;
    if (it->second.pending) {  // its encoder may still write the slot: wait for it, forget the job
      for (PendingAdmit& p : pending_) {
        auto j = std::find_if(p.jobs.begin(), p.jobs.end(), [&](const engine::AdmitJob& a) { return a.id == id; });
        if (j == p.jobs.end()) continue;
        SC_CUDA_CHECK(cudaEventSynchronize(p.event));
        p.jobs.erase(j);
        break;
      }
    }
    free_slots_.push_back(it->second.slot);
    windows_.erase(it);
  }
  size_t windows() const override { return windows_.size(); }

 private:
  struct Rules {  // one set of logits-rule parameters, its suppress lists on the device
    cuda::WhisperRuleParams params;
    Tensor lists;  // suppress_tokens then suppress_tokens_begin
    int n_suppress = 0, n_begin = 0;
  };
  class EngineRows;
  struct Window {
    uint64_t id = 0;
    int slot = 0, prompt_len = 0;
    PromptLayout layout;
    const Rules* rules = nullptr;  // device-side greedy: its logits rules
    // A window needs_search() decodes: the host-side search over its rows (width of them: beams
    // or candidates), null for device-side greedy.
    std::unique_ptr<WindowDecoder> search;
    EngineRows* rows = nullptr;  // owned by search
    int width = 1;
    WindowResult result;
    bool done = false;
    bool pending = false;  // admitted asynchronously, encoder still running (see PendingAdmit)
  };
  // One asynchronous admission: its windows (prompts and options) and the event recorded after
  // their encoder on the lane.
  struct PendingAdmit {
    std::vector<engine::AdmitJob> jobs;
    cudaEvent_t event = nullptr;
  };

  // The rows of a searching window in the engine's batch. The window's scheduler table holds
  // `width` blocks per block of positions (block k of physical row p is table[k * width + p],
  // kv_blocks.h); logical row r lives in physical row phys(r). The runner steps these rows with
  // every other window's and hands their logits here (stash) before the search's step(), whose
  // prefill() and decode() then only return them. Reordering renumbers rows; a repeated row is
  // copied on the device into a physical row no longer used (only the positions after the
  // prompt, which broadcast() gave every row).
  class EngineRows final : public SearchRows {
   public:
    EngineRows(CudaStepRunner& runner, uint64_t id, int width, int vocab, std::unique_ptr<DeviceDraws> draws)
        : runner_(runner), id_(id), width_(width), vocab_(vocab), primed_(static_cast<size_t>(width), 0),
          draws_(std::move(draws)) {}
    bool can_draw() const override { return draws_ != nullptr; }
    void feed_draws(const std::vector<double>& uniforms, const std::vector<const std::vector<int>*>& history) override {
      draws_->set(uniforms, history);
      drawing_ = true;
    }
    void decode_draw(const int* tokens, int rows, int* picked, float* logprobs) override {
      SC_CHECK(drawing_ && rows == count() && std::equal(tokens, tokens + rows, next_.begin()), ErrorCode::kInternal,
               "a search draw that was not run");
      draws_->results(picked, logprobs, rows);
      drawing_ = false;
      ++pos_;
    }
    // The device draws the runner enqueues for the next step (null: it downloads the logits).
    DeviceDraws* pending_draws() const { return drawing_ ? draws_.get() : nullptr; }
    float prefill(const std::vector<int>& prompt, int /*sot_index*/, int no_speech, float* logits) override {
      SC_CHECK(stash_ != nullptr, ErrorCode::kInternal, "a search's prefill without its logits");
      // stash: the start-of-transcript row, then the last prompt position's
      std::copy(stash_ + vocab_, stash_ + 2 * static_cast<size_t>(vocab_), logits);
      const float p = no_speech_probability(stash_, vocab_, no_speech);
      stash_ = nullptr;
      pos_ = prompt_len_ = static_cast<int>(prompt.size());
      primed_[0] = 1;
      return p;
    }
    void broadcast(int rows) override {
      SC_CHECK(rows >= 1 && rows <= width_, ErrorCode::kInternal, "broadcast to ", rows, " of ", width_, " rows");
      phys_.resize(static_cast<size_t>(rows));
      for (int r = 0; r < rows; ++r) {
        phys_[r] = r;
        if (r > 0) runner_.copy_row(id_, width_, 0, r, 0, pos_);
        primed_[r] = 1;
      }
    }
    void feed(const int* tokens, int rows) override {
      SC_CHECK(rows == count(), ErrorCode::kInternal, "feeding ", rows, " tokens to ", count(), " rows");
      next_.assign(tokens, tokens + rows);
    }
    void decode(const int* tokens, int rows, float* logits) override {
      SC_CHECK(stash_ != nullptr && rows == count() && std::equal(tokens, tokens + rows, next_.begin()),
               ErrorCode::kInternal, "a search step that was not run");
      std::copy(stash_, stash_ + static_cast<size_t>(rows) * vocab_, logits);
      stash_ = nullptr;
      ++pos_;
    }
    void reorder(const std::vector<int>& origins) override {
      std::vector<int> next(origins.size(), -1);
      std::vector<char> kept(static_cast<size_t>(width_), 0), seen(phys_.size(), 0);
      for (size_t k = 0; k < origins.size(); ++k) {  // a row's first copy keeps its physical row
        const int o = origins[k];
        SC_CHECK(o >= 0 && o < count(), ErrorCode::kInternal, "reorder from row ", o, " of ", count());
        if (seen[o]) continue;
        seen[o] = 1;
        next[k] = phys_[o];
        kept[phys_[o]] = 1;
      }
      std::vector<int> spare;
      for (int p = width_ - 1; p >= 0; --p)
        if (!kept[p]) spare.push_back(p);
      for (size_t k = 0; k < origins.size(); ++k) {  // later copies: into a physical row left free
        if (next[k] >= 0) continue;
        SC_CHECK(!spare.empty(), ErrorCode::kInternal, "no free row for the search");
        const int p = spare.back();
        spare.pop_back();
        runner_.copy_row(id_, width_, phys_[origins[k]], p, primed_[p] ? prompt_len_ : 0, pos_);
        primed_[p] = 1;
        next[k] = p;
      }
      phys_ = std::move(next);
    }
    void release() override {
      phys_.clear();
      next_.clear();
    }
    void stash(const float* logits) { stash_ = logits; }
    int count() const { return static_cast<int>(phys_.size()); }
    int phys(int r) const { return phys_[r]; }
    int next(int r) const { return next_[r]; }
    int pos() const { return pos_; }  // the position the next step writes

   private:
    CudaStepRunner& runner_;
    uint64_t id_;
    int width_, vocab_;
    std::vector<int> phys_, next_;
    std::vector<char> primed_;  // physical rows holding the prompt's K/V
    const float* stash_ = nullptr;
    int pos_ = 0, prompt_len_ = 0;
    std::unique_ptr<DeviceDraws> draws_;  // sampling on the device (null: logits to the host)
    bool drawing_ = false;                // draws set for the next step
  };

  // Positions [begin, end) of window id's physical row `from` copied to row `to` (whole
  // blocks, every layer; on the model's stream, before the next step).
  void copy_row(uint64_t id, int width, int from, int to, int begin, int end) {
    const std::vector<int>& t = table(id, end, width);
    WhisperBatchCuda& b = state_.batch;
    const int bs = b.block_size;
    const size_t es = cuda::data_type_size(model_.dtype());
    const size_t row_bytes = static_cast<size_t>(b.self_kv.dim(2)) * es;
    const size_t layer_bytes = static_cast<size_t>(b.self_kv.dim(1)) * row_bytes;
    char* base = static_cast<char*>(b.self_kv.raw());
    for (int k = begin / bs; k < (end + bs - 1) / bs; ++k) {
      const size_t src = static_cast<size_t>(t[static_cast<size_t>(k) * width + from]) * bs * row_bytes;
      const size_t dst = static_cast<size_t>(t[static_cast<size_t>(k) * width + to]) * bs * row_bytes;
      SC_CUDA_CHECK(cudaMemcpy2DAsync(base + dst, layer_bytes, base + src, layer_bytes, bs * row_bytes,
                                      static_cast<size_t>(b.self_kv.dim(0)), cudaMemcpyDeviceToDevice,
                                      model_.stream()));
    }
  }

  // One step of a searching window's decoder (its logits stashed); done when the search is.
  static void advance(Window& w) {
    w.search->step();
    if (!w.search->done()) return;
    w.result = w.search->take_result();
    w.done = true;
  }

  // Window id's blocks from the scheduler, which must cover `positions` positions in each of
  // its `width` rows.
  const std::vector<int>& table(uint64_t id, int positions, int width) const {
    SC_CHECK(kv_ != nullptr, ErrorCode::kInternal, "the engine runner has no block tables");
    const std::vector<int>& t = kv_->table(id);
    const int bs = state_.batch.block_size;
    const int64_t per_row = static_cast<int64_t>(t.size()) / width;
    SC_CHECK(per_row * bs >= positions && per_row <= state_.batch.table_stride, ErrorCode::kInternal, "window ", id,
             " has ", t.size(), " KV blocks for ", positions, " positions in ", width, " rows");
    // (the block ids themselves come from the scheduler's pool of num_blocks_, sized by this
    // runner; they are not rechecked on every step)
    return t;
  }

  const Rules* rules_for(const WindowOptions& o, bool timestamps, const WhisperSpecialTokens& sp) {
    special_ = sp;
    auto key = std::make_tuple(o.suppress_tokens, o.suppress_tokens_begin, o.max_initial_timestamp_index, timestamps);
    auto it = rules_.find(key);
    if (it != rules_.end()) return it->second.get();
    auto r = std::make_unique<Rules>();
    r->params = rule_params(sp, o, timestamps);
    r->n_suppress = static_cast<int>(o.suppress_tokens.size());
    r->n_begin = static_cast<int>(o.suppress_tokens_begin.size());
    std::vector<int32_t> lists(o.suppress_tokens.begin(), o.suppress_tokens.end());
    lists.insert(lists.end(), o.suppress_tokens_begin.begin(), o.suppress_tokens_begin.end());
    r->lists = device_ints(static_cast<int64_t>(lists.size()));
    if (!lists.empty())
      SC_CUDA_CHECK(cudaMemcpy(r->lists.raw(), lists.data(), lists.size() * 4, cudaMemcpyHostToDevice));
    const Rules* out = r.get();
    rules_.emplace(key, std::move(r));
    return out;
  }

  // Step inputs of padding rows r0..r1-1 in the pinned step buffer (as step() lays it out): one
  // token at position 0, its K/V to the spare block past the scheduler's, cross-attention on `slot`.
  void pad_rows(int r0, int r1, int32_t token, int32_t slot) {
    const WhisperBatchCuda& b = state_.batch;
    const int stride = b.slots;
    int32_t* h = host_.as<int32_t>();
    int32_t* h_table = h + 11 * stride;
    for (int r = r0; r < r1; ++r) {
      h_table[static_cast<int64_t>(r) * b.table_stride] = num_blocks_;
      h[r] = token;
      h[stride + r] = 0;
      h[2 * stride + r] = num_blocks_ * b.block_size;
      h[3 * stride + r] = slot;
      h[4 * stride + r] = 1;
      h[5 * stride + r] = 0;
    }
  }

  // Picks for `count` rows of logits (row r0.. of the step arrays: slot map, tokens so far);
  // the token and log-prob of row r land at picked_[r0 + r] and picked_[stride + r0 + r].
  void pick(const float* logits, int count, int r0, const Rules& rules) {
    WhisperBatchCuda& b = state_.batch;
    const int32_t* lists = rules.lists.data<int32_t>();
    int32_t* d_tok = picked_.data<int32_t>() + r0;
    float* d_lp = reinterpret_cast<float*>(picked_.data<int32_t>() + b.slots + r0);
    cuda::whisper_greedy_step(const_cast<float*>(logits), generated_.data<int32_t>(), b.step_array(3) + r0, true,
                              b.step_array(5) + r0, lists, rules.n_suppress, lists + rules.n_suppress, rules.n_begin,
                              rules.params, d_tok, d_lp, count, model_.config().vocab_size, max_steps_,
                              model_.stream());
  }

  void record(Window& w, int token, float logprob, const WhisperSpecialTokens& sp) {
    if (add_pick(w.result, token, logprob, sp.eot, w.layout.max_new)) finish(w);
  }

  static void finish(Window& w) {
    w.done = true;
    finish_window(w.result);
  }

  const CudaWindowRunner& owner_;
  const WhisperModelCuda& model_;
  CachedBatch state_;
  int num_blocks_ = 0;
  int max_steps_ = 0;
  Tensor generated_, picked_, rows_;
  std::vector<int> free_slots_;
  std::unordered_map<uint64_t, Window> windows_;
  std::unique_ptr<models::whisper::EncoderLane> lane_;  // asynchronous admissions (null: synchronous)
  bool admit_cap_ = false;  // SPEECHCORE_ADMIT_CAP=1: admissions capped by the lane's free staging
  // rows padded to step_bucket (only with graphs: without them padding saves nothing)
  const bool step_buckets_ = step_buckets_enabled() && graphs_enabled();
  std::deque<PendingAdmit> pending_;
  std::map<std::tuple<std::vector<int>, std::vector<int>, int, bool>, std::unique_ptr<Rules>> rules_;
  WhisperSpecialTokens special_;
  HostBuffer host_;
  HostBuffer search_host_;  // searching windows' logits rows
  std::unique_ptr<core::ThreadPool> pool_;  // the searches' host work, once several windows search
  double encode_s_ = 0.0;  // SPEECHCORE_PROFILE
  int64_t encoded_ = 0;
  // SPEECHCORE_PROFILE: a step's host time in parts (inputs, graph launch, picks and copies
  // enqueued, the wait for the device, the tokens recorded)
  struct StepLapTotals {
    double seconds[5] = {0, 0, 0, 0, 0};
    int64_t steps = 0;
    int64_t launches[3] = {0, 0, 0};  // eager, captured, replayed (step_and_logits)
    double launch_s[3] = {0, 0, 0};
  };
  struct StepLaps {
    using Clock = std::chrono::steady_clock;
    StepLaps(bool on, StepLapTotals& totals) : on(on), totals(totals), t(on ? Clock::now() : Clock::time_point()) {
      if (on) ++totals.steps;
    }
    double lap(int part) {
      if (!on) return 0;
      const Clock::time_point now = Clock::now();
      const double dt = std::chrono::duration<double>(now - t).count();
      totals.seconds[part] += dt;
      t = now;
      return dt;
    }
    void launch(int how) {  // the step's launch (part 1), by how it ran
      if (!on) return;
      totals.launch_s[how] += lap(1);
      totals.launches[how] += 1;
    }
    bool on;
    StepLapTotals& totals;
    Clock::time_point t;
  };
  StepLapTotals step_laps_;
};

std::unique_ptr<engine::StepRunner> CudaWindowRunner::make_step_runner(const engine::StepRunnerConfig& config) const {
  return std::make_unique<CudaStepRunner>(*this, config);
}

}  // namespace

std::unique_ptr<WindowRunner> make_cuda_window_runner(const models::whisper::WhisperWeights& weights,
                                                      const std::string& compute_type, ModelInfo* info) {
  cuda::DataType dt = cuda::DataType::kFloat16;  // "auto": float16, as faster-whisper on GPUs
  if (compute_type == "float32") dt = cuda::DataType::kFloat32;
  else if (compute_type == "bfloat16") dt = cuda::DataType::kBFloat16;
  auto runner = std::make_unique<CudaWindowRunner>(weights, dt);
  if (info) {
    info->weight_bytes = runner->weight_bytes();
    info->decoder_step = runner->decoder_step();
    info->cross_absorb_min_windows = runner->absorb_min_slots();
  }
  return runner;
}

bool cuda_device_available() { return cuda::device_count() > 0; }

}  // namespace speechcore::runtime
