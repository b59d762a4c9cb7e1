// MappedFile: a whole file memory-mapped for reading, unmapped when the last owner goes away.
//
// The mapping is private copy-on-write (PROT_READ | PROT_WRITE, MAP_PRIVATE) over a file opened
// read-only: the file on disk can never be modified through it, and a stray write into a weight
// view costs a private page copy instead of a segfault. Pages are loaded lazily by the kernel.
// Caveat (inherent to mmap): if another process truncates the file while it is mapped, touching
// the lost pages raises SIGBUS; model files are not expected to change under a running engine.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>

namespace speechcore::io {

class MappedFile {
 public:
  // Maps `path`. Throws Error(kNotFound) when it does not exist, Error(kInvalidModel) when it is
  // not a regular file or cannot be opened or mapped. An empty file maps to size() == 0.
  static std::shared_ptr<MappedFile> open(const std::string& path);

  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  uint8_t* mutable_data() const { return data_; }  // copy-on-write: never reaches the file
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  MappedFile(std::string path, uint8_t* data, size_t size)
      : path_(std::move(path)), data_(data), size_(size) {}

  std::string path_;
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// True when `path` names an existing file or directory.
bool path_exists(const std::string& path);
bool is_directory(const std::string& path);

}  // namespace speechcore::io
