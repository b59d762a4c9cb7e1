// Options for loading a model and for transcribing audio. Every field documents its
// meaning, its default and how to turn it off. Factories: default_load_options(),
// default_transcribe_options().
#pragma once

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
  // Spoken language code ("en", "fr", ...). Empty = "en" for English-only checkpoints; a
  // multilingual checkpoint needs it given (language detection comes later). Default "".
  std::string language;
  // "transcribe" or "translate" (to English; multilingual checkpoints only). Default "transcribe".
  std::string task = "transcribe";
  // Beam width. Only 1 (greedy) is implemented in this release. Default 1.
  int beam_size = 1;
  // Sampling temperature. Only 0 (greedy) is implemented in this release. Default 0.
  float temperature = 0.0f;
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
  // Upper bound on tokens generated per 30 s window; 0 = the model's limit (448 minus the
  // prompt). Default 0.
  int max_new_tokens = 0;
  // A window whose text compresses (zlib) better than this ratio counts as a failed decode
  // (only used to pick among fallback temperatures). Default 2.4; <= 0 disables.
  float compression_ratio_threshold = 2.4f;
  // A window with average log-probability below this counts as failed. Default -1.0.
  float log_prob_threshold = -1.0f;
  // A window is skipped as silence when its no-speech probability exceeds this and its average
  // log-probability is below log_prob_threshold. Default 0.6; > 1 disables.
  float no_speech_threshold = 0.6f;
  // The prompt is dropped for the next window when the window was decoded at a temperature
  // above this. Default 0.5; >= 1 disables.
  float prompt_reset_on_temperature = 0.5f;

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
