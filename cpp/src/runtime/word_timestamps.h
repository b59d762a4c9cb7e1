// Word-level timestamps of a window (TranscribeOptions::word_timestamps), as faster-whisper
// 1.2.1's add_word_timestamps / find_alignment / merge_punctuations and the silence skipping
// around hallucinations of its generate_segments: the window's text tokens are aligned to the
// audio (WindowRunner::align), split into words (at spaces, or at unicode characters for
// zh/ja/th/lo/my/yue), punctuation is merged into neighbouring words, and long words at pauses
// are clipped by the median word duration.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "io/tokenizer.h"
#include "runtime/whisper_decoding.h"
#include "speechcore/results.h"

namespace speechcore::runtime {

// A window's tokens between two timestamp pairs (times in seconds) and, with word timestamps,
// its words.
struct SplitSegment {
  double start, end;
  std::vector<int> tokens;
  std::vector<Word> words;
};

// One word of the alignment (times in seconds from the window's start).
struct WordTiming {
  std::string word;
  std::vector<int> tokens;
  double start = 0.0, end = 0.0;
  double probability = 0.0;
};

// Python's round(x, digits): the binary value rounded to `digits` decimals, ties to even.
double round_decimals(double x, int digits);

// faster-whisper's Tokenizer.split_to_word_tokens: tokens (text, then end-of-text) grouped
// into words.
void split_to_word_tokens(const io::Tokenizer& tok, const std::string& language, const std::vector<int>& tokens,
                          std::vector<std::string>& words, std::vector<std::vector<int>>& word_tokens);

// faster-whisper's find_alignment: the words of text_tokens with times from the DTW path.
std::vector<WordTiming> words_from_alignment(const io::Tokenizer& tok, const std::string& language,
                                             const std::vector<int>& text_tokens, const Alignment& alignment);

// faster-whisper's merge_punctuations (in place; merged entries keep an empty word).
void merge_punctuations(std::vector<WordTiming>& alignment, const std::string& prepended,
                        const std::string& appended);

// faster-whisper's add_word_timestamps for one window's segments: `alignment` is
// words_from_alignment of all their text tokens; sets every segment's words and updates its
// start/end. seek: the window's first mel frame.
void add_word_timestamps(std::vector<SplitSegment>& segments, std::vector<WordTiming> alignment, int64_t seek,
                         const std::string& prepend_punctuations, const std::string& append_punctuations,
                         int eot, double last_speech_timestamp);

// faster-whisper's get_end: the end of the last word, else the last segment's end.
std::optional<double> segments_end(const std::vector<SplitSegment>& segments);

// faster-whisper's is_segment_anomaly (hallucination_silence_threshold); null is not one.
bool is_segment_anomaly(const SplitSegment* segment);

}  // namespace speechcore::runtime
