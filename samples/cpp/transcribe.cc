// transcribe MODEL_DIR AUDIO.wav [LANGUAGE]
// Prints "[start --> end] text" per segment, then the whole transcript.
#include <speechcore/speechcore.h>

#include <cstdio>

int main(int argc, char** argv) {
  if (argc < 3 || argc > 4) {
    std::fprintf(stderr, "usage: %s MODEL_DIR AUDIO.wav [LANGUAGE]\n", argv[0]);
    return 2;
  }
  try {
    const speechcore::AudioBuffer audio = speechcore::read_wav(argv[2]);
    speechcore::LoadOptions load = speechcore::default_load_options();
    const auto model = speechcore::Model::load(argv[1], load);
    speechcore::TranscribeOptions options = speechcore::default_transcribe_options();
    if (argc == 4) options.language = argv[3];
    const speechcore::Transcription result =
        model->transcribe(audio.samples.data(), audio.num_frames(), audio.sample_rate, audio.channels, options);
    for (const auto& s : result.segments)
      std::fprintf(stderr, "[%7.2f --> %7.2f]%s\n", s.start, s.end, s.text.c_str());
    std::printf("%s\n", result.text.c_str());
    return 0;
  } catch (const speechcore::Error& e) {
    std::fprintf(stderr, "error (%s): %s\n", speechcore::error_code_name(e.code()), e.what());
    return 1;
  }
}
