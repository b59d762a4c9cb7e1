#include "runtime/whisper_beam.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <utility>

#include "core/status.h"
#include "ops/ops.h"
#include "runtime/whisper_greedy.h"

namespace speechcore::runtime {

using models::whisper::BatchDecoderState;
using models::whisper::CrossKV;
using models::whisper::DecoderState;
using models::whisper::WhisperModel;

// ---- random numbers and the sampler -------------------------------------------------------

namespace {
uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
}  // namespace

uint64_t mix_seed(uint64_t a, uint64_t b) {
  uint64_t x = a;
  const uint64_t h = splitmix64(x);
  x = h ^ (b * 0xD6E8FEB86659FD93ull);
  return splitmix64(x);
}

SampleRng::SampleRng(uint64_t seed, uint64_t stream) : state_(mix_seed(seed, stream)) {}

uint64_t SampleRng::next() { return splitmix64(state_); }

double SampleRng::uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

int sample_token(const float* log_probs, int vocab, float temperature, SampleRng& rng, std::vector<float>& p) {
  return sample_token(log_probs, vocab, temperature, rng.uniform(), p);
}

int sample_token(const float* log_probs, int vocab, float temperature, double uniform, std::vector<float>& p) {
  SC_CHECK(temperature > 0.0f && vocab > 0, ErrorCode::kInvalidArgument, "sample_token: temperature must be > 0");
  p.resize(static_cast<size_t>(vocab));
  const float inv = 1.0f / temperature;  // CTranslate2 scales by the reciprocal
  float max = -std::numeric_limits<float>::infinity();
  for (int i = 0; i < vocab; ++i) {
    p[i] = log_probs[i] * inv;
    max = std::max(max, p[i]);
  }
  double sum = 0.0;
  for (int i = 0; i < vocab; ++i) {
    p[i] = std::exp(p[i] - max);
    sum += p[i];
  }
  const double u = uniform * sum;
  double cum = 0.0;
  int last = -1;
  for (int i = 0; i < vocab; ++i) {
    if (p[i] <= 0.0f) continue;
    cum += p[i];
    last = i;
    if (u < cum) return i;
  }
  SC_ASSERT(last >= 0);
  return last;  // rounding left u at the very end
}

void SearchRows::decode_draw(const int*, int, int*, float*) {
  throw_error(ErrorCode::kInternal, "this backend's search rows do not draw on the device");
}

void log_softmax_rule_row(float* x, int vocab) {
  constexpr float kLowest = std::numeric_limits<float>::lowest();
  for (int i = 0; i < vocab; ++i)
    if (x[i] == -std::numeric_limits<float>::infinity()) x[i] = kLowest;
  const float lse = ops::logsumexp(x, vocab);
  for (int i = 0; i < vocab; ++i) x[i] = x[i] - lse;
}

namespace {

// ---- shared pieces --------------------------------------------------------------------------

// The CPU model's rows: the prompt on one DecoderState, then a BatchDecoderState.
class CpuSearchRows final : public SearchRows {
 public:
  CpuSearchRows(const WhisperModel& model, const CrossKV& cross, int positions)
      : model_(model), cross_(cross), positions_(positions) {}

  // CTranslate2 forwards all but the last prompt token, then decodes from the last one: the
  // same arithmetic as running the whole prompt.
  float prefill(const std::vector<int>& prompt, int sot_index, int no_speech, float* logits) override {
    const int vocab = model_.config().vocab_size;
    const int prompt_len = static_cast<int>(prompt.size());
    std::vector<int> rows = {prompt_len - 1};
    if (sot_index != prompt_len - 1) rows.insert(rows.begin(), sot_index);
    std::vector<float> out(rows.size() * static_cast<size_t>(vocab));
    state_ = model_.new_state();
    model_.decode(state_, cross_, prompt.data(), prompt_len, rows, out.data());
    std::copy(out.end() - vocab, out.end(), logits);
    return no_speech_probability(out.data(), vocab, no_speech);
  }
  void broadcast(int rows) override {
    batch_ = model_.new_batch_state(rows, positions_);
    model_.broadcast(state_, batch_, rows);
    state_ = DecoderState();
  }
  void decode(const int* tokens, int /*rows*/, float* logits) override {
    model_.decode_rows(batch_, cross_, tokens, logits);
  }
  void reorder(const std::vector<int>& origins) override { model_.reorder(batch_, origins); }
  void release() override {
    batch_ = BatchDecoderState();
    state_ = DecoderState();
  }

 private:
  const WhisperModel& model_;
  const CrossKV& cross_;
  int positions_;
  DecoderState state_;       // the prompt, before the rows exist
  BatchDecoderState batch_;  // the rows' caches
};

// The logits rules (penalties, suppressions, timestamps) for one row at generation step
// `step` of a sequence `generated`, then its log-softmax.
void rules_and_log_softmax(float* row, int vocab, int step, const std::vector<int>& forced,
                           const std::vector<int>& generated, bool timestamps, const WhisperSpecialTokens& sp,
                           const WindowOptions& o) {
  apply_penalties(row, vocab, forced, generated, o);
  apply_whisper_logits_rules(row, vocab, step, generated, timestamps, sp, o, !forced.empty());
  log_softmax_rule_row(row, vocab);
}

// Positions a window's caches need: the prompt and every token fed back (the last one
// generated is never fed).
int positions(const std::vector<int>& prompt, const PromptLayout& layout) {
  return static_cast<int>(prompt.size()) + std::max(layout.max_new - 1, 0);
}

struct Hypothesis {
  std::vector<int> tokens;
  float score = 0.0f;  // sum of log-probs
};

// The best hypothesis by sum / length^length_penalty (CTranslate2 sorts the finished
// hypotheses with std::sort on that score and keeps the first).
WindowResult best_hypothesis(std::vector<Hypothesis>& hyps, float length_penalty, float no_speech_prob,
                             const std::vector<int>& forced) {
  SC_ASSERT(!hyps.empty());
  for (Hypothesis& h : hyps) h.tokens.insert(h.tokens.begin(), forced.begin(), forced.end());
  std::vector<float> norm(hyps.size());
  for (size_t i = 0; i < hyps.size(); ++i)
    norm[i] = normalized_score(hyps[i].score, hyps[i].tokens.size(), length_penalty);
  std::vector<size_t> idx(hyps.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::sort(idx.begin(), idx.end(), [&](size_t a, size_t b) { return norm[a] > norm[b]; });
  Hypothesis& best = hyps[idx[0]];
  WindowResult r;
  r.no_speech_prob = no_speech_prob;
  r.sum_logprob = best.score;
  r.avg_logprob = average_logprob(norm[idx[0]], best.tokens.size(), length_penalty);
  r.tokens = std::move(best.tokens);
  return r;
}

// ---- the searches' shared part --------------------------------------------------------------

// What every search over SearchRows shares: the window's prompt, layout and forced prefix; the
// first step's prefill (the prompt's logits and the no-speech probability), which alone ends a
// window that may generate no free token; done() and take_result(). A search implements its
// first step from the prompt's logits (logits_[0, vocab_)) and every later one, and ends with
// end() or end_with_best().
class RowsDecoderBase : public WindowDecoder {
 public:
  RowsDecoderBase(std::unique_ptr<SearchRows> rows, int vocab, std::vector<int> prompt, const WhisperSpecialTokens& sp,
                  WindowOptions o)
      : rows_(std::move(rows)), prompt_(std::move(prompt)), sp_(sp), o_(std::move(o)),
        layout_(prompt_layout(prompt_, sp_, o_)), vocab_(vocab), forced_(forced_tokens(prompt_, layout_)) {}

  void step() final {
    SC_ASSERT(!done_);
    if (started_) return next_step();
    started_ = true;
    logits_.assign(static_cast<size_t>(search_rows(o_)) * vocab_, 0.0f);
    result_.no_speech_prob = rows_->prefill(prompt_, layout_.sot_index, sp_.no_speech, logits_.data());
    if (layout_.max_new > 0) return first_step();
    if (layout_.forced > 0)  // the length limit falls inside the prefix
      result_ = prefix_only_result(prompt_, layout_, result_.no_speech_prob, o_.length_penalty);
    else  // an empty window
      finish_window(result_, o_.length_penalty);
    end();
  }
  bool done() const final { return done_; }
  WindowResult take_result() final {
    SC_ASSERT(done_);
    return std::move(result_);
  }

 protected:
  // The first step after the prefill (layout_.max_new > 0), from the prompt's logits.
  virtual void first_step() = 0;
  virtual void next_step() = 0;

  // Ends the search with result_ as it is; frees the rows and the logits.
  void end() {
    done_ = true;
    rows_->release();
    std::vector<float>().swap(logits_);
  }
  // Ends it with the best of `hyps` (the forced prefix put first).
  void end_with_best(std::vector<Hypothesis>& hyps) {
    result_ = best_hypothesis(hyps, o_.length_penalty, result_.no_speech_prob, forced_);
    end();
  }

  std::unique_ptr<SearchRows> rows_;
  std::vector<int> prompt_;
  WhisperSpecialTokens sp_;
  WindowOptions o_;
  PromptLayout layout_;
  int vocab_;
  std::vector<int> forced_;     // the prompt's forced prefix (PromptLayout::forced)
  std::vector<float> logits_;   // [rows, vocab]: the search_rows(o_) rows at most
  WindowResult result_;         // its no-speech probability set by the prefill

 private:
  bool started_ = false;
  bool done_ = false;
};

// ---- greedy ---------------------------------------------------------------------------------

class GreedyDecoder final : public WindowDecoder {
 public:
  GreedyDecoder(const WhisperModel& model, const CrossKV& cross, std::vector<int> prompt, const WhisperSpecialTokens& sp,
                WindowOptions o)
      : w_(model, cross, std::move(prompt), sp, std::move(o)) {}
  void step() override { w_.step(); }
  bool done() const override { return w_.done(); }
  WindowResult take_result() override { return w_.take_result(); }

 private:
  GreedyWindow<WhisperModel, CrossKV> w_;
};

// Greedy decoding of one SearchRows row with the logits rules on the host: GreedyWindow's
// arithmetic (the same picks, log-probs and no-speech probability) over any backend's rows,
// with the penalties and the forced prefix GreedyWindow leaves to it.
class GreedyRowsDecoder final : public RowsDecoderBase {
 public:
  using RowsDecoderBase::RowsDecoderBase;

 private:
  void first_step() override {
    rows_->broadcast(1);
    pick();
  }
  void next_step() override {
    const int last = result_.tokens.back();
    rows_->decode(&last, 1, logits_.data());
    pick();
  }
  void pick() {
    float logprob = 0.0f;
    const int best = greedy_pick(logits_.data(), vocab_, forced_, result_.tokens, layout_, sp_, o_, &logprob);
    if (!add_pick(result_, best, logprob, sp_.eot, layout_.max_new)) return rows_->feed(&result_.tokens.back(), 1);
    // The forced prefix leads the window's tokens (its log-probs count 0, as in CTranslate2).
    result_.tokens.insert(result_.tokens.begin(), forced_.begin(), forced_.end());
    finish_window(result_, o_.length_penalty);
    end();
  }
};

// ---- beam search ----------------------------------------------------------------------------

class BeamSearchDecoder final : public RowsDecoderBase {
 public:
  BeamSearchDecoder(std::unique_ptr<SearchRows> rows, int vocab, std::vector<int> prompt,
                    const WhisperSpecialTokens& sp, WindowOptions o)
      : RowsDecoderBase(std::move(rows), vocab, std::move(prompt), sp, std::move(o)), beam_(o_.beam_size),
        candidates_(2 * o_.beam_size),
        max_finished_(static_cast<size_t>(std::round(static_cast<float>(o_.beam_size) * o_.patience))) {
    SC_CHECK(beam_ >= 2 && candidates_ <= vocab_, ErrorCode::kInvalidArgument, "beam_size ", beam_,
             " is out of range for a vocabulary of ", vocab_);
    SC_CHECK(max_finished_ >= 1, ErrorCode::kInvalidArgument, "beam_size * patience must round to at least 1");
  }

 private:
  void first_step() override {
    seqs_.assign(1, {});
    scores_.assign(1, 0.0f);
    expand(1);  // the first step expands the one prompt row (CTranslate2 on the CPU)
  }
  void next_step() override {
    rows_->decode(last_.data(), beam_, logits_.data());
    expand(beam_);
  }

  // One step of the search from the logits of its rows_in rows.
  void expand(int rows_in) {
    // Cumulative log-probs of every continuation of every beam.
    for (int r = 0; r < rows_in; ++r) {
      float* row = logits_.data() + static_cast<size_t>(r) * vocab_;
      rules_and_log_softmax(row, vocab_, step_, forced_, seqs_[r], layout_.timestamps, sp_, o_);
      if (step_ > 0) {
        const float s = scores_[r];
        for (int i = 0; i < vocab_; ++i) row[i] = row[i] + s;
      }
    }
    // The 2B best over all of them (CTranslate2's CPU TopK: partial_sort of the flat indices).
    const int depth = rows_in * vocab_;
    ids_.resize(static_cast<size_t>(depth));
    std::iota(ids_.begin(), ids_.end(), 0);
    const float* flat = logits_.data();
    std::partial_sort(ids_.begin(), ids_.begin() + candidates_, ids_.end(),
                      [flat](int a, int b) { return flat[a] > flat[b]; });
    std::vector<int> word(candidates_), origin(candidates_);
    std::vector<float> score(candidates_);
    for (int j = 0; j < candidates_; ++j) {
      word[j] = ids_[j] % vocab_;
      origin[j] = ids_[j] / vocab_;
      score[j] = flat[ids_[j]];
    }
    if (step_ == 0 && layout_.forced > 0) {
      // CTranslate2's first free step after a forced prefix: end-of-text among the secondary
      // candidates becomes token 0 with a score of -1e10 (a dead beam, never a hypothesis).
      for (int j = 1; j < candidates_; ++j)
        if (word[j] == sp_.eot) {
          word[j] = 0;
          score[j] = -1e10f;
        }
    }

    // Finished hypotheses among the first B candidates; each is replaced by the next
    // candidate that does not end.
    const bool last_step = step_ + 1 == layout_.max_new;
    std::vector<int> active(beam_);
    int secondary = beam_;
    for (int k = 0; k < beam_; ++k) {
      int next = k;
      if (word[k] == sp_.eot || last_step) {
        if (k == 0) top_beam_finished_ = true;
        Hypothesis h;
        h.tokens = seqs_[origin[k]];
        if (word[k] != sp_.eot) h.tokens.push_back(word[k]);
        h.score = score[k];
        finished_.push_back(std::move(h));
        for (int j = secondary; j < candidates_; ++j) {
          if (word[j] != sp_.eot) {
            next = j;
            secondary = j + 1;
            break;
          }
        }
      }
      active[k] = next;
    }
    const bool early_exit = o_.length_penalty == 0.0f;
    const bool finished = last_step || (early_exit ? top_beam_finished_ && !finished_.empty()
                                                   : finished_.size() >= max_finished_);
    if (finished) {
      end_with_best(finished_);
      std::vector<int>().swap(ids_);
      return;
    }

    // The B kept candidates become the beams; their caches come from their origin beams.
    std::vector<std::vector<int>> seqs(beam_);
    std::vector<int> origins(beam_);
    scores_.assign(beam_, 0.0f);
    last_.assign(beam_, 0);
    for (int k = 0; k < beam_; ++k) {
      const int c = active[k];
      seqs[k] = seqs_[origin[c]];
      seqs[k].push_back(word[c]);
      scores_[k] = score[c];
      last_[k] = word[c];
      origins[k] = origin[c];
    }
    seqs_ = std::move(seqs);
    if (step_ == 0) {
      rows_->broadcast(beam_);
    } else {
      rows_->reorder(origins);
    }
    rows_->feed(last_.data(), beam_);
    ++step_;
  }

  int beam_;
  int candidates_;
  size_t max_finished_;

  std::vector<int> ids_;           // top-k scratch
  std::vector<std::vector<int>> seqs_;  // each beam's tokens so far
  std::vector<float> scores_;      // each beam's cumulative log-prob
  std::vector<int> last_;          // each beam's last token (the next input)
  std::vector<Hypothesis> finished_;
  bool top_beam_finished_ = false;
  int step_ = 0;
};

// ---- sampling -------------------------------------------------------------------------------

class SamplingDecoder final : public RowsDecoderBase {
 public:
  SamplingDecoder(std::unique_ptr<SearchRows> rows, int vocab, std::vector<int> prompt, const WhisperSpecialTokens& sp,
                  WindowOptions o)
      : RowsDecoderBase(std::move(rows), vocab, std::move(prompt), sp, std::move(o)), n_(o_.num_hypotheses),
        draw_(rows_->can_draw() && o_.repetition_penalty == 1.0f && o_.no_repeat_ngram_size == 0) {
    SC_CHECK(o_.temperature > 0.0f && std::isfinite(o_.temperature), ErrorCode::kInvalidArgument,
             "sampling needs a finite temperature > 0");
    SC_CHECK(n_ >= 1, ErrorCode::kInvalidArgument, "best_of must be >= 1, got ", n_);
    for (int r = 0; r < n_; ++r) rng_.emplace_back(o_.seed, static_cast<uint64_t>(r));
    hyps_.resize(n_);
    ended_.assign(n_, false);
  }

 private:
  void first_step() override {
    // Every candidate starts from the same distribution.
    rules_and_log_softmax(logits_.data(), vocab_, 0, forced_, {}, layout_.timestamps, sp_, o_);
    for (int r = 0; r < n_; ++r) {
      alive_.push_back(r);
      pick(r, logits_.data());
    }
    advance();
  }
  void next_step() override {
    if (draw_) {  // the rows draw on the device (uniforms given at the last step's end)
      const int alive = static_cast<int>(alive_.size());
      picked_.resize(static_cast<size_t>(alive));
      picked_lp_.resize(static_cast<size_t>(alive));
      rows_->decode_draw(last_.data(), alive, picked_.data(), picked_lp_.data());
      for (int i = 0; i < alive; ++i) take(alive_[i], picked_[i], picked_lp_[i]);
    } else {
      rows_->decode(last_.data(), static_cast<int>(alive_.size()), logits_.data());
      for (size_t i = 0; i < alive_.size(); ++i) {
        float* row = logits_.data() + i * vocab_;
        const int r = alive_[i];
        rules_and_log_softmax(row, vocab_, step_, forced_, hyps_[r].tokens, layout_.timestamps, sp_, o_);
        pick(r, row);
      }
    }
    advance();
  }

  // After the step's picks: candidates that ended drop out of the batch; the search ends with
  // the last of them.
  void advance() {
    std::vector<int> keep, kept_rows;
    last_.clear();
    for (size_t i = 0; i < alive_.size(); ++i) {
      const int r = alive_[i];
      if (ended_[r]) continue;
      keep.push_back(static_cast<int>(i));
      kept_rows.push_back(r);
      last_.push_back(hyps_[r].tokens.back());
    }
    if (kept_rows.empty()) return end_with_best(hyps_);
    if (step_ == 0) {
      rows_->broadcast(static_cast<int>(kept_rows.size()));
    } else if (keep.size() != alive_.size()) {
      rows_->reorder(keep);
    }
    rows_->feed(last_.data(), static_cast<int>(last_.size()));
    if (draw_) {  // each kept candidate's next uniform (its own stream: the same numbers as on the host)
      std::vector<double> uniforms;
      std::vector<const std::vector<int>*> history;
      for (int r : kept_rows) {
        uniforms.push_back(rng_[r].uniform());
        history.push_back(&hyps_[r].tokens);
      }
      rows_->feed_draws(uniforms, history);
    }
    alive_ = std::move(kept_rows);
    ++step_;
  }

  // Draws candidate r's next token from its log-probs `row`.
  void pick(int r, const float* row) {
    const int token = sample_token(row, vocab_, o_.temperature, rng_[r], scratch_);
    take(r, token, row[token]);
  }
  // Candidate r's drawn token and its log-prob (temperature 1).
  void take(int r, int token, float logprob) {
    Hypothesis& h = hyps_[r];
    h.score = h.score + logprob;
    if (token == sp_.eot) {
      ended_[r] = true;
      return;
    }
    h.tokens.push_back(token);
    if (static_cast<int>(h.tokens.size()) >= layout_.max_new) ended_[r] = true;
  }

  int n_;
  bool draw_;                     // the rows draw on their device (SearchRows::can_draw, no penalties)

  std::vector<int> picked_;       // device draws: tokens, log-probs
  std::vector<float> picked_lp_;
  std::vector<float> scratch_;
  std::vector<SampleRng> rng_;    // one stream per candidate
  std::vector<Hypothesis> hyps_;  // per candidate
  std::vector<bool> ended_;
  std::vector<int> alive_;        // candidates still decoding, in batch-row order
  std::vector<int> last_;         // their last tokens
  int step_ = 0;
};

// The options every window decoder checks first.
void check_search_options(const WindowOptions& options) {
  SC_CHECK(options.beam_size >= 1, ErrorCode::kInvalidArgument, "beam_size must be >= 1, got ", options.beam_size);
  SC_CHECK(std::isfinite(options.temperature) && options.temperature >= 0.0f, ErrorCode::kInvalidArgument,
           "temperature must be a finite number >= 0, got ", options.temperature);
}

}  // namespace

std::unique_ptr<WindowDecoder> make_cpu_window_decoder(const WhisperModel& model, const CrossKV& cross,
                                                       std::vector<int> prompt, const WhisperSpecialTokens& special,
                                                       WindowOptions options) {
  check_search_options(options);
  const PromptLayout layout = prompt_layout(prompt, special, options);
  if (needs_search(options, layout)) {
    const int positions_needed = positions(prompt, layout);
    return make_search_decoder(std::make_unique<CpuSearchRows>(model, cross, positions_needed),
                               model.config().vocab_size, std::move(prompt), special, std::move(options));
  }
  return std::make_unique<GreedyDecoder>(model, cross, std::move(prompt), special, std::move(options));
}

std::unique_ptr<WindowDecoder> make_search_decoder(std::unique_ptr<SearchRows> rows, int vocab,
                                                   std::vector<int> prompt, const WhisperSpecialTokens& special,
                                                   WindowOptions options) {
  check_search_options(options);
  if (options.temperature > 0.0f)
    return std::make_unique<SamplingDecoder>(std::move(rows), vocab, std::move(prompt), special, std::move(options));
  if (options.beam_size == 1)
    return std::make_unique<GreedyRowsDecoder>(std::move(rows), vocab, std::move(prompt), special, std::move(options));
  return std::make_unique<BeamSearchDecoder>(std::move(rows), vocab, std::move(prompt), special, std::move(options));
}

float no_speech_probability(const float* logits, int vocab, int no_speech) {
  if (no_speech < 0) return 0.0f;
  const double lse = ops::logsumexp(logits, vocab);
  return static_cast<float>(std::exp(logits[no_speech] - lse));
}

int search_positions(const std::vector<int>& prompt, const PromptLayout& layout) { return positions(prompt, layout); }

WindowResult decode_window_cpu(const WhisperModel& model, const CrossKV& cross, const std::vector<int>& prompt,
                               const WhisperSpecialTokens& special, const WindowOptions& options) {
  std::unique_ptr<WindowDecoder> d = make_cpu_window_decoder(model, cross, prompt, special, options);
  while (!d->done()) d->step();
  return d->take_result();
}

}  // namespace speechcore::runtime
