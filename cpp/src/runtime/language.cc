#include "runtime/language.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>

#include "core/status.h"

namespace speechcore::runtime {

std::vector<std::pair<std::string, float>> language_probs(const WindowRunner& runner, const io::Tokenizer& tok,
                                                          const float* mel) {
  SC_CHECK(tok.multilingual(), ErrorCode::kInvalidArgument,
           "language detection needs a multilingual model; this one is English-only");
  const std::vector<std::string> codes = tok.language_codes();
  const std::vector<int> ids = tok.language_tokens();
  const std::vector<float> logits = runner.prompt_logits(mel, {tok.sot()});
  const int vocab = static_cast<int>(logits.size());
  float max = -INFINITY;
  for (int id : ids) {
    SC_CHECK(id >= 0 && id < vocab, ErrorCode::kInvalidModel, "language token ", id, " is outside the logits");
    max = std::max(max, logits[id]);
  }
  double sum = 0.0;
  for (int id : ids) sum += std::exp(static_cast<double>(logits[id]) - max);
  std::vector<std::pair<std::string, float>> out;
  out.reserve(ids.size());
  for (size_t i = 0; i < ids.size(); ++i)
    out.emplace_back(codes[i], static_cast<float>(std::exp(static_cast<double>(logits[ids[i]]) - max) / sum));
  std::stable_sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
  return out;
}

LanguageDetection detect_language(const WindowRunner& runner, const io::Tokenizer& tok, const Tensor& features,
                                  int64_t start, int segments, float threshold, int window) {
  SC_CHECK(segments >= 1, ErrorCode::kInvalidArgument, "language_detection_segments must be >= 1, got ", segments);
  SC_CHECK(!std::isnan(threshold), ErrorCode::kInvalidArgument, "language_detection_threshold must be a number");
  const int n_mels = static_cast<int>(features.dim(0));
  const int64_t total = features.dim(1);
  const int input = runner.n_frames();  // the encoder's frames
  if (window <= 0) window = input;
  SC_CHECK(window <= input, ErrorCode::kInternal, "detect_language: windows of ", window, " frames > ", input);
  SC_CHECK(start >= 0 && start < total, ErrorCode::kInternal, "detect_language: start frame ", start, " of ", total);
  const int64_t frames = std::min<int64_t>(total - start, static_cast<int64_t>(segments) * window);
  const float* f = features.data<float>();
  std::vector<float> mel(static_cast<size_t>(n_mels) * input);
  // (language, probabilities of the windows that ranked it first), in first-seen order
  std::vector<std::pair<std::string, std::vector<float>>> votes;
  LanguageDetection d;
  for (int64_t i = 0; i < frames; i += window) {
    const int64_t n = std::min<int64_t>(window, frames - i);
    std::fill(mel.begin(), mel.end(), 0.0f);
    for (int m = 0; m < n_mels; ++m)
      std::memcpy(mel.data() + static_cast<size_t>(m) * input, f + m * total + start + i, sizeof(float) * n);
    d.all_language_probs = language_probs(runner, tok, mel.data());
    d.language = d.all_language_probs[0].first;
    d.probability = d.all_language_probs[0].second;
    if (d.probability > threshold) return d;
    size_t v = 0;
    while (v < votes.size() && votes[v].first != d.language) ++v;
    if (v == votes.size()) votes.emplace_back(d.language, std::vector<float>{});
    votes[v].second.push_back(d.probability);
  }
  // No window was sure enough: the majority (Python's max over the dict: the first on a tie).
  SC_ASSERT(!votes.empty());
  size_t best = 0;
  for (size_t i = 1; i < votes.size(); ++i)
    if (votes[i].second.size() > votes[best].second.size()) best = i;
  d.language = votes[best].first;
  d.probability = *std::max_element(votes[best].second.begin(), votes[best].second.end());
  return d;
}

}  // namespace speechcore::runtime
