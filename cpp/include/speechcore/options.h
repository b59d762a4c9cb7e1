// Options for loading a model and for transcribing audio. Every field documents its
// meaning, its default and how to turn it off. Factories: default_load_options(),
// default_transcribe_options().
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "speechcore/vad.h"

namespace speechcore {

struct LoadOptions {
  // Where the model runs: "cpu", "cuda", or "auto" (CUDA when this build has it and a GPU
  // is present, else CPU). Default "auto".
  std::string device = "auto";
  // Arithmetic precision: "auto", "float32", "float16", "bfloat16". The CPU backend computes
  // in float32 (half-precision weights are converted at load); "auto" picks float32 on CPU.
  std::string compute_type = "auto";
  // Worker threads for CPU kernels (BLAS and the library's own pool). 0 = one per hardware
  // thread. Default 0.
  int threads = 0;
};

struct TranscribeOptions {
  // Spoken language code ("en", "fr", ...). Empty = "en" for English-only checkpoints; on a
  // multilingual checkpoint, empty detects it (faster-whisper's language=None): see
  // language_detection_segments / _threshold. Default "".
  std::string language;
  // Language detection (multilingual checkpoints, language empty), as faster-whisper 1.2.1: the
  // first language_detection_segments 30 s windows of features from the first clip's start are
  // tried in turn, each scored by the softmax of the language tokens' logits after
  // <|startoftranscript|>; the first window whose top probability exceeds
  // language_detection_threshold decides; when none does, the language that came first in the
  // most windows wins (with its best probability). Defaults 1 (must be >= 1) and 0.5.
  int language_detection_segments = 1;
  float language_detection_threshold = 0.5f;
  // Detect the language of every 30 s window (from its encoder output, as the language
  // detection above) and decode the window in it: faster-whisper's multilingual=True, for audio
  // that switches languages. Ignored by English-only checkpoints (as faster-whisper, which warns).
  // The result's language stays the one given or detected first. CPU backend only for now
  // (kUnsupported on CUDA). Default false.
  bool multilingual = false;
  // Seconds of audio per window (faster-whisper's chunk_length): each window takes at most this
  // much audio, zero-padded to the model's 30 s input, and language detection reads windows of
  // this length; with chunked, it is also the longest merged speech chunk. 0 = the model's
  // window (30 s); otherwise 1..30. Default 0.
  int chunk_length = 0;
  // "transcribe" or "translate" (to English; multilingual checkpoints only). Default "transcribe".
  std::string task = "transcribe";
  // Beam width of the beam search used at temperature 0; 1 = greedy decoding. Default 5
  // (faster-whisper's).
  int beam_size = 5;
  // Beam search stops once round(beam_size * patience) hypotheses have finished. Default 1.0
  // (must be > 0).
  float patience = 1.0f;
  // Hypotheses are ranked by sum(log-probs) / length^length_penalty (beam search, and the
  // best_of samples). Default 1.0; 0 ranks by the plain sum (and lets the beam search stop as
  // soon as its best beam has finished).
  float length_penalty = 1.0f;
  // Logits of tokens already generated in the window are divided by this (multiplied when
  // negative). Default 1.0 (off); must be > 0.
  float repetition_penalty = 1.0f;
  // Forbids repeating any n-gram of this size within a window. Default 0 (off).
  int no_repeat_ngram_size = 0;
  // Temperatures tried in turn for each 30 s window: 0 decodes deterministically (greedy or
  // beam search), > 0 samples (best_of candidates). The next one is tried when a window fails
  // the compression-ratio or log-probability check (and is not silence); in chunked mode only
  // the first is used (no fallback, as faster-whisper's BatchedInferencePipeline). Default
  // {0.0, 0.2, 0.4, 0.6, 0.8, 1.0} (faster-whisper's); {0.0} decodes without fallback.
  std::vector<float> temperature = {0.0f, 0.2f, 0.4f, 0.6f, 0.8f, 1.0f};
  // Candidates sampled at a temperature > 0; the one with the best length-normalized score is
  // kept. Default 5.
  int best_of = 5;
  // Seed of the sampling random generator. Each window attempt draws from its own stream
  // (derived from the seed, the window's position and the temperature index), so results are
  // reproducible and independent of batching. Default 0.
  uint64_t seed = 0;
  // Feed the previous window's text as a prompt to the next 30 s window. Default true.
  bool condition_on_previous_text = true;
  // Decode without timestamp tokens (one segment per 30 s window). Default false.
  bool without_timestamps = false;
  // Latest allowed first timestamp, in seconds; negative disables the rule. Default 1.0.
  float max_initial_timestamp = 1.0f;
  // Suppress blank and end-of-text as the first sampled token. Default true; false disables.
  bool suppress_blank = true;
  // Token ids never sampled; -1 expands to the checkpoint's default list. Default {-1};
  // empty disables.
  std::vector<int> suppress_tokens = {-1};
  // Text given as a prompt before the first window (as if it had been said before). Default "".
  std::string initial_prompt;
  // Text forced at the start of the first window's output (faster-whisper's prefix): the window
  // decodes on from " " + prefix (after <|0.00|> when timestamps are on). Default "" (none).
  std::string prefix;
  // Hint phrases given to every window as previous context (faster-whisper's hotwords: after
  // <|startofprev|>, before the previous text); ignored when prefix is set. Default "" (none).
  std::string hotwords;
  // Parts of the audio to transcribe (faster-whisper's clip_timestamps): start, end, start, end,
  // ... in seconds; an odd count runs the last clip to the end of the audio. Each clip is
  // decoded with the long-form algorithm (windows never cross its end), the previous-text
  // prompt carrying over between clips. Values must be finite and >= 0, each end > its start.
  // Default {} (the whole audio).
  std::vector<double> clip_timestamps;
  // Upper bound on tokens generated per 30 s window; 0 = the model's limit (448 minus the
  // prompt). Default 0.
  int max_new_tokens = 0;
  // A window whose text compresses (zlib) better than this ratio counts as failed (too
  // repetitive) and is decoded again at the next temperature. Default 2.4; +inf disables
  // (None in faster-whisper).
  float compression_ratio_threshold = 2.4f;
  // A window whose average log-probability is below this counts as failed. Default -1.0; -inf
  // disables (None in faster-whisper).
  float log_prob_threshold = -1.0f;
  // A window is skipped as silence when its no-speech probability exceeds this and its average
  // log-probability is not above log_prob_threshold (when that is disabled, the no-speech
  // probability alone decides); such a window is also never a failed one. Default 0.6; +inf
  // disables (None in faster-whisper).
  float no_speech_threshold = 0.6f;
  // The prompt is dropped for the next window when the window was decoded at a temperature
  // above this. Default 0.5; >= 1 disables.
  float prompt_reset_on_temperature = 0.5f;

  // ---- Word-level timestamps (faster-whisper's word_timestamps) ----
  // Align each window's text to the audio with the cross-attention of the checkpoint's
  // alignment heads and give every segment its words (Segment::words; start, end, probability).
  // Segment boundaries and the next window's start then follow the words, as in faster-whisper.
  // CPU backend only (kUnsupported elsewhere). Default false.
  bool word_timestamps = false;
  // With word_timestamps: punctuation merged into the following word (prepend) or into the
  // previous word (append). Defaults are faster-whisper's.
  std::string prepend_punctuations = "\"'\u201c\u00bf([{-";
  std::string append_punctuations = "\"'.\u3002,\uff0c!\uff01?\uff1f:\uff1a\u201d)]}\u3001";
  // With word_timestamps: skip silent periods longer than this many seconds around a possible
  // hallucination (faster-whisper's algorithm). Default: unset (off; None in faster-whisper).
  std::optional<float> hallucination_silence_threshold;

  // ---- Voice activity detection (faster-whisper's vad_filter / BatchedInferencePipeline) ----
  // Transcribe only the speech Silero VAD finds (faster-whisper's vad_filter): the speech chunks
  // are concatenated, transcribed as one recording with the options above, and segment times
  // are mapped back to the input's timeline. Audio without speech gives no segments (nothing is
  // decoded). Default false.
  bool vad_filter = false;
  // Batched VAD-chunked mode (faster-whisper's BatchedInferencePipeline): the speech chunks are
  // merged into groups of at most 30 s, each group is decoded as an independent window (no
  // previous-text prompt; initial_prompt, if any, prompts every group), all groups at once (the
  // Engine batches them, up to 32 in flight per recording), and the segments come back in time
  // order with input-timeline times. Implies the VAD (vad_filter is ignored). Use it with
  // without_timestamps = true (faster-whisper's default in that mode: one segment per group).
  // Default false.
  bool chunked = false;
  // VAD options; unset = faster-whisper's defaults for the mode: vad::VadOptions{} for
  // vad_filter, and min_silence_duration_ms = 160, max_speech_duration_s = 30 for chunked. In
  // chunked mode max_speech_duration_s is capped at 30 (a group must fit one window).
  std::optional<vad::VadOptions> vad_parameters;
  // Path of the Silero VAD weights (silero_vad_16k.safetensors, from the silero-vad package;
  // see speechcore/vad.h). Required with vad_filter or chunked: empty is kInvalidArgument, a
  // missing file kNotFound, a wrong file kInvalidModel. Loaded once per path and process.
  std::string vad_model_path;
};

inline LoadOptions default_load_options() { return LoadOptions{}; }
inline TranscribeOptions default_transcribe_options() { return TranscribeOptions{}; }

}  // namespace speechcore
