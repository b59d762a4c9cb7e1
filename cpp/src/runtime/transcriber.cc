#include "runtime/transcriber.h"

#include "runtime/longform.h"

#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>
#include <string>

#include "core/status.h"
#include "io/audio.h"

namespace speechcore::runtime {

float compression_ratio(const std::string& text) {
  if (text.empty()) return 0.0f;
  uLongf bound = compressBound(static_cast<uLong>(text.size()));
  std::vector<Bytef> buf(bound);
  const int rc = compress2(buf.data(), &bound, reinterpret_cast<const Bytef*>(text.data()),
                           static_cast<uLong>(text.size()), Z_DEFAULT_COMPRESSION);
  SC_CHECK(rc == Z_OK, ErrorCode::kInternal, "zlib compress failed (", rc, ")");
  return static_cast<float>(static_cast<double>(text.size()) / static_cast<double>(bound));
}

WhisperTranscriber::WhisperTranscriber(std::unique_ptr<WindowRunner> runner,
                                       std::shared_ptr<const io::Tokenizer> tokenizer)
    : runner_(std::move(runner)), tokenizer_(std::move(tokenizer)) {
  const io::Tokenizer& t = *tokenizer_;
  special_.eot = t.eot();
  special_.sot = t.sot();
  special_.no_timestamps = t.no_timestamps();
  special_.no_speech = t.no_speech();
  special_.timestamp_begin = t.timestamp_begin();
  special_.timestamp_end = runner_->config().vocab_size - 1;
  SC_CHECK(special_.eot >= 0 && special_.sot >= 0 && special_.no_timestamps >= 0 &&
               special_.timestamp_begin < runner_->config().vocab_size,
           ErrorCode::kInvalidModel, "the tokenizer lacks Whisper's special tokens");
}

std::vector<Transcription> WhisperTranscriber::run(const std::vector<const std::vector<float>*>& samples,
                                                   const TranscribeOptions& options, size_t max_batch) const {
  const DecodePlan plan = make_plan(*tokenizer_, *runner_, options);  // checks every option first
  std::vector<Recording> recordings;
  recordings.reserve(samples.size());
  for (const std::vector<float>* s : samples) recordings.emplace_back(plan, *runner_, *tokenizer_, special_, *s);
  std::vector<Transcription> out(samples.size());

  // Each round: the first max_batch unfinished recordings (input order; a recording's
  // features are computed when it first joins a round), one window each, one run_batch call.
  // An error of one recording names it when there are several.
  const auto named = [&](size_t i, auto&& step) {
    try {
      step();
    } catch (const Error& e) {
      if (recordings.size() == 1) throw;
      throw Error(e.code(), "audio item " + std::to_string(i) + ": " + e.what());
    }
  };
  size_t next_new = 0;
  std::vector<size_t> active;
  std::vector<WindowRequest> requests;
  for (;;) {
    active.erase(std::remove_if(active.begin(), active.end(), [&](size_t i) { return recordings[i].done(); }),
                 active.end());
    while (active.size() < max_batch && next_new < recordings.size()) {
      Recording& r = recordings[next_new];
      named(next_new, [&] { r.begin(); });
      if (r.done()) {
        out[next_new] = r.take_result();  // no content frames: nothing to decode
      } else {
        active.push_back(next_new);
      }
      ++next_new;
    }
    if (active.empty()) break;
    requests.clear();
    for (size_t i : active) named(i, [&] { requests.push_back(recordings[i].next_request()); });
    const std::vector<WindowResult> results = runner_->run_batch(requests, special_);
    SC_CHECK(results.size() == requests.size(), ErrorCode::kInternal, "run_batch returned ", results.size(),
             " results for ", requests.size(), " windows");
    for (size_t k = 0; k < active.size(); ++k) {
      Recording& r = recordings[active[k]];
      r.consume(results[k]);
      if (r.done()) out[active[k]] = r.take_result();
    }
  }
  return out;
}

Transcription WhisperTranscriber::transcribe(const std::vector<float>& samples,
                                             const TranscribeOptions& options) const {
  return std::move(run({&samples}, options, 1).front());
}

std::vector<Transcription> WhisperTranscriber::transcribe_batch(const std::vector<std::vector<float>>& samples,
                                                                const TranscribeOptions& options,
                                                                int max_batch) const {
  SC_CHECK(max_batch >= 1, ErrorCode::kInvalidArgument, "max_batch must be >= 1, got ", max_batch);
  std::vector<const std::vector<float>*> refs;
  refs.reserve(samples.size());
  for (const std::vector<float>& s : samples) refs.push_back(&s);
  return run(refs, options, static_cast<size_t>(max_batch));
}

}  // namespace speechcore::runtime
