#include "io/checkpoint.h"

#include <cstring>

#include "core/convert.h"
#include "core/half.h"
#include "core/status.h"
#include "io/mapped_checkpoint.h"
#include "io/mapped_file.h"

namespace speechcore::io {

// ---------------------------------------------------------------- CheckpointReader helpers --

std::optional<int64_t> CheckpointReader::scalar_int(const std::string& name) const {
  if (!has(name)) return std::nullopt;
  const TensorInfo& ti = info(name);
  int64_t numel = 1;
  for (int64_t d : ti.shape) numel *= d;
  const bool is_int = ti.dtype == DType::kInt8 || ti.dtype == DType::kInt16 ||
                      ti.dtype == DType::kInt32 || ti.dtype == DType::kUInt8;
  SC_CHECK(is_int && numel == 1, ErrorCode::kInvalidModel, path(), ": weight '", name,
           "' is not an integer scalar (", dtype_name(ti.dtype), " ", shape_str(ti.shape), ")");
  const Tensor t = get(name);
  switch (ti.dtype) {
    case DType::kInt8: return *t.data<int8_t>();
    case DType::kInt16: return *t.data<int16_t>();
    case DType::kInt32: return *t.data<int32_t>();
    default: return *t.data<uint8_t>();
  }
}

std::optional<double> CheckpointReader::scalar_float(const std::string& name) const {
  if (!has(name)) return std::nullopt;
  const TensorInfo& ti = info(name);
  int64_t numel = 1;
  for (int64_t d : ti.shape) numel *= d;
  const bool is_float = ti.dtype == DType::kFloat32 || ti.dtype == DType::kFloat16 ||
                        ti.dtype == DType::kBFloat16;
  SC_CHECK(is_float && numel == 1, ErrorCode::kInvalidModel, path(), ": weight '", name,
           "' is not a float scalar (", dtype_name(ti.dtype), " ", shape_str(ti.shape), ")");
  return *get_float32(name).data<float>();
}

// ------------------------------------------------------------------------ MappedCheckpoint --

bool checked_nbytes(const Shape& shape, DType dtype, size_t* nbytes) {
  size_t n = dtype_size(dtype);
  bool overflow = false;
  for (int64_t d : shape) {
    if (d < 0) return false;
    if (d == 0) {  // an empty tensor: no bytes, whatever the other dimensions are
      *nbytes = 0;
      return true;
    }
    size_t next;
    if (__builtin_mul_overflow(n, static_cast<uint64_t>(d), &next)) overflow = true;
    n = next;
  }
  if (overflow) return false;
  *nbytes = n;
  return true;
}

bool is_valid_utf8(const std::string& s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    const unsigned char c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    uint32_t cp;
    if (c >= 0xc2 && c <= 0xdf) {
      len = 2;
      cp = c & 0x1fu;
    } else if (c >= 0xe0 && c <= 0xef) {
      len = 3;
      cp = c & 0x0fu;
    } else if (c >= 0xf0 && c <= 0xf4) {
      len = 4;
      cp = c & 0x07u;
    } else {
      return false;  // continuation byte, overlong lead (0xc0/0xc1) or beyond U+10FFFF
    }
    if (n - i < len) return false;
    for (size_t k = 1; k < len; ++k) {
      if ((p[i + k] & 0xc0u) != 0x80u) return false;
      cp = (cp << 6) | (p[i + k] & 0x3fu);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
      return false;
    i += len;
  }
  return true;
}

std::string escape_bytes(const std::string& s) {
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(s.size());
  for (unsigned char c : s) {
    if (c >= 0x20 && c < 0x7f) {
      out.push_back(static_cast<char>(c));
    } else {
      out += "\\x";
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

size_t MappedCheckpoint::add_file(std::shared_ptr<MappedFile> file) {
  files_.push_back(std::move(file));
  return files_.size() - 1;
}

void MappedCheckpoint::add_tensor(TensorInfo info, size_t file_id, size_t offset,
                                  const std::string& where) {
  SC_ASSERT(file_id < files_.size());
  size_t nbytes = 0;
  SC_ASSERT(checked_nbytes(info.shape, info.dtype, &nbytes));
  SC_ASSERT(offset <= files_[file_id]->size() && nbytes <= files_[file_id]->size() - offset);
  SC_CHECK(index_.count(info.name) == 0, ErrorCode::kInvalidModel, where,
           ": duplicate weight name '", info.name, "'");
  index_.emplace(info.name, infos_.size());
  infos_.push_back(std::move(info));
  locations_.push_back({file_id, offset, nbytes});
}

void MappedCheckpoint::add_alias(const std::string& alias, const std::string& target,
                                 const std::string& where) {
  SC_CHECK(index_.count(alias) == 0, ErrorCode::kInvalidModel, where, ": alias '", alias,
           "' reuses the name of an existing weight or alias");
  auto it = index_.find(target);
  SC_CHECK(it != index_.end(), ErrorCode::kInvalidModel, where, ": alias '", alias,
           "' points to a missing weight '", target, "'");
  const size_t tensor_index = it->second;
  index_.emplace(alias, tensor_index);
  aliases_.emplace_back(alias, target);
}

void MappedCheckpoint::reorder(const std::vector<size_t>& order) {
  SC_ASSERT(order.size() == infos_.size());
  std::vector<size_t> new_pos(order.size());
  std::vector<TensorInfo> infos;
  std::vector<Location> locations;
  infos.reserve(order.size());
  locations.reserve(order.size());
  for (size_t i = 0; i < order.size(); ++i) {
    new_pos[order[i]] = i;
    infos.push_back(std::move(infos_[order[i]]));
    locations.push_back(locations_[order[i]]);
  }
  infos_ = std::move(infos);
  locations_ = std::move(locations);
  for (auto& kv : index_) kv.second = new_pos[kv.second];
}

size_t MappedCheckpoint::resolve(const std::string& name) const {
  auto it = index_.find(name);
  SC_CHECK(it != index_.end(), ErrorCode::kInvalidModel, path_, ": missing weight '", name, "'");
  return it->second;
}

const uint8_t* MappedCheckpoint::data_of(size_t tensor_index) const {
  const Location& loc = locations_[tensor_index];
  const uint8_t* base = files_[loc.file_id]->data();
  return base == nullptr ? nullptr : base + loc.offset;
}

const TensorInfo& MappedCheckpoint::info(const std::string& name) const {
  return infos_[resolve(name)];
}

Tensor MappedCheckpoint::get(const std::string& name) const {
  const size_t i = resolve(name);
  const TensorInfo& ti = infos_[i];
  const Location& loc = locations_[i];
  const uint8_t* src = data_of(i);
  const size_t align = dtype_size(ti.dtype);
  if (reinterpret_cast<uintptr_t>(src) % align == 0) {
    const std::shared_ptr<MappedFile>& file = files_[loc.file_id];
    // Copy-on-write mapping: writing through the view is harmless (see mapped_file.h).
    uint8_t* data = file->mutable_data() == nullptr ? nullptr : file->mutable_data() + loc.offset;
    return Tensor::view(data, ti.shape, ti.dtype, Device::kCPU, file);
  }
  Tensor out = Tensor::empty(ti.shape, ti.dtype);
  if (loc.nbytes > 0) std::memcpy(out.raw(), src, loc.nbytes);
  return out;
}

Tensor MappedCheckpoint::get_float32(const std::string& name) const {
  const size_t i = resolve(name);
  const TensorInfo& ti = infos_[i];
  SC_CHECK(ti.dtype == DType::kFloat32 || ti.dtype == DType::kFloat16 ||
               ti.dtype == DType::kBFloat16,
           ErrorCode::kInvalidModel, path_, ": weight '", name, "' is ", dtype_name(ti.dtype),
           ", not a float tensor");
  Tensor out = Tensor::empty(ti.shape, DType::kFloat32);
  // Straight from the mapping (any alignment): no intermediate copy.
  core::convert_to_float32(data_of(i), ti.dtype, static_cast<size_t>(out.numel()), out.data<float>());
  return out;
}

// ----------------------------------------------------------------------------- dispatch --

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string join_path(const std::string& dir, const std::string& name) {
  if (dir.empty() || dir.back() == '/') return dir + name;
  return dir + "/" + name;
}

}  // namespace

std::unique_ptr<CheckpointReader> open_checkpoint(const std::string& path) {
  if (is_directory(path)) {
    for (const char* name : {"model.bin", "model.safetensors.index.json", "model.safetensors"}) {
      const std::string candidate = join_path(path, name);
      if (path_exists(candidate) && !is_directory(candidate)) return open_checkpoint(candidate);
    }
    throw_error(ErrorCode::kNotFound, path,
                ": no model.bin, model.safetensors.index.json or model.safetensors in this directory");
  }
  if (!path_exists(path)) throw_error(ErrorCode::kNotFound, path, ": no such file");
  if (ends_with(path, ".json") || ends_with(path, ".safetensors")) return open_safetensors(path);
  if (ends_with(path, ".bin")) return open_ctranslate2(path);
  // Unknown name: a safetensors file has its JSON header ('{') right after the 8-byte length.
  auto file = MappedFile::open(path);
  if (file->size() > 8 && file->data()[8] == '{') return open_safetensors(path);
  return open_ctranslate2(path);
}

}  // namespace speechcore::io
