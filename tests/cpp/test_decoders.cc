// The window decoders over a fake model (fake_decoder.h): the search's greedy over rows against
// GreedyWindow, GreedyWindow refusing the windows needs_search() routes elsewhere, the windows
// that end at the prefill (the prefix alone), the rows' life cycle (one prefill, one release,
// nothing after it) and device-side draws against the host's sampling. Token-for-token
// agreement with faster-whisper is tested in Python (test_beam_search.py, test_fallback.py,
// test_prompts.py).
#include <algorithm>
#include <cmath>
#include <functional>
#include <memory>
#include <utility>

#include "check.h"
#include "fake_decoder.h"

using namespace fake;

namespace {

const std::vector<int> kPlain = {kSot, kLanguage, kTask, kNoTimestamps};
const std::vector<int> kTimestamps = {kSot, kLanguage, kTask};
const std::vector<int> kPrevious = {7, 8, 9, kSot, kLanguage, kTask, kNoTimestamps};  // previous text first
const std::vector<int> kPrefix = {kSot, kLanguage, kTask, kNoTimestamps, 3, 4};      // forced prefix 3 4

bool same_double(double a, double b) { return (std::isnan(a) && std::isnan(b)) || a == b; }

bool same(const WindowResult& a, const WindowResult& b) {
  return a.tokens == b.tokens && same_double(a.sum_logprob, b.sum_logprob) &&
         same_double(a.avg_logprob, b.avg_logprob) && a.no_speech_prob == b.no_speech_prob;
}

// f throws speechcore::Error with `code`.
bool throws_code(const std::function<void()>& f, ErrorCode code) {
  try {
    f();
  } catch (const speechcore::Error& e) {
    return e.code() == code;
  }
  return false;
}

WindowOptions with_length(int max_length) {
  WindowOptions o;
  o.max_length = max_length;
  return o;
}

}  // namespace

SC_TEST(greedy_over_rows_equals_greedy_window) {
  int limited = 0, ended = 0;
  for (const std::vector<int>& prompt : {kPlain, kTimestamps, kPrevious}) {
    for (int max_length : {448, 14, 16}) {
      WindowOptions o = with_length(max_length);
      o.suppress_tokens_begin = {kEot};
      const WindowResult want = greedy_window(prompt, o);
      RowsLog log;
      const WindowResult got = search(prompt, o, &log);
      EXPECT_TRUE(same(got, want));
      EXPECT_TRUE(!want.tokens.empty());
      EXPECT_TRUE(log.prefills == 1 && log.releases == 1);
      const PromptLayout layout = prompt_layout(prompt, special(), o);
      (static_cast<int>(want.tokens.size()) == layout.max_new ? limited : ended)++;
    }
  }
  EXPECT_TRUE(limited > 0 && ended > 0);  // both ways of ending a window were compared
}

SC_TEST(greedy_window_refuses_what_needs_the_search) {
  const auto with = [](const std::function<void(WindowOptions&)>& set) {
    WindowOptions o;
    set(o);
    return o;
  };
  const std::vector<std::pair<std::vector<int>, WindowOptions>> cases = {
      {kPlain, with([](WindowOptions& o) { o.repetition_penalty = 1.1f; })},
      {kPlain, with([](WindowOptions& o) { o.no_repeat_ngram_size = 2; })},
      {kPlain, with([](WindowOptions& o) { o.length_penalty = 0.5f; })},
      {kPlain, with([](WindowOptions& o) { o.beam_size = 2; })},
      {kPlain, with([](WindowOptions& o) { o.temperature = 0.5f; })},
      {kPrefix, WindowOptions()},
  };
  for (const auto& c : cases) {
    EXPECT_TRUE(needs_search(c.second, prompt_layout(c.first, special(), c.second)));
    EXPECT_TRUE(throws_code([&] { greedy_window(c.first, c.second); }, ErrorCode::kInternal));
  }
  EXPECT_TRUE(!greedy_window(kPlain, WindowOptions()).tokens.empty());  // the plain window still decodes
}

SC_TEST(windows_ending_inside_the_prefix_end_at_the_prefill) {
  // 5 forced tokens, max_length 10: max_total = min(10 / 2, 10 - 3) = 5 tokens, none free.
  const std::vector<int> prompt = {kSot, kLanguage, kTask, kNoTimestamps, 1, 2, 3, 4, 5};
  WindowOptions greedy = with_length(10);
  WindowOptions beam = greedy;
  beam.beam_size = 2;
  WindowOptions sampling = greedy;
  sampling.temperature = 0.7f;
  sampling.num_hypotheses = 3;
  WindowOptions longer = with_length(11);  // max_total = min(11 / 2, 11 - 3) = 5 still
  for (const WindowOptions& o : {greedy, beam, sampling, longer}) {
    const PromptLayout layout = prompt_layout(prompt, special(), o);
    EXPECT_TRUE(layout.max_new <= 0 && layout.forced == 5);
    std::vector<float> logits(kVocab), at_sot(kVocab);
    logits_after({kSot}, at_sot.data());
    const WindowResult want =
        prefix_only_result(prompt, layout, no_speech_probability(at_sot.data(), kVocab, special().no_speech), 1.0f);
    EXPECT_TRUE(want.tokens == std::vector<int>({1, 2, 3, 4, 5}));
    RowsLog log;
    int steps = 0;
    const WindowResult got = search(prompt, o, &log, nullptr, &steps);
    EXPECT_TRUE(same(got, want));
    EXPECT_TRUE(steps == 1 && log.prefills == 1 && log.broadcasts == 0 && log.decodes == 0 && log.releases == 1);
  }
}

SC_TEST(searches_release_their_rows_once) {
  std::vector<WindowOptions> all;
  WindowOptions o;
  o.repetition_penalty = 1.3f;
  o.no_repeat_ngram_size = 2;
  all.push_back(o);  // greedy over rows
  o = WindowOptions();
  o.beam_size = 3;
  all.push_back(o);
  o.length_penalty = 0.0f;  // early exit
  all.push_back(o);
  o = WindowOptions();
  o.temperature = 1.0f;
  o.num_hypotheses = 3;
  o.seed = 11;
  all.push_back(o);
  for (const std::vector<int>& prompt : {kPlain, kTimestamps, kPrefix}) {
    for (const WindowOptions& opt : all) {
      RowsLog log;
      std::unique_ptr<WindowDecoder> d =
          make_search_decoder(std::make_unique<FakeRows>(&log), kVocab, prompt, special(), opt);
      int steps = 0;
      while (!d->done()) {
        EXPECT_TRUE(log.releases == 0);
        d->step();
        ++steps;
      }
      EXPECT_TRUE(log.prefills == 1 && log.releases == 1 && log.decodes == steps - 1);
      EXPECT_TRUE(log.broadcasts == (steps > 1 ? 1 : 0));
      EXPECT_TRUE(throws_code([&] { d->step(); }, ErrorCode::kInternal));  // done: no more steps
      const WindowResult r = d->take_result();
      const std::vector<int> forced = forced_tokens(prompt, prompt_layout(prompt, special(), opt));
      EXPECT_TRUE(r.tokens.size() >= forced.size() && std::equal(forced.begin(), forced.end(), r.tokens.begin()));
      EXPECT_TRUE(std::isfinite(r.sum_logprob) && r.sum_logprob < 0.0);
    }
  }
}

SC_TEST(device_draws_equal_host_sampling) {
  int drawn = 0;
  for (const std::vector<int>& prompt : {kPlain, kTimestamps, kPrefix}) {
    for (uint64_t seed : {1u, 2u, 3u}) {
      WindowOptions o;
      o.temperature = 0.8f;
      o.num_hypotheses = 4;
      o.seed = seed;
      RowsLog host_log, device_log;
      const WindowResult want = search(prompt, o, &host_log);
      const FakeRows::Draw draw{o, prompt_layout(prompt, special(), o)};
      const WindowResult got = search(prompt, o, &device_log, &draw);
      EXPECT_TRUE(same(got, want));
      EXPECT_TRUE(host_log.draws == 0 && device_log.decodes == 0 && device_log.draws == host_log.decodes);
      drawn += device_log.draws;
    }
  }
  EXPECT_TRUE(drawn > 0);
}

SC_TEST_MAIN()
