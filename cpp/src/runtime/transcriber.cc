#include "runtime/transcriber.h"

#include "runtime/longform.h"
#include "runtime/vad_filter.h"

#include <zlib.h>

#include <cmath>
#include <cstring>
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

Transcription WhisperTranscriber::transcribe(const std::vector<float>& samples, const TranscribeOptions& options,
                                             const std::function<void(double, double)>& progress) const {
  FilteredRecording recording(*this, options, samples);  // checks every option first
  recording.begin();  // the VAD, with vad_filter / chunked
  auto report = [&] {
    if (!progress) return;
    const auto [done, total] = recording.progress();
    progress(done, total);
  };
  report();
  std::vector<WindowRequest> requests;
  while (!recording.done()) {
    // One window at a time; chunked mode's independent windows go together as one batch.
    requests.clear();
    do requests.push_back(recording.next_request());
    while (recording.chunked() && recording.can_issue());
    const std::vector<WindowResult> results = runner_->run_batch(requests, special_);
    SC_CHECK(results.size() == requests.size(), ErrorCode::kInternal, "run_batch returned ", results.size(),
             " results for ", requests.size(), " windows");
    for (const WindowResult& r : results) recording.consume(r);
    report();
  }
  return recording.take_result();
}

void WhisperTranscriber::check_options(const TranscribeOptions& options) const {
  make_plan(*tokenizer_, *runner_, options);
  check_vad_options(options);
}

}  // namespace speechcore::runtime
