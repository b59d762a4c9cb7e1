// Plain results returned by transcription.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace speechcore {

// A word of a segment (TranscribeOptions::word_timestamps), as faster-whisper's Word.
struct Word {
  double start = 0.0;          // seconds
  double end = 0.0;            // seconds
  std::string word;            // with its leading space and merged punctuation
  double probability = 0.0;    // mean probability of its tokens
};

struct Segment {
  int id = 0;
  int seek = 0;                // mel frame (10 ms) where the window that produced it starts
  double start = 0.0;          // seconds
  double end = 0.0;            // seconds
  std::string text;
  std::vector<int> tokens;     // text and timestamp tokens, without the prompt
  float avg_logprob = 0.0f;    // of the window that produced the segment
  float compression_ratio = 0.0f;
  float no_speech_prob = 0.0f;
  float temperature = 0.0f;
  std::vector<Word> words;     // with word_timestamps only (else empty)
};

struct Transcription {
  std::string text;            // all segment texts joined
  std::vector<Segment> segments;
  std::string language;
  float language_probability = 1.0f;  // of the detected language; 1 when it was given
  // Every language's probability (code, probability), most likely first, from the window that
  // decided the detection; empty when the language was given (or the model is English-only).
  std::vector<std::pair<std::string, float>> all_language_probs;
  double duration = 0.0;       // seconds of input audio
};

// Model::detect_language's answer (faster-whisper's detect_language).
struct LanguageDetection {
  std::string language;        // code, e.g. "fr"
  float probability = 0.0f;
  std::vector<std::pair<std::string, float>> all_language_probs;  // most likely first
};

}  // namespace speechcore
