// transcribe_many MODEL_DIR AUDIO.wav...
// Transcribes many files at once through speechcore::Engine (continuous batching): every file
// is submitted up front, segments are printed as their windows finish ("file: [start --> end]
// text" on stderr), then each file's transcript in input order on stdout ("file: text").
// A file that cannot be read or transcribed is reported and the others still complete;
// the exit status is 1 if any failed.
#include <speechcore/speechcore.h>

#include <cstdio>
#include <future>
#include <mutex>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s MODEL_DIR AUDIO.wav...\n", argv[0]);
    return 2;
  }
  try {
    const auto model = speechcore::Model::load(argv[1], speechcore::default_load_options());
    speechcore::Engine engine(model);
    std::mutex print;
    std::vector<std::future<speechcore::Transcription>> results(static_cast<size_t>(argc - 2));
    std::vector<std::string> errors(results.size());
    for (int i = 2; i < argc; ++i) {
      const std::string name = argv[i];
      try {
        const speechcore::AudioBuffer audio = speechcore::read_wav(name);
        auto promise = std::make_shared<std::promise<speechcore::Transcription>>();
        results[i - 2] = promise->get_future();
        speechcore::Engine::Callbacks cb;
        cb.on_segment = [&print, name](const speechcore::Segment& s) {
          std::lock_guard<std::mutex> lock(print);
          std::fprintf(stderr, "%s: [%7.2f --> %7.2f]%s\n", name.c_str(), s.start, s.end, s.text.c_str());
        };
        cb.on_done = [promise](speechcore::Transcription&& t) { promise->set_value(std::move(t)); };
        cb.on_error = [promise](const speechcore::Error& e) { promise->set_exception(std::make_exception_ptr(e)); };
        engine.submit(audio.samples.data(), audio.num_frames(), audio.sample_rate, audio.channels,
                      speechcore::default_transcribe_options(), std::move(cb));
      } catch (const speechcore::Error& e) {  // unreadable file: reported, the others go on
        errors[i - 2] = std::string(speechcore::error_code_name(e.code())) + ": " + e.what();
      }
    }
    int failed = 0;
    for (size_t k = 0; k < results.size(); ++k) {
      const char* name = argv[k + 2];
      if (results[k].valid()) {
        try {
          const speechcore::Transcription t = results[k].get();
          std::printf("%s: %s\n", name, t.text.c_str());
          continue;
        } catch (const speechcore::Error& e) {
          errors[k] = std::string(speechcore::error_code_name(e.code())) + ": " + e.what();
        }
      }
      std::fprintf(stderr, "%s: error (%s)\n", name, errors[k].c_str());
      ++failed;
    }
    const speechcore::EngineStats st = engine.stats();
    std::fprintf(stderr, "%llu engine steps, %llu tokens, %.1f tokens/s\n",
                 static_cast<unsigned long long>(st.steps), static_cast<unsigned long long>(st.tokens_generated),
                 st.tokens_per_second);
    return failed ? 1 : 0;
  } catch (const speechcore::Error& e) {
    std::fprintf(stderr, "error (%s): %s\n", speechcore::error_code_name(e.code()), e.what());
    return 1;
  }
}
