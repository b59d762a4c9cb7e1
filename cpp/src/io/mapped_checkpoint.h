// MappedCheckpoint: the CheckpointReader both formats build. A parser maps its file(s), checks
// every record against the file bounds, and registers tensors (data = file + offset) and aliases;
// lookups, views and conversions are shared here. Internal to the io module.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "io/checkpoint.h"
#include "io/mapped_file.h"

namespace speechcore::io {

class MappedCheckpoint final : public CheckpointReader {
 public:
  MappedCheckpoint(std::string format, std::string path)
      : format_(std::move(format)), path_(std::move(path)) {}

  std::string format() const override { return format_; }
  const std::string& path() const override { return path_; }
  const std::vector<TensorInfo>& tensors() const override { return infos_; }
  const std::vector<std::pair<std::string, std::string>>& aliases() const override { return aliases_; }
  const std::map<std::string, std::string>& metadata() const override { return metadata_; }
  bool has(const std::string& name) const override { return index_.count(name) != 0; }
  const TensorInfo& info(const std::string& name) const override;
  Tensor get(const std::string& name) const override;
  Tensor get_float32(const std::string& name) const override;

  // --- building (parsers only) ---
  // Registers a mapped file; returns its id for add_tensor.
  size_t add_file(std::shared_ptr<MappedFile> file);
  // The caller has checked that [offset, offset + nbytes(info)) lies inside the file.
  // Error(kInvalidModel) naming `where` (the file) when the name is already taken.
  void add_tensor(TensorInfo info, size_t file_id, size_t offset, const std::string& where);
  // Error(kInvalidModel) when the alias name is taken or the target does not exist
  // (a target may itself be an earlier alias).
  void add_alias(const std::string& alias, const std::string& target, const std::string& where);
  // Reorders tensors() (a permutation of the current order); lookups follow.
  void reorder(const std::vector<size_t>& order);
  std::map<std::string, std::string>& mutable_metadata() { return metadata_; }

  // Where a stored tensor's bytes are (for the parsers' overlap checks).
  struct Location {
    size_t file_id = 0;
    size_t offset = 0;
    size_t nbytes = 0;
  };
  const Location& location(size_t tensor_index) const { return locations_[tensor_index]; }

 private:
  size_t resolve(const std::string& name) const;  // tensor index or Error(kInvalidModel)
  const uint8_t* data_of(size_t tensor_index) const;

  std::string format_;
  std::string path_;
  std::vector<std::shared_ptr<MappedFile>> files_;
  std::vector<TensorInfo> infos_;
  std::vector<Location> locations_;
  std::unordered_map<std::string, size_t> index_;  // tensor or alias name -> tensor index
  std::vector<std::pair<std::string, std::string>> aliases_;
  std::map<std::string, std::string> metadata_;
};

// Strict UTF-8 (no overlongs, surrogates or code points above U+10FFFF). Names and metadata
// must be valid: they become Python str objects and appear in error messages.
bool is_valid_utf8(const std::string& s);
// `s` with bytes outside printable ASCII written as \xNN, for quoting untrusted text in messages.
std::string escape_bytes(const std::string& s);

// Number of bytes of a tensor of `shape` and `dtype`; false when it overflows size_t or a
// dimension is negative.
bool checked_nbytes(const Shape& shape, DType dtype, size_t* nbytes);

}  // namespace speechcore::io
