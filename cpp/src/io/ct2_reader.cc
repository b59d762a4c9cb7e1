// CTranslate2 model.bin reader.
//
// Layout (little endian, no padding or alignment), as written by ctranslate2's
// specs/model_spec.py (`_serialize`) and read by its models/model.cc:
//   u32 binary_version
//   string spec_name                         (e.g. "WhisperSpec")          [version >= 2]
//   u32 spec_revision                                                      [version >= 2]
//   u32 n_variables
//   n_variables x {
//     string name
//     u8 rank, u32 dims[rank]
//     u8 dtype   (0 f32, 1 i8, 2 i16, 3 i32, 4 f16, 5 bf16)                [version >= 4]
//     u32 nbytes (= product(dims) * dtype size), nbytes raw bytes
//   }
//   u32 n_aliases, n_aliases x { string alias, string target }             [version >= 3]
// where `string` is u16 length (including the terminating NUL) + bytes + NUL.
//
// Versions 4, 5 and 6 share this layout (CTranslate2's reader has no branch above 4).
// Versions 1-3 stored an item size instead of a dtype (16-bit data was always read as int16)
// and predate Whisper support; they are refused, as are versions newer than 6.
//
// Decisions: strings must be valid UTF-8; variable names must be non-empty and NUL-free;
// rank is at most 8; duplicate names, aliases to missing variables and an alias reusing a
// name are errors; bytes after the alias table are an error (a correctly written file has
// none, and trailing bytes usually mean a bad concatenation or a different file appended).
#include <cstring>
#include <memory>
#include <string>

#include "core/status.h"
#include "io/checkpoint.h"
#include "io/mapped_checkpoint.h"
#include "io/mapped_file.h"

namespace speechcore::io {

namespace {

constexpr uint32_t kMinVersion = 4;
constexpr uint32_t kMaxVersion = 6;
constexpr int kMaxRank = 8;

// Bounds-checked little-endian reads over the mapped bytes.
class ByteCursor {
 public:
  ByteCursor(const uint8_t* data, size_t size, const std::string& path)
      : data_(data), size_(size), path_(path) {}

  size_t pos() const { return pos_; }
  size_t remaining() const { return size_ - pos_; }

  // Reserves `n` bytes for `what` and returns their offset.
  size_t take(size_t n, const std::string& what) {
    if (n > remaining())
      throw_error(ErrorCode::kInvalidModel, path_, ": file is truncated: ", what, " needs ", n,
                  " bytes at offset ", pos_, " but only ", remaining(), " remain (file size ",
                  size_, ")");
    const size_t at = pos_;
    pos_ += n;
    return at;
  }

  uint64_t read_uint(size_t width, const std::string& what) {
    const size_t at = take(width, what);
    uint64_t v = 0;
    for (size_t i = 0; i < width; ++i) v |= static_cast<uint64_t>(data_[at + i]) << (8 * i);
    return v;
  }
  uint8_t u8(const std::string& what) { return static_cast<uint8_t>(read_uint(1, what)); }
  uint16_t u16(const std::string& what) { return static_cast<uint16_t>(read_uint(2, what)); }
  uint32_t u32(const std::string& what) { return static_cast<uint32_t>(read_uint(4, what)); }

  std::string string(const std::string& what, bool allow_empty) {
    const size_t len = u16(what + " length");
    if (len == 0)
      throw_error(ErrorCode::kInvalidModel, path_, ": ", what, " at offset ", pos_ - 2,
                  " has length 0 (a string includes its NUL terminator)");
    const size_t at = take(len, what);
    const char* chars = reinterpret_cast<const char*>(data_ + at);
    if (chars[len - 1] != '\0')
      throw_error(ErrorCode::kInvalidModel, path_, ": ", what, " at offset ", at,
                  " is not NUL-terminated");
    std::string s(chars, len - 1);
    if (s.find('\0') != std::string::npos)
      throw_error(ErrorCode::kInvalidModel, path_, ": ", what, " at offset ", at,
                  " contains a NUL byte");
    if (!is_valid_utf8(s))
      throw_error(ErrorCode::kInvalidModel, path_, ": ", what, " at offset ", at,
                  " is not valid UTF-8 (\"", escape_bytes(s), "\")");
    if (!allow_empty && s.empty())
      throw_error(ErrorCode::kInvalidModel, path_, ": ", what, " at offset ", at, " is empty");
    return s;
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
  const std::string& path_;
};

bool dtype_from_code(uint8_t code, DType* dtype) {
  switch (code) {
    case 0: *dtype = DType::kFloat32; return true;
    case 1: *dtype = DType::kInt8; return true;
    case 2: *dtype = DType::kInt16; return true;
    case 3: *dtype = DType::kInt32; return true;
    case 4: *dtype = DType::kFloat16; return true;
    case 5: *dtype = DType::kBFloat16; return true;
    default: return false;
  }
}

}  // namespace

std::unique_ptr<CheckpointReader> open_ctranslate2(const std::string& model_bin_path) {
  const std::string& path = model_bin_path;
  std::shared_ptr<MappedFile> file = MappedFile::open(path);
  SC_CHECK(file->size() > 0, ErrorCode::kInvalidModel, path, ": file is empty (expected a CTranslate2 model.bin)");

  auto reader = std::make_unique<MappedCheckpoint>("ctranslate2", path);
  const size_t file_id = reader->add_file(file);
  ByteCursor in(file->data(), file->size(), path);

  const uint32_t version = in.u32("binary version");
  if (version < kMinVersion || version > kMaxVersion) {
    if (version > 0xffff)
      throw_error(ErrorCode::kInvalidModel, path, ": not a CTranslate2 model.bin (first 4 bytes read as binary version ",
                  version, ")");
    throw_error(ErrorCode::kInvalidModel, path, ": unsupported CTranslate2 binary version ", version,
                " (this reader supports versions ", kMinVersion, " to ", kMaxVersion,
                "; re-convert the model with a current ctranslate2)");
  }
  const std::string spec = in.string("spec name", /*allow_empty=*/true);
  const uint32_t revision = in.u32("spec revision");
  auto& meta = reader->mutable_metadata();
  meta["binary_version"] = std::to_string(version);
  meta["spec"] = spec;
  meta["spec_revision"] = std::to_string(revision);

  const uint32_t n_vars = in.u32("variable count");
  for (uint32_t v = 0; v < n_vars; ++v) {
    const std::string where = "variable #" + std::to_string(v);
    TensorInfo ti;
    ti.name = in.string(where + " name", /*allow_empty=*/false);
    const std::string var = "variable '" + ti.name + "'";
    const int rank = in.u8(var + " rank");
    SC_CHECK(rank <= kMaxRank, ErrorCode::kInvalidModel, path, ": ", var, " has rank ", rank,
             " (at most ", kMaxRank, " is plausible; the file is corrupt)");
    ti.shape.resize(rank);
    for (int d = 0; d < rank; ++d) ti.shape[d] = in.u32(var + " dimension");
    const size_t code_at = in.pos();
    const uint8_t code = in.u8(var + " dtype");
    SC_CHECK(dtype_from_code(code, &ti.dtype), ErrorCode::kInvalidModel, path, ": ", var,
             " has unknown dtype code ", static_cast<int>(code), " at offset ", code_at,
             " (known: 0 float32, 1 int8, 2 int16, 3 int32, 4 float16, 5 bfloat16)");
    const uint32_t nbytes = in.u32(var + " byte count");
    size_t expected = 0;
    const bool ok = checked_nbytes(ti.shape, ti.dtype, &expected);
    SC_CHECK(ok && expected == nbytes, ErrorCode::kInvalidModel, path, ": ", var, " is ",
             dtype_name(ti.dtype), " ", shape_str(ti.shape), " (",
             ok ? std::to_string(expected) : std::string("too many"),
             " bytes) but its byte count says ", nbytes);
    const size_t offset = in.take(nbytes, var + " data");
    reader->add_tensor(std::move(ti), file_id, offset, path);
  }

  const uint32_t n_aliases = in.u32("alias count");
  for (uint32_t a = 0; a < n_aliases; ++a) {
    const std::string where = "alias #" + std::to_string(a);
    const std::string alias = in.string(where + " name", /*allow_empty=*/false);
    const std::string target = in.string(where + " target", /*allow_empty=*/false);
    reader->add_alias(alias, target, path);
  }
  SC_CHECK(in.remaining() == 0, ErrorCode::kInvalidModel, path, ": ", in.remaining(),
           " unexpected bytes after the alias table at offset ", in.pos(),
           " (file size ", file->size(), "; a corrupt or badly concatenated file?)");
  return reader;
}

}  // namespace speechcore::io
