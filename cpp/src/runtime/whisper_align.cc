#include "runtime/whisper_align.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/status.h"

namespace speechcore::runtime {

std::vector<std::pair<int, int>> alignment_heads(const models::whisper::WhisperConfig& config) {
  if (!config.alignment_heads.empty()) return config.alignment_heads;
  std::vector<std::pair<int, int>> heads;
  for (int l = config.decoder_layers / 2; l < config.decoder_layers; ++l)
    for (int h = 0; h < config.decoder_heads; ++h) heads.emplace_back(l, h);
  return heads;
}

std::vector<std::pair<int, int>> negative_dtw(const float* x, int n, int m) {
  constexpr float inf = std::numeric_limits<float>::infinity();
  const size_t cols = static_cast<size_t>(m) + 1;
  std::vector<float> cost((static_cast<size_t>(n) + 1) * cols, inf);
  std::vector<signed char> trace((static_cast<size_t>(n) + 1) * cols, -1);
  cost[0] = 0.0f;
  // Column by column, as CTranslate2 (ties go to the later choices: left, then up).
  for (int j = 1; j <= m; ++j) {
    for (int i = 1; i <= n; ++i) {
      const float c0 = cost[(i - 1) * cols + (j - 1)];
      const float c1 = cost[(i - 1) * cols + j];
      const float c2 = cost[i * cols + (j - 1)];
      float c;
      signed char t;
      if (c0 < c1 && c0 < c2) {
        c = c0, t = 0;
      } else if (c1 < c0 && c1 < c2) {
        c = c1, t = 1;
      } else {
        c = c2, t = 2;
      }
      cost[i * cols + j] = -x[static_cast<size_t>(i - 1) * m + (j - 1)] + c;
      trace[i * cols + j] = t;
    }
  }
  for (int k = 0; k <= m; ++k) trace[k] = 2;
  for (int k = 0; k <= n; ++k) trace[k * cols] = 1;
  std::vector<std::pair<int, int>> path;
  int i = n, j = m;
  while (i > 0 || j > 0) {
    path.emplace_back(i - 1, j - 1);
    const signed char t = trace[i * cols + j];
    if (t == 0) {
      --i, --j;
    } else if (t == 1) {
      --i;
    } else {
      --j;
    }
  }
  std::reverse(path.begin(), path.end());
  return path;
}

std::vector<std::pair<int, int>> alignment_path(std::vector<float> scores, int heads, int rows, int frames_total,
                                                int frames, int rows_begin, int rows_end, int median_filter_width) {
  SC_ASSERT(frames >= 1 && frames <= frames_total && rows_begin >= 0 && rows_begin < rows_end && rows_end <= rows);
  const size_t plane = static_cast<size_t>(rows) * frames;
  // Softmax of every row over the content frames (the padding frames are dropped).
  std::vector<float> w(static_cast<size_t>(heads) * plane);
  for (int h = 0; h < heads; ++h) {
    for (int r = 0; r < rows; ++r) {
      const float* s = scores.data() + (static_cast<size_t>(h) * rows + r) * frames_total;
      float* o = w.data() + h * plane + static_cast<size_t>(r) * frames;
      float mx = -std::numeric_limits<float>::infinity();
      for (int f = 0; f < frames; ++f) mx = std::max(mx, s[f]);
      double sum = 0.0;
      for (int f = 0; f < frames; ++f) sum += (o[f] = std::exp(s[f] - mx));
      const float inv = static_cast<float>(1.0 / sum);
      for (int f = 0; f < frames; ++f) o[f] *= inv;
    }
  }
  std::vector<float>().swap(scores);
  // Standardize every (head, frame) column over the token rows (population variance, no epsilon).
  for (int h = 0; h < heads; ++h) {
    float* base = w.data() + h * plane;
    for (int f = 0; f < frames; ++f) {
      double mean = 0.0, var = 0.0;
      for (int r = 0; r < rows; ++r) mean += base[static_cast<size_t>(r) * frames + f];
      mean /= rows;
      for (int r = 0; r < rows; ++r) {
        const double dv = base[static_cast<size_t>(r) * frames + f] - mean;
        var += dv * dv;
      }
      var /= rows;
      const double inv = 1.0 / std::sqrt(var);
      for (int r = 0; r < rows; ++r) {
        float& v = base[static_cast<size_t>(r) * frames + f];
        v = static_cast<float>((v - mean) * inv);
      }
    }
  }
  // Median filter over the frames (reflected at the edges; a row no longer than half the width
  // is left as is, as CTranslate2), then the mean over the heads of the matrix rows.
  const int half = median_filter_width / 2;
  const int n = rows_end - rows_begin;
  std::vector<float> matrix(static_cast<size_t>(n) * frames, 0.0f);
  std::vector<float> window(static_cast<size_t>(median_filter_width));
  std::vector<float> filtered(static_cast<size_t>(frames));
  for (int h = 0; h < heads; ++h) {
    for (int r = rows_begin; r < rows_end; ++r) {
      const float* in = w.data() + h * plane + static_cast<size_t>(r) * frames;
      if (frames <= half) {
        std::copy(in, in + frames, filtered.begin());
      } else {
        for (int j = 0; j < frames; ++j) {
          for (int k = -half; k <= half; ++k) {
            int read = std::abs(j + k);
            if (read >= frames) read = frames - (read - frames) - 2;
            window[k + half] = in[read];
          }
          std::nth_element(window.begin(), window.begin() + half, window.end());
          filtered[j] = window[half];
        }
      }
      float* out = matrix.data() + static_cast<size_t>(r - rows_begin) * frames;
      for (int j = 0; j < frames; ++j) out[j] += filtered[j];
    }
  }
  const float inv_heads = 1.0f / static_cast<float>(heads);
  for (float& v : matrix) v *= inv_heads;
  return negative_dtw(matrix.data(), n, frames);
}

AlignInput alignment_input(const AlignRequest& request, const WhisperSpecialTokens& special,
                           const models::whisper::WhisperConfig& c) {
  SC_CHECK(request.num_frames >= 0 && request.num_frames <= 2 * c.n_audio_ctx, ErrorCode::kInvalidArgument,
           "align: num_frames must be 0 to ", 2 * c.n_audio_ctx, ", got ", request.num_frames);
  for (int t : request.text_tokens)
    SC_CHECK(t >= 0 && t < special.eot, ErrorCode::kInvalidArgument, "align: token ", t, " is not a text token");
  AlignInput in;
  in.tokens = request.sot_sequence;
  in.sot_length = static_cast<int>(in.tokens.size());
  in.text_length = static_cast<int>(request.text_tokens.size());
  if (in.text_length == 0) return in;
  in.tokens.push_back(special.no_timestamps);
  in.tokens.insert(in.tokens.end(), request.text_tokens.begin(), request.text_tokens.end());
  in.tokens.push_back(special.eot);
  SC_CHECK(static_cast<int>(in.tokens.size()) <= c.n_text_ctx, ErrorCode::kInvalidArgument, "align: ",
           in.tokens.size(), " tokens exceed the model's ", c.n_text_ctx, " positions");
  for (int t = 0; t < in.text_length; ++t) in.logit_rows.push_back(in.sot_length + t);
  return in;
}

Alignment alignment_result(const AlignRequest& request, const WhisperSpecialTokens& special,
                           const models::whisper::WhisperConfig& c, const AlignInput& in, const float* logits,
                           std::vector<float> scores, int heads) {
  Alignment out;
  // Probabilities of the text tokens, softmax over the text vocabulary (ids below end-of-text).
  out.text_token_probs.resize(static_cast<size_t>(in.text_length));
  for (int t = 0; t < in.text_length; ++t) {
    const float* l = logits + static_cast<size_t>(t) * c.vocab_size;
    float mx = -std::numeric_limits<float>::infinity();
    for (int v = 0; v < special.eot; ++v) mx = std::max(mx, l[v]);
    double sum = 0.0;  // 50k terms: a float running sum would drift
    for (int v = 0; v < special.eot; ++v) sum += std::exp(static_cast<double>(l[v]) - mx);
    out.text_token_probs[t] = static_cast<float>(std::exp(static_cast<double>(l[request.text_tokens[t]]) - mx) / sum);
  }
  const int frames = static_cast<int>(request.num_frames / 2);  // the encoder's stride
  if (frames == 0) return out;
  out.path = alignment_path(std::move(scores), heads, static_cast<int>(in.tokens.size()), c.n_audio_ctx, frames,
                            in.sot_length, in.sot_length + in.text_length + 1);
  return out;
}

Alignment align_window_cpu(const models::whisper::WhisperModel& model, const AlignRequest& request,
                           const WhisperSpecialTokens& special) {
  const models::whisper::WhisperConfig& c = model.config();
  const AlignInput in = alignment_input(request, special, c);
  if (in.text_length == 0) return {};
  models::whisper::CrossKV encoded;
  const models::whisper::CrossKV* cross = request.encoder_output;
  if (cross == nullptr) {
    SC_CHECK(request.mel != nullptr, ErrorCode::kInvalidArgument, "align: no features and no encoder output");
    encoded = model.encode(request.mel);
    cross = &encoded;
  }
  models::whisper::CrossAttentionCapture capture;
  capture.heads = alignment_heads(c);
  std::vector<float> logits(static_cast<size_t>(in.text_length) * c.vocab_size);
  models::whisper::DecoderState state = model.new_state();
  model.decode(state, *cross, in.tokens.data(), static_cast<int>(in.tokens.size()), in.logit_rows, logits.data(),
               &capture);
  return alignment_result(request, special, c, in, logits.data(), std::move(capture.scores),
                          static_cast<int>(capture.heads.size()));
}

}  // namespace speechcore::runtime
