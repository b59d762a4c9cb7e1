// Hugging Face safetensors reader (single file or sharded through an index).
//
// File layout: u64 little-endian N, then N bytes of UTF-8 JSON (may be padded with spaces),
// then the data buffer. The JSON maps each tensor name to
//   {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}
// with offsets relative to the data buffer, plus an optional "__metadata__" string->string map.
//
// Checks (the same rules as the reference implementation): the header fits the file and starts
// with '{'; every entry has a supported dtype, non-negative integer dims and
// end - begin == product(shape) * dtype size; the tensors, sorted by offset, tile the data
// buffer exactly (no overlap, no gap, no trailing bytes).
// Supported dtypes: F32, F16, BF16, I32, I16, I8, U8. Others (F64, I64, BOOL, F8_*, ...) are
// refused by name: Whisper checkpoints only hold float weights.
//
// Index (*.index.json): {"metadata": {...}, "weight_map": {tensor: shard file}}. Shards are
// opened in order of first appearance; each tensor must sit in the shard the map names, and
// every tensor of a shard must be in the map.
#include <algorithm>
#include <memory>
#include <numeric>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/status.h"
#include "io/checkpoint.h"
#include "io/json.h"
#include "io/mapped_checkpoint.h"
#include "io/mapped_file.h"

namespace speechcore::io {

namespace {

bool dtype_from_name(const std::string& s, DType* dtype) {
  static const std::unordered_map<std::string, DType> kTypes = {
      {"F32", DType::kFloat32}, {"F16", DType::kFloat16}, {"BF16", DType::kBFloat16},
      {"I32", DType::kInt32},   {"I16", DType::kInt16},   {"I8", DType::kInt8},
      {"U8", DType::kUInt8}};
  auto it = kTypes.find(s);
  if (it == kTypes.end()) return false;
  *dtype = it->second;
  return true;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string dirname_of(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return "";
  return path.substr(0, slash + 1);
}

// A non-negative integer JSON number that fits in int64 exactly (below 2^53).
bool json_uint(const JsonValue& v, int64_t* out) {
  if (!v.is_number()) return false;
  const double d = v.as_number();
  if (!(d >= 0) || d > 9007199254740992.0 || d != static_cast<double>(static_cast<int64_t>(d)))
    return false;
  *out = static_cast<int64_t>(d);
  return true;
}

JsonValue parse_header(const std::string& text, const std::string& path, const char* what) {
  try {
    return parse_json(text, path);
  } catch (const Error& e) {
    throw_error(ErrorCode::kInvalidModel, path, ": ", what, " is not valid JSON: ",
                escape_bytes(e.what()));
  }
}

// Parses one .safetensors file into `reader`. When `expected` is given, every tensor's name
// must be a key of it mapping to `shard_name`.
void read_safetensors_file(MappedCheckpoint& reader, const std::string& path,
                           const std::unordered_map<std::string, std::string>* expected,
                           const std::string& shard_name) {
  std::shared_ptr<MappedFile> file = MappedFile::open(path);
  const size_t size = file->size();
  SC_CHECK(size > 0, ErrorCode::kInvalidModel, path, ": file is empty (expected safetensors)");
  SC_CHECK(size >= 8, ErrorCode::kInvalidModel, path, ": file is truncated: ", size,
           " bytes, too short for the 8-byte safetensors header length");
  uint64_t header_len = 0;
  for (int i = 0; i < 8; ++i) header_len |= static_cast<uint64_t>(file->data()[i]) << (8 * i);
  SC_CHECK(header_len <= size - 8, ErrorCode::kInvalidModel, path, ": header length ", header_len,
           " runs past the end of the file (", size, " bytes; truncated or not safetensors)");
  SC_CHECK(header_len >= 2 && file->data()[8] == '{', ErrorCode::kInvalidModel, path,
           ": header does not start with '{' (not a safetensors file?)");
  const std::string text(reinterpret_cast<const char*>(file->data() + 8), header_len);
  const JsonValue root = parse_header(text, path, "header");
  SC_CHECK(root.is_object(), ErrorCode::kInvalidModel, path, ": header is not a JSON object");

  const size_t data_start = 8 + static_cast<size_t>(header_len);
  const size_t data_size = size - data_start;
  const size_t file_id = reader.add_file(file);
  struct Pending {
    TensorInfo info;
    size_t begin, end;
  };
  std::vector<Pending> pending;
  for (const auto& [name, entry] : root.as_object()) {
    if (name == "__metadata__") {
      SC_CHECK(entry.is_object(), ErrorCode::kInvalidModel, path, ": __metadata__ is not an object");
      for (const auto& [key, value] : entry.as_object()) {
        SC_CHECK(value.is_string(), ErrorCode::kInvalidModel, path, ": __metadata__ value of '",
                 escape_bytes(key), "' is not a string");
        SC_CHECK(is_valid_utf8(key) && is_valid_utf8(value.as_string()), ErrorCode::kInvalidModel,
                 path, ": __metadata__ entry '", escape_bytes(key), "' is not valid UTF-8");
        reader.mutable_metadata().emplace(key, value.as_string());
      }
      continue;
    }
    SC_CHECK(!name.empty(), ErrorCode::kInvalidModel, path, ": a tensor has an empty name");
    SC_CHECK(is_valid_utf8(name), ErrorCode::kInvalidModel, path, ": tensor name \"",
             escape_bytes(name), "\" is not valid UTF-8");
    const std::string t = "tensor '" + name + "'";
    SC_CHECK(entry.is_object(), ErrorCode::kInvalidModel, path, ": ", t, " is not a JSON object");
    const JsonValue* dtype = entry.find("dtype");
    const JsonValue* shape = entry.find("shape");
    const JsonValue* offsets = entry.find("data_offsets");
    SC_CHECK(dtype && dtype->is_string(), ErrorCode::kInvalidModel, path, ": ", t,
             " has no \"dtype\" string");
    SC_CHECK(shape && shape->is_array(), ErrorCode::kInvalidModel, path, ": ", t,
             " has no \"shape\" array");
    SC_CHECK(offsets && offsets->is_array() && offsets->size() == 2, ErrorCode::kInvalidModel,
             path, ": ", t, " has no \"data_offsets\" [begin, end] pair");
    Pending p;
    p.info.name = name;
    SC_CHECK(dtype_from_name(dtype->as_string(), &p.info.dtype), ErrorCode::kInvalidModel, path,
             ": ", t, " has dtype \"", escape_bytes(dtype->as_string()),
             "\", which is not supported (supported: F32, F16, BF16, I32, I16, I8, U8)");
    for (const JsonValue& d : shape->as_array()) {
      int64_t dim = 0;
      SC_CHECK(json_uint(d, &dim), ErrorCode::kInvalidModel, path, ": ", t,
               " has a shape entry that is not a non-negative integer");
      p.info.shape.push_back(dim);
    }
    int64_t begin = 0, end = 0;
    SC_CHECK(json_uint(offsets->as_array()[0], &begin) && json_uint(offsets->as_array()[1], &end),
             ErrorCode::kInvalidModel, path, ": ", t, " has data_offsets that are not non-negative integers");
    SC_CHECK(begin <= end, ErrorCode::kInvalidModel, path, ": ", t, " has data_offsets [", begin,
             ", ", end, "] with begin > end");
    SC_CHECK(static_cast<uint64_t>(end) <= data_size, ErrorCode::kInvalidModel, path, ": ", t,
             " has data_offsets [", begin, ", ", end, "] beyond the data buffer (", data_size,
             " bytes; truncated file?)");
    size_t nbytes = 0;
    const bool ok = checked_nbytes(p.info.shape, p.info.dtype, &nbytes);
    SC_CHECK(ok && nbytes == static_cast<size_t>(end - begin), ErrorCode::kInvalidModel, path,
             ": ", t, " is ", dtype->as_string(), " ", shape_str(p.info.shape), " (",
             ok ? std::to_string(nbytes) : std::string("too many"), " bytes) but data_offsets [",
             begin, ", ", end, "] hold ", end - begin);
    if (expected != nullptr) {
      auto it = expected->find(name);
      SC_CHECK(it != expected->end(), ErrorCode::kInvalidModel, path, ": ", t,
               " is not listed in the index's weight_map");
      SC_CHECK(it->second == shard_name, ErrorCode::kInvalidModel, path, ": ", t,
               " is in this shard but the index's weight_map says '", escape_bytes(it->second), "'");
    }
    p.begin = static_cast<size_t>(begin);
    p.end = static_cast<size_t>(end);
    pending.push_back(std::move(p));
  }

  // File order = data order; then check that the tensors tile the buffer.
  std::vector<size_t> order(pending.size());
  std::iota(order.begin(), order.end(), size_t(0));
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return pending[a].begin != pending[b].begin ? pending[a].begin < pending[b].begin
                                                : pending[a].end < pending[b].end;
  });
  size_t covered = 0;
  const std::string* last = nullptr;
  for (size_t i : order) {
    const Pending& p = pending[i];
    SC_CHECK(p.begin >= covered, ErrorCode::kInvalidModel, path, ": tensor '", p.info.name,
             "' (bytes ", p.begin, "..", p.end, ") overlaps tensor '", last ? *last : "", "'");
    SC_CHECK(p.begin == covered, ErrorCode::kInvalidModel, path, ": ", p.begin - covered,
             " unused bytes before tensor '", p.info.name, "' at data offset ", covered,
             " (offsets must tile the data buffer)");
    covered = p.end;
    if (p.end > p.begin) last = &p.info.name;
  }
  SC_CHECK(covered == data_size, ErrorCode::kInvalidModel, path, ": ", data_size - covered,
           " unused bytes after the last tensor (data buffer is ", data_size, " bytes)");
  for (size_t i : order)
    reader.add_tensor(std::move(pending[i].info), file_id, data_start + pending[i].begin, path);
}

std::unique_ptr<CheckpointReader> open_index(const std::string& index_path) {
  std::shared_ptr<MappedFile> file = MappedFile::open(index_path);
  const std::string text(reinterpret_cast<const char*>(file->data()), file->size());
  const JsonValue root = parse_header(text, index_path, "index");
  SC_CHECK(root.is_object(), ErrorCode::kInvalidModel, index_path, ": index is not a JSON object");
  const JsonValue* weight_map = root.find("weight_map");
  SC_CHECK(weight_map && weight_map->is_object(), ErrorCode::kInvalidModel, index_path,
           ": index has no \"weight_map\" object");

  std::unordered_map<std::string, std::string> expected;
  std::vector<std::string> shards;
  std::set<std::string> seen;
  for (const auto& [name, shard] : weight_map->as_object()) {
    SC_CHECK(is_valid_utf8(name), ErrorCode::kInvalidModel, index_path, ": weight_map name \"",
             escape_bytes(name), "\" is not valid UTF-8");
    SC_CHECK(shard.is_string() && is_valid_utf8(shard.as_string()), ErrorCode::kInvalidModel,
             index_path, ": weight_map entry '", name, "' is not a file name");
    const std::string& s = shard.as_string();
    SC_CHECK(!s.empty() && s[0] != '/' && s.find("..") == std::string::npos,
             ErrorCode::kInvalidModel, index_path, ": weight_map entry '", name,
             "' names shard '", s, "', which is not a file beside the index");
    SC_CHECK(expected.emplace(name, s).second, ErrorCode::kInvalidModel, index_path,
             ": duplicate weight name '", name, "' in weight_map");
    if (seen.insert(s).second) shards.push_back(s);
  }

  auto reader = std::make_unique<MappedCheckpoint>("safetensors", index_path);
  if (const JsonValue* meta = root.find("metadata"); meta && meta->is_object()) {
    for (const auto& [key, value] : meta->as_object()) {
      if (!is_valid_utf8(key)) continue;
      if (value.is_string() && is_valid_utf8(value.as_string()))
        reader->mutable_metadata().emplace(key, value.as_string());
      // Numbers such as "total_size" are kept as decimal strings; other values are ignored.
      int64_t n = 0;
      if (json_uint(value, &n)) reader->mutable_metadata().emplace(key, std::to_string(n));
    }
  }
  const std::string dir = dirname_of(index_path);
  for (const std::string& shard : shards) {
    const std::string shard_path = dir + shard;
    try {
      read_safetensors_file(*reader, shard_path, &expected, shard);
    } catch (const Error& e) {
      if (e.code() != ErrorCode::kNotFound) throw;
      throw_error(ErrorCode::kInvalidModel, index_path, ": shard '", shard, "' does not exist");
    }
  }
  for (const auto& [name, shard] : weight_map->as_object())
    SC_CHECK(reader->has(name), ErrorCode::kInvalidModel, index_path, ": weight '", name,
             "' is listed in weight_map but missing from shard '", shard.as_string(), "'");
  return reader;
}

}  // namespace

std::unique_ptr<CheckpointReader> open_safetensors(const std::string& path_or_index) {
  if (ends_with(path_or_index, ".json")) return open_index(path_or_index);
  auto reader = std::make_unique<MappedCheckpoint>("safetensors", path_or_index);
  read_safetensors_file(*reader, path_or_index, nullptr, "");
  return reader;
}

}  // namespace speechcore::io
