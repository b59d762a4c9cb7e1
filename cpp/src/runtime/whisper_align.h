// Word alignment of a window's text on the CPU backend (WindowRunner::align): the decoder runs
// once over sot_sequence + no-timestamps + text + end-of-text with the alignment heads'
// cross-attention scores captured, and those go through CTranslate2's post-processing
// (softmax over the content frames, standardization over the tokens, median filter over the
// frames, mean over the heads) and a DTW on the negated matrix.
#pragma once

#include <utility>
#include <vector>

#include "runtime/whisper_decoding.h"

namespace speechcore::runtime {

// The heads whose cross-attention follows the timing: the checkpoint's alignment_heads, or
// every head of the second half of the decoder layers when it lists none (openai-whisper's
// default).
std::vector<std::pair<int, int>> alignment_heads(const models::whisper::WhisperConfig& config);

// The decoder input of an alignment: sot_sequence + no-timestamps + text + end-of-text, the
// positions predicting each text token (logit_rows), checked against the model's sizes
// (kInvalidArgument). text_length 0: nothing to align.
struct AlignInput {
  std::vector<int> tokens;
  std::vector<int> logit_rows;
  int sot_length = 0, text_length = 0;
};
AlignInput alignment_input(const AlignRequest& request, const WhisperSpecialTokens& special,
                           const models::whisper::WhisperConfig& config);
// A backend's alignment from the decoder's float32 logits at in.logit_rows ([text_length, vocab])
// and the alignment heads' raw cross-attention scores ([heads, tokens, n_audio_ctx]): text
// token probabilities, then alignment_path.
Alignment alignment_result(const AlignRequest& request, const WhisperSpecialTokens& special,
                           const models::whisper::WhisperConfig& config, const AlignInput& in, const float* logits,
                           std::vector<float> scores, int heads);

// align() on the CPU model (encodes request.mel when request.encoder_output is null).
Alignment align_window_cpu(const models::whisper::WhisperModel& model, const AlignRequest& request,
                           const WhisperSpecialTokens& special);

// The post-processing and DTW of one window, exposed for tests.
// scores: [heads, rows, frames_total] raw scores (q.k / sqrt(head_dim)); frames: the content
// frames used (<= frames_total); rows_begin/rows_end: the rows of the DTW matrix.
std::vector<std::pair<int, int>> alignment_path(std::vector<float> scores, int heads, int rows, int frames_total,
                                                int frames, int rows_begin, int rows_end,
                                                int median_filter_width = 7);

// DTW over -x (x: [n, m] row-major) as CTranslate2's negative_dtw: path of (row, column) pairs
// from (0, 0) to (n - 1, m - 1).
std::vector<std::pair<int, int>> negative_dtw(const float* x, int n, int m);

}  // namespace speechcore::runtime
