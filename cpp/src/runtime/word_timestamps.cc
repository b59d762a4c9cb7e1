#include "runtime/word_timestamps.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>

#include "io/unicode.h"

namespace speechcore::runtime {

namespace {

constexpr double kTokensPerSecond = 50.0;   // encoder positions per second
constexpr double kFramesPerSecond = 100.0;  // mel frames per second

// UTF-8 (valid: the tokenizer's decode replaces ill-formed bytes) -> code points.
std::u32string code_points(const std::string& s) {
  std::u32string out;
  for (size_t i = 0; i < s.size();) {
    uint32_t cp = 0;
    size_t len = io::unicode::decode_utf8(s, i, cp);
    if (len == 0) {  // an ill-formed byte stands for itself
      cp = static_cast<unsigned char>(s[i]);
      len = 1;
    }
    out.push_back(static_cast<char32_t>(cp));
    i += len;
  }
  return out;
}

std::string utf8(const std::u32string& s) {
  std::string out;
  for (char32_t cp : s) io::unicode::append_utf8(static_cast<uint32_t>(cp), out);
  return out;
}

// Python's str.isspace for one code point.
bool is_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f || c == 0x3000;
}

// Python's str.strip().
std::string py_strip(const std::string& s) {
  const std::u32string cps = code_points(s);
  size_t b = 0, e = cps.size();
  while (b < e && is_space(cps[b])) ++b;
  while (e > b && is_space(cps[e - 1])) --e;
  return utf8(cps.substr(b, e - b));
}

// Python's `needle in haystack` for strings (substring; "" is in every string).
bool py_in(const std::string& needle, const std::string& haystack) { return haystack.find(needle) != std::string::npos; }

bool starts_with(const std::string& s, const char* p) { return s.rfind(p, 0) == 0; }
bool ends_with_space(const std::string& s) { return !s.empty() && s.back() == ' '; }


const char* const kPythonPunctuation = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";  // string.punctuation

void split_tokens_on_unicode(const io::Tokenizer& tok, const std::vector<int>& tokens, std::vector<std::string>& words,
                             std::vector<std::vector<int>>& word_tokens) {
  const std::u32string full = code_points(tok.decode_with_timestamps(tokens));
  std::vector<int> current;
  size_t offset = 0;
  for (int t : tokens) {
    current.push_back(t);
    const std::u32string decoded = code_points(tok.decode_with_timestamps(current));
    const size_t at = decoded.find(U'\ufffd');
    if (at == std::u32string::npos || (at + offset < full.size() && full[at + offset] == U'\ufffd')) {
      words.push_back(utf8(decoded));
      word_tokens.push_back(current);
      current.clear();
      offset += decoded.size();
    }
  }
}

}  // namespace

double round_decimals(double x, int digits) {
  if (!std::isfinite(x)) return x;
  char buf[512];
  std::snprintf(buf, sizeof(buf), "%.*f", digits, x);
  return std::strtod(buf, nullptr);
}

void split_to_word_tokens(const io::Tokenizer& tok, const std::string& language, const std::vector<int>& tokens,
                          std::vector<std::string>& words, std::vector<std::vector<int>>& word_tokens) {
  words.clear();
  word_tokens.clear();
  static const char* const kNoSpaces[] = {"zh", "ja", "th", "lo", "my", "yue"};
  if (std::find_if(std::begin(kNoSpaces), std::end(kNoSpaces), [&](const char* l) { return language == l; }) !=
      std::end(kNoSpaces)) {
    split_tokens_on_unicode(tok, tokens, words, word_tokens);
    return;
  }
  std::vector<std::string> subwords;
  std::vector<std::vector<int>> subword_tokens;
  split_tokens_on_unicode(tok, tokens, subwords, subword_tokens);
  for (size_t i = 0; i < subwords.size(); ++i) {
    const bool special = subword_tokens[i][0] >= tok.eot();
    const bool with_space = starts_with(subwords[i], " ");
    const bool punctuation = py_in(py_strip(subwords[i]), kPythonPunctuation);
    if (special || with_space || punctuation || words.empty()) {
      words.push_back(subwords[i]);
      word_tokens.push_back(subword_tokens[i]);
    } else {
      words.back() += subwords[i];
      word_tokens.back().insert(word_tokens.back().end(), subword_tokens[i].begin(), subword_tokens[i].end());
    }
  }
}

std::vector<WordTiming> words_from_alignment(const io::Tokenizer& tok, const std::string& language,
                                             const std::vector<int>& text_tokens, const Alignment& alignment) {
  std::vector<WordTiming> out;
  if (text_tokens.empty()) return out;
  std::vector<int> tokens = text_tokens;
  tokens.push_back(tok.eot());
  std::vector<std::string> words;
  std::vector<std::vector<int>> word_tokens;
  split_to_word_tokens(tok, language, tokens, words, word_tokens);
  if (word_tokens.size() <= 1) return out;
  std::vector<size_t> boundaries{0};
  for (size_t w = 0; w + 1 < word_tokens.size(); ++w) boundaries.push_back(boundaries.back() + word_tokens[w].size());
  // The time of each text row's first frame on the path (rows advance by at most one per step).
  std::vector<double> jump_times;
  for (size_t k = 0; k < alignment.path.size(); ++k)
    if (k == 0 || alignment.path[k].first != alignment.path[k - 1].first)
      jump_times.push_back(alignment.path[k].second / kTokensPerSecond);
  const std::vector<float>& probs = alignment.text_token_probs;
  for (size_t w = 0; w + 1 < boundaries.size(); ++w) {
    WordTiming t;
    t.word = words[w];
    t.tokens = word_tokens[w];
    // No path (a window of under 2 mel frames: nothing to align against): times 0.
    const size_t b = boundaries[w], e = boundaries[w + 1];
    t.start = b < jump_times.size() ? jump_times[b] : 0.0;
    t.end = e < jump_times.size() ? jump_times[e] : 0.0;
    double sum = 0.0;
    for (size_t i = b; i < e && i < probs.size(); ++i) sum += probs[i];
    t.probability = e > b ? sum / static_cast<double>(e - b) : std::numeric_limits<double>::quiet_NaN();
    out.push_back(std::move(t));
  }
  return out;
}

void merge_punctuations(std::vector<WordTiming>& a, const std::string& prepended, const std::string& appended) {
  if (a.size() >= 2) {
    int i = static_cast<int>(a.size()) - 2, j = static_cast<int>(a.size()) - 1;
    while (i >= 0) {
      WordTiming& previous = a[i];
      WordTiming& following = a[j];
      if (starts_with(previous.word, " ") && py_in(py_strip(previous.word), prepended)) {
        following.word = previous.word + following.word;
        following.tokens.insert(following.tokens.begin(), previous.tokens.begin(), previous.tokens.end());
        previous.word.clear();
        previous.tokens.clear();
      } else {
        j = i;
      }
      --i;
    }
  }
  size_t i = 0, j = 1;
  while (j < a.size()) {
    WordTiming& previous = a[i];
    WordTiming& following = a[j];
    if (!ends_with_space(previous.word) && py_in(following.word, appended)) {
      previous.word += following.word;
      previous.tokens.insert(previous.tokens.end(), following.tokens.begin(), following.tokens.end());
      following.word.clear();
      following.tokens.clear();
    } else {
      i = j;
    }
    ++j;
  }
}

void add_word_timestamps(std::vector<SplitSegment>& segments, std::vector<WordTiming> alignment, int64_t seek,
                         const std::string& prepend_punctuations, const std::string& append_punctuations, int eot,
                         double last_speech_timestamp) {
  if (segments.empty()) return;
  std::vector<size_t> text_counts;
  for (const SplitSegment& s : segments)
    text_counts.push_back(static_cast<size_t>(
        std::count_if(s.tokens.begin(), s.tokens.end(), [&](int t) { return t < eot; })));

  std::vector<double> durations;
  for (const WordTiming& w : alignment)
    if (w.end - w.start != 0.0) durations.push_back(w.end - w.start);
  double median_duration = 0.0;
  if (!durations.empty()) {
    std::sort(durations.begin(), durations.end());
    const size_t n = durations.size();
    median_duration = n % 2 ? durations[n / 2] : (durations[n / 2 - 1] + durations[n / 2]) / 2.0;
  }
  median_duration = std::min(0.7, median_duration);
  const double max_duration = median_duration * 2;
  // Long words at sentence boundaries are clipped to twice the median duration.
  if (!durations.empty()) {
    const std::string sentence_end_marks = ".\u3002!\uff01?\uff1f";
    for (size_t i = 1; i < alignment.size(); ++i) {
      if (alignment[i].end - alignment[i].start > max_duration) {
        if (py_in(alignment[i].word, sentence_end_marks))
          alignment[i].end = alignment[i].start + max_duration;
        else if (py_in(alignment[i - 1].word, sentence_end_marks))
          alignment[i].start = alignment[i].end - max_duration;
      }
    }
  }
  merge_punctuations(alignment, prepend_punctuations, append_punctuations);

  const double time_offset = static_cast<double>(seek) / kFramesPerSecond;
  size_t word_index = 0;
  for (size_t si = 0; si < segments.size(); ++si) {
    SplitSegment& segment = segments[si];
    size_t saved_tokens = 0;
    std::vector<Word> words;
    while (word_index < alignment.size() && saved_tokens < text_counts[si]) {
      const WordTiming& timing = alignment[word_index];
      if (!timing.word.empty()) {
        Word w;
        w.word = timing.word;
        w.start = round_decimals(time_offset + timing.start, 2);
        w.end = round_decimals(time_offset + timing.end, 2);
        w.probability = timing.probability;
        words.push_back(std::move(w));
      }
      saved_tokens += timing.tokens.size();
      ++word_index;
    }
    if (!words.empty()) {
      // The first and second word after a pause are not longer than twice the median duration.
      if (words[0].end - last_speech_timestamp > median_duration * 4 &&
          (words[0].end - words[0].start > max_duration ||
           (words.size() > 1 && words[1].end - words[0].start > max_duration * 2))) {
        if (words.size() > 1 && words[1].end - words[1].start > max_duration) {
          const double boundary = std::max(words[1].end / 2, words[1].end - max_duration);
          words[0].end = words[1].start = boundary;
        }
        words[0].start = std::max(0.0, words[0].end - max_duration);
      }
      // The segment's start timestamp wins when the first word is too long.
      if (segment.start < words[0].end && segment.start - 0.5 > words[0].start) {
        words[0].start = std::max(0.0, std::min(words[0].end - median_duration, segment.start));
      } else {
        segment.start = words[0].start;
      }
      // The segment's end timestamp wins when the last word is too long.
      if (segment.end > words.back().start && segment.end + 0.5 < words.back().end) {
        words.back().end = std::max(words.back().start + median_duration, segment.end);
      } else {
        segment.end = words.back().end;
      }
      last_speech_timestamp = segment.end;
    }
    segment.words = std::move(words);
  }
}

std::optional<double> segments_end(const std::vector<SplitSegment>& segments) {
  for (auto s = segments.rbegin(); s != segments.rend(); ++s)
    if (!s->words.empty()) return s->words.back().end;
  if (!segments.empty()) return segments.back().end;
  return std::nullopt;
}

bool is_segment_anomaly(const SplitSegment* segment) {
  if (segment == nullptr || segment->words.empty()) return false;
  const std::string punctuation = "\"'\u201c\u00bf([{-\"'.\u3002,\uff0c!\uff01?\uff1f:\uff1a\u201d)]}\u3001";
  double score = 0.0;
  size_t count = 0;
  for (const Word& w : segment->words) {
    if (py_in(w.word, punctuation)) continue;
    if (count == 8) break;
    ++count;
    const double probability = w.probability;
    const double duration = w.end - w.start;
    if (probability < 0.15) score += 1.0;
    if (duration < 0.133) score += (0.133 - duration) * 15;
    if (duration > 2.0) score += duration - 2.0;
  }
  return score >= 3 || score + 0.01 >= static_cast<double>(count);
}

}  // namespace speechcore::runtime
