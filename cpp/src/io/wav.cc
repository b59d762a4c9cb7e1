// speechcore::read_wav: RIFF/WAVE reader (PCM 8/16/24/32-bit integer, 32/64-bit float,
// WAVE_FORMAT_EXTENSIBLE), streaming the data chunk in blocks.
//
// Size rules: a data chunk whose size field is 0 or 0xFFFFFFFF (written by streaming
// encoders that never went back to patch the header) is read to the end of the file; any
// other size that runs past the end of the file is an error ("truncated"). A trailing
// partial frame (fewer bytes than one block) is ignored, as libsndfile does. Chunks after
// the data chunk are not read.
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include "core/status.h"
#include "speechcore/audio.h"

namespace speechcore {

namespace {

constexpr uint16_t kFormatPcm = 1;
constexpr uint16_t kFormatFloat = 3;
constexpr uint16_t kFormatExtensible = 0xFFFE;
constexpr uint32_t kStreamingSize = 0xFFFFFFFFu;

uint16_t le16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
uint32_t le32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
         (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24);
}

const char* format_name(uint16_t tag) {
  switch (tag) {
    case 2: return " (MS ADPCM)";
    case 6: return " (A-law)";
    case 7: return " (mu-law)";
    case 0x11: return " (IMA ADPCM)";
    case 0x55: return " (MP3)";
    default: return "";
  }
}

class InputFile {
 public:
  InputFile(FILE* f) : f_(f) {}
  ~InputFile() {
    if (f_ != nullptr) std::fclose(f_);
  }
  InputFile(const InputFile&) = delete;
  InputFile& operator=(const InputFile&) = delete;
  FILE* get() const { return f_; }

 private:
  FILE* f_;
};

struct Format {
  bool is_float = false;
  int channels = 0;
  int sample_rate = 0;
  int bytes_per_sample = 0;  // container size of one sample
  int block_align = 0;       // bytes per frame
};

Format parse_fmt(const std::string& path, const uint8_t* p, uint32_t size) {
  SC_CHECK(size >= 16, ErrorCode::kInvalidAudio, path, ": WAV fmt chunk is too short (", size,
           " bytes, need 16)");
  uint16_t tag = le16(p);
  const int channels = le16(p + 2);
  const uint32_t rate = le32(p + 4);
  const int block_align = le16(p + 12);
  const int bits = le16(p + 14);
  if (tag == kFormatExtensible) {
    SC_CHECK(size >= 40, ErrorCode::kInvalidAudio, path,
             ": WAVE_FORMAT_EXTENSIBLE fmt chunk is too short (", size, " bytes, need 40)");
    // SubFormat GUID: the format tag in its first two bytes, then a fixed tail.
    static const uint8_t kGuidTail[14] = {0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x80,
                                          0x00, 0x00, 0xAA, 0x00, 0x38, 0x9B, 0x71};
    SC_CHECK(std::memcmp(p + 26, kGuidTail, sizeof(kGuidTail)) == 0, ErrorCode::kInvalidAudio,
             path, ": unsupported WAVE_FORMAT_EXTENSIBLE sub-format (not a standard KSDATAFORMAT "
             "GUID)");
    tag = le16(p + 24);
  }
  SC_CHECK(tag == kFormatPcm || tag == kFormatFloat, ErrorCode::kInvalidAudio, path,
           ": unsupported WAV format tag ", tag, format_name(tag),
           "; only PCM integer and IEEE float are supported");
  SC_CHECK(channels >= 1, ErrorCode::kInvalidAudio, path, ": WAV header has 0 channels");
  SC_CHECK(rate >= 1 && rate <= 0x7FFFFFFFu, ErrorCode::kInvalidAudio, path,
           ": WAV header has an invalid sample rate (", rate, ")");
  SC_CHECK(block_align >= channels && block_align % channels == 0, ErrorCode::kInvalidAudio, path,
           ": WAV header has block align ", block_align, " for ", channels, " channels");
  Format f;
  f.is_float = tag == kFormatFloat;
  f.channels = channels;
  f.sample_rate = static_cast<int>(rate);
  f.block_align = block_align;
  f.bytes_per_sample = block_align / channels;
  const bool ok_size = f.is_float ? (f.bytes_per_sample == 4 || f.bytes_per_sample == 8)
                                  : (f.bytes_per_sample >= 1 && f.bytes_per_sample <= 4);
  SC_CHECK(ok_size && bits >= 1 && bits <= 8 * f.bytes_per_sample, ErrorCode::kInvalidAudio, path,
           ": unsupported WAV sample format: ", f.is_float ? "float" : "PCM", " with ", bits,
           " bits in ", f.bytes_per_sample, "-byte samples");
  return f;
}

// Integer samples are left-justified in their container, so the container's full scale
// maps to [-1, 1) whatever the valid bit count (libsndfile's convention).
void convert(const Format& f, const uint8_t* src, size_t count, float* dst) {
  switch (f.is_float ? -f.bytes_per_sample : f.bytes_per_sample) {
    case 1:
      for (size_t i = 0; i < count; ++i) dst[i] = (static_cast<int>(src[i]) - 128) / 128.0f;
      return;
    case 2:
      for (size_t i = 0; i < count; ++i)
        dst[i] = static_cast<int16_t>(le16(src + 2 * i)) / 32768.0f;
      return;
    case 3:
      for (size_t i = 0; i < count; ++i) {
        const uint8_t* p = src + 3 * i;
        const uint32_t u = (static_cast<uint32_t>(p[0]) << 8) |
                           (static_cast<uint32_t>(p[1]) << 16) |
                           (static_cast<uint32_t>(p[2]) << 24);
        dst[i] = static_cast<float>(static_cast<int32_t>(u) / 2147483648.0);
      }
      return;
    case 4:
      for (size_t i = 0; i < count; ++i)
        dst[i] = static_cast<float>(static_cast<int32_t>(le32(src + 4 * i)) / 2147483648.0);
      return;
    case -4:
      for (size_t i = 0; i < count; ++i) {
        const uint32_t u = le32(src + 4 * i);
        std::memcpy(&dst[i], &u, 4);
      }
      return;
    case -8:
      for (size_t i = 0; i < count; ++i) {
        const uint64_t u = static_cast<uint64_t>(le32(src + 8 * i)) |
                           (static_cast<uint64_t>(le32(src + 8 * i + 4)) << 32);
        double d;
        std::memcpy(&d, &u, 8);
        dst[i] = static_cast<float>(d);
      }
      return;
  }
}

}  // namespace

AudioBuffer read_wav(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    const int err = errno;
    if (err == ENOENT || err == ENOTDIR) {
      throw_error(ErrorCode::kNotFound, "audio file not found: ", path);
    }
    throw_error(ErrorCode::kInvalidAudio, "cannot access audio file ", path, ": ",
                std::strerror(err));
  }
  SC_CHECK(!S_ISDIR(st.st_mode), ErrorCode::kInvalidAudio, path,
           " is a directory, not a WAV file");
  InputFile file(std::fopen(path.c_str(), "rb"));
  if (file.get() == nullptr) {
    throw_error(ErrorCode::kInvalidAudio, "cannot open audio file ", path, ": ",
                std::strerror(errno));
  }
  FILE* f = file.get();
  const bool sized = S_ISREG(st.st_mode);
  const int64_t file_size = static_cast<int64_t>(st.st_size);

  uint8_t header[12];
  const size_t got = std::fread(header, 1, sizeof(header), f);
  SC_CHECK(got > 0, ErrorCode::kInvalidAudio, path, ": file is empty");
  SC_CHECK(got == sizeof(header), ErrorCode::kInvalidAudio, path, ": not a WAV file (only ", got,
           " bytes)");
  SC_CHECK(std::memcmp(header, "RF64", 4) != 0, ErrorCode::kInvalidAudio, path,
           ": RF64 (64-bit WAV) is not supported");
  SC_CHECK(std::memcmp(header, "RIFX", 4) != 0, ErrorCode::kInvalidAudio, path,
           ": big-endian RIFX WAV is not supported");
  SC_CHECK(std::memcmp(header, "RIFF", 4) == 0 && std::memcmp(header + 8, "WAVE", 4) == 0,
           ErrorCode::kInvalidAudio, path, ": not a WAV file (no RIFF/WAVE header)");

  int64_t pos = 12;
  Format format;
  bool have_format = false;
  while (true) {
    uint8_t chunk[8];
    const size_t n = std::fread(chunk, 1, sizeof(chunk), f);
    SC_CHECK(n == sizeof(chunk), ErrorCode::kInvalidAudio, path,
             n == 0 ? ": WAV file has no data chunk"
                    : ": WAV file is truncated inside a chunk header");
    pos += 8;
    const std::string id(reinterpret_cast<const char*>(chunk), 4);
    const uint32_t size = le32(chunk + 4);

    if (id == "fmt ") {
      SC_CHECK(size <= 4096, ErrorCode::kInvalidAudio, path,
               ": WAV fmt chunk is implausibly large (", size, " bytes)");
      std::vector<uint8_t> body(size + (size & 1));
      const size_t r = std::fread(body.data(), 1, body.size(), f);
      SC_CHECK(r >= size, ErrorCode::kInvalidAudio, path,
               ": WAV file is truncated in the fmt chunk (", r, " of ", size, " bytes)");
      format = parse_fmt(path, body.data(), size);
      have_format = true;
      pos += static_cast<int64_t>(body.size());
      continue;
    }
    if (id != "data") {  // LIST, fact, cue, ...: skip (chunks are padded to an even size)
      const int64_t skip = static_cast<int64_t>(size) + (size & 1);
      SC_CHECK(!sized || pos + static_cast<int64_t>(size) <= file_size, ErrorCode::kInvalidAudio,
               path, ": WAV file is truncated: chunk '", id, "' declares ", size,
               " bytes but the file ends first (and no data chunk was found)");
      SC_CHECK(std::fseek(f, static_cast<long>(skip), SEEK_CUR) == 0, ErrorCode::kInvalidAudio,
               path, ": cannot seek past chunk '", id, "'");
      pos += skip;
      continue;
    }

    SC_CHECK(have_format, ErrorCode::kInvalidAudio, path,
             ": WAV data chunk comes before the fmt chunk");
    const bool streaming = size == 0 || size == kStreamingSize;
    int64_t bytes = size;
    if (sized) {
      const int64_t remaining = std::max<int64_t>(0, file_size - pos);
      if (streaming) {
        bytes = remaining;
      } else {
        SC_CHECK(bytes <= remaining, ErrorCode::kInvalidAudio, path,
                 ": WAV file is truncated: the data chunk declares ", bytes, " bytes but only ",
                 remaining, " are present");
      }
    } else if (streaming) {
      bytes = INT64_MAX;  // a pipe or device: read until end of file
    }

    AudioBuffer out;
    out.sample_rate = format.sample_rate;
    out.channels = format.channels;
    const int64_t frames = bytes / format.block_align;
    if (sized || !streaming) out.samples.reserve(static_cast<size_t>(frames * format.channels));
    const size_t block_frames = std::max<size_t>(1, (1u << 20) / format.block_align);
    std::vector<uint8_t> block(block_frames * format.block_align);
    int64_t left = frames;
    while (left > 0) {
      const size_t want = static_cast<size_t>(std::min<int64_t>(left, block_frames));
      const size_t r = std::fread(block.data(), format.block_align, want, f);
      if (r > 0) {
        const size_t count = r * format.channels;
        const size_t old = out.samples.size();
        out.samples.resize(old + count);
        convert(format, block.data(), count, out.samples.data() + old);
        left -= static_cast<int64_t>(r);
      }
      if (r < want) {
        SC_CHECK(streaming && !std::ferror(f), ErrorCode::kInvalidAudio, path,
                 ": read error or unexpected end of file in the WAV data chunk after ",
                 out.samples.size() / format.channels, " frames");
        break;
      }
    }
    return out;
  }
}

}  // namespace speechcore
