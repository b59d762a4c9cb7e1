// A fake Whisper decoder for the window decoders' tests: the logits after a sequence are a hash
// of its tokens (end-of-text growing likelier as it lengthens), served through GreedyWindow's
// Model interface (FakeModel) and through SearchRows (FakeRows), which records how the search
// used its rows and refuses anything after release().
#pragma once

#include <cstdint>
#include <vector>

#include "core/status.h"
#include "runtime/whisper_beam.h"
#include "runtime/whisper_greedy.h"

namespace fake {

using speechcore::ErrorCode;
using namespace speechcore::runtime;

constexpr int kVocab = 64;
constexpr int kEot = 40, kSot = 41, kLanguage = 42, kTask = 43, kNoTimestamps = 44;

inline WhisperSpecialTokens special() {
  WhisperSpecialTokens sp;
  sp.eot = kEot;
  sp.sot = kSot;
  sp.no_timestamps = kNoTimestamps;
  sp.no_speech = 45;
  sp.timestamp_begin = 46;
  sp.timestamp_end = kVocab - 1;
  return sp;
}

// The raw logits [kVocab] after `tokens`.
inline void logits_after(const std::vector<int>& tokens, float* out) {
  uint64_t h = 0x5eed;
  for (int t : tokens) h = mix_seed(h, static_cast<uint64_t>(t));
  for (int v = 0; v < kVocab; ++v)
    out[v] = static_cast<float>(static_cast<double>(mix_seed(h, static_cast<uint64_t>(v)) >> 40) * 0x1.0p-24 * 8.0 - 4.0);
  out[kEot] += 0.3f * static_cast<float>(tokens.size()) - 4.0f;
}

// GreedyWindow's Model: decode() appends the tokens to the state and writes the logits after
// the positions `rows` (indices into this call's tokens).
struct Config {
  int vocab_size = kVocab;
};
struct State {
  std::vector<int> tokens;
};
struct Cross {};
class FakeModel {
 public:
  const Config& config() const { return config_; }
  State new_state() const { return {}; }
  void decode(State& s, const Cross&, const int* tokens, int n, const std::vector<int>& rows, float* logits) const {
    const size_t before = s.tokens.size();
    s.tokens.insert(s.tokens.end(), tokens, tokens + n);
    for (size_t i = 0; i < rows.size(); ++i) {
      const std::vector<int> seq(s.tokens.begin(), s.tokens.begin() + static_cast<long>(before) + rows[i] + 1);
      logits_after(seq, logits + i * kVocab);
    }
  }

 private:
  Config config_;
};

// What a search did with its rows.
struct RowsLog {
  int prefills = 0, broadcasts = 0, decodes = 0, draws = 0, releases = 0;
};

// SearchRows over the fake logits. With `draw` set, the rows also draw on the "device": the
// window's logits rules (no penalties), log-softmax and sample_token with the uniform given,
// as SearchRows::decode_draw says.
class FakeRows final : public SearchRows {
 public:
  struct Draw {
    WindowOptions options;
    PromptLayout layout;
  };
  FakeRows(RowsLog* log, const Draw* draw = nullptr) : log_(log), draw_(draw) {}

  float prefill(const std::vector<int>& prompt, int sot_index, int no_speech, float* logits) override {
    usable();
    SC_CHECK(log_->prefills++ == 0, ErrorCode::kInternal, "fake rows: a second prefill");
    prompt_ = prompt;
    std::vector<float> at_sot(kVocab);
    logits_after(std::vector<int>(prompt.begin(), prompt.begin() + sot_index + 1), at_sot.data());
    logits_after(prompt, logits);
    return no_speech_probability(at_sot.data(), kVocab, no_speech);
  }
  void broadcast(int rows) override {
    usable();
    SC_CHECK(log_->prefills == 1 && log_->broadcasts++ == 0 && rows >= 1, ErrorCode::kInternal,
             "fake rows: broadcast out of turn");
    rows_.assign(static_cast<size_t>(rows), prompt_);
  }
  void feed(const int* tokens, int rows) override {
    usable();
    SC_CHECK(rows == static_cast<int>(rows_.size()), ErrorCode::kInternal, "fake rows: feed of ", rows, " rows, ",
             rows_.size(), " exist");
    fed_.assign(tokens, tokens + rows);
  }
  void decode(const int* tokens, int rows, float* logits) override {
    step(tokens, rows, logits);
    ++log_->decodes;
  }
  void reorder(const std::vector<int>& origins) override {
    usable();
    std::vector<std::vector<int>> next;
    for (int o : origins) {
      SC_CHECK(o >= 0 && o < static_cast<int>(rows_.size()), ErrorCode::kInternal, "fake rows: reorder from ", o);
      next.push_back(rows_[o]);
    }
    rows_ = std::move(next);
  }
  bool can_draw() const override { return draw_ != nullptr; }
  void feed_draws(const std::vector<double>& uniforms, const std::vector<const std::vector<int>*>& history) override {
    usable();
    uniforms_ = uniforms;
    history_.clear();
    for (const std::vector<int>* h : history) history_.push_back(*h);
  }
  void decode_draw(const int* tokens, int rows, int* picked, float* logprobs) override {
    SC_CHECK(draw_ != nullptr && static_cast<int>(uniforms_.size()) == rows, ErrorCode::kInternal,
             "fake rows: a draw without its uniforms");
    std::vector<float> logits(static_cast<size_t>(rows) * kVocab), scratch;
    step(tokens, rows, logits.data());
    for (int r = 0; r < rows; ++r) {
      float* row = logits.data() + static_cast<size_t>(r) * kVocab;
      const std::vector<int>& h = history_[r];
      apply_whisper_logits_rules(row, kVocab, static_cast<int>(h.size()), h, draw_->layout.timestamps, special(),
                                 draw_->options, draw_->layout.forced > 0);
      log_softmax_rule_row(row, kVocab);
      picked[r] = sample_token(row, kVocab, draw_->options.temperature, uniforms_[r], scratch);
      logprobs[r] = row[picked[r]];
    }
    uniforms_.clear();
    ++log_->draws;
  }
  void release() override {
    usable();
    ++log_->releases;
    rows_.clear();
  }

 private:
  void usable() const { SC_CHECK(log_->releases == 0, ErrorCode::kInternal, "fake rows: used after release"); }
  // Row r is fed tokens[r] (the tokens feed() announced), its next logits to logits[r].
  void step(const int* tokens, int rows, float* logits) {
    usable();
    SC_CHECK(rows == static_cast<int>(rows_.size()) && std::vector<int>(tokens, tokens + rows) == fed_,
             ErrorCode::kInternal, "fake rows: a step that was not fed");
    for (int r = 0; r < rows; ++r) {
      rows_[r].push_back(tokens[r]);
      logits_after(rows_[r], logits + static_cast<size_t>(r) * kVocab);
    }
    fed_.clear();
  }

  RowsLog* log_;
  const Draw* draw_;
  std::vector<int> prompt_;
  std::vector<std::vector<int>> rows_;  // each row's tokens (prompt first)
  std::vector<int> fed_;
  std::vector<double> uniforms_;
  std::vector<std::vector<int>> history_;
};

// One window through make_search_decoder over FakeRows; *steps gets the step() calls it took.
inline WindowResult search(const std::vector<int>& prompt, const WindowOptions& o, RowsLog* log,
                           const FakeRows::Draw* draw = nullptr, int* steps = nullptr) {
  std::unique_ptr<WindowDecoder> d =
      make_search_decoder(std::make_unique<FakeRows>(log, draw), kVocab, prompt, special(), o);
  int n = 0;
  while (!d->done()) {
    d->step();
    ++n;
  }
  if (steps) *steps = n;
  return d->take_result();
}

// One window through GreedyWindow over FakeModel.
inline WindowResult greedy_window(const std::vector<int>& prompt, const WindowOptions& o) {
  FakeModel model;
  Cross cross;
  GreedyWindow<FakeModel, Cross> w(model, cross, prompt, special(), o);
  while (!w.done()) w.step();
  return w.take_result();
}

}  // namespace fake
