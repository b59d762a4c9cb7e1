// Audio helpers for native programs: read a WAV file into float PCM.
#pragma once

#include <string>
#include <vector>

namespace speechcore {

struct AudioBuffer {
  std::vector<float> samples;  // interleaved, in [-1, 1]
  int sample_rate = 0;
  int channels = 0;
  size_t num_frames() const { return channels > 0 ? samples.size() / channels : 0; }
};

// Reads a RIFF/WAVE file: PCM 8/16/24/32-bit integer or 32/64-bit float, any rate, any
// channel count. Throws speechcore::Error (kNotFound, kInvalidAudio) on a bad file.
AudioBuffer read_wav(const std::string& path);

}  // namespace speechcore
