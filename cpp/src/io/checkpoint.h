// Checkpoint readers: the names, shapes and dtypes of a model's weights, and zero-copy views of
// their data in a memory-mapped file. Two formats:
//   - CTranslate2 `model.bin` (binary versions 4..6; see ct2_reader.cc for the layout),
//   - Hugging Face safetensors, single file or sharded through `model.safetensors.index.json`.
// Every problem with a file (missing, truncated, corrupt, inconsistent) is reported as
// speechcore::Error naming the file: kNotFound for a missing file, kInvalidModel for the rest.
// A reader is immutable once opened, so its const methods may be called from any thread.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "speechcore/tensor.h"

namespace speechcore::io {

struct TensorInfo {
  std::string name;
  Shape shape;
  DType dtype = DType::kFloat32;
};

class CheckpointReader {
 public:
  virtual ~CheckpointReader() = default;

  virtual std::string format() const = 0;        // "ctranslate2" | "safetensors"
  virtual const std::string& path() const = 0;   // the file it was opened from (index for shards)

  // Stored tensors in file order (CTranslate2: variable order; safetensors: data-offset order,
  // shard by shard). Aliases are not listed here; see aliases().
  virtual const std::vector<TensorInfo>& tensors() const = 0;
  // (alias, target) pairs, CTranslate2 only; has/info/get resolve an alias to its target.
  virtual const std::vector<std::pair<std::string, std::string>>& aliases() const = 0;
  // CTranslate2: "spec", "spec_revision", "binary_version"; safetensors: the "__metadata__" map.
  virtual const std::map<std::string, std::string>& metadata() const = 0;

  virtual bool has(const std::string& name) const = 0;
  // Throws Error(kInvalidModel, "<file>: missing weight '<name>'") if absent. For an alias this is
  // the target's info (its name is the target's name).
  virtual const TensorInfo& info(const std::string& name) const = 0;
  // The tensor's data, contiguous. A zero-copy view into the mapped file when the data is
  // naturally aligned for its dtype (the Tensor keeps the mapping alive); otherwise an aligned
  // copy, since CTranslate2 files place data at arbitrary byte offsets. Writes into a view stay
  // private to this process (copy-on-write) and never reach the file.
  virtual Tensor get(const std::string& name) const = 0;
  // A new contiguous float32 tensor converted from a float32/float16/bfloat16 weight;
  // Error(kInvalidModel) for an integer weight.
  virtual Tensor get_float32(const std::string& name) const = 0;

  // Single-element (usually rank-0) integer variables such as CTranslate2's
  // "decoder/num_heads": nullopt when absent, Error(kInvalidModel) when present but not a
  // one-element integer (int8/int16/int32/uint8) tensor.
  std::optional<int64_t> scalar_int(const std::string& name) const;
  // Same for one-element float tensors (float32/float16/bfloat16).
  std::optional<double> scalar_float(const std::string& name) const;
};

// CTranslate2 model.bin.
std::unique_ptr<CheckpointReader> open_ctranslate2(const std::string& model_bin_path);
// A .safetensors file, or a sharded checkpoint's *.safetensors.index.json (its "weight_map"
// names the shard of every tensor; shards are resolved relative to the index's directory).
std::unique_ptr<CheckpointReader> open_safetensors(const std::string& path_or_index);
// Any of the above. A directory is searched for model.bin, then model.safetensors.index.json,
// then model.safetensors; a file is recognised by its name (.json / .safetensors) or, failing
// that, by its first bytes.
std::unique_ptr<CheckpointReader> open_checkpoint(const std::string& path);

}  // namespace speechcore::io
