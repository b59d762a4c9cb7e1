#include "io/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/status.h"

namespace speechcore::io {

namespace {

// Closes a file descriptor on scope exit.
struct FdGuard {
  int fd;
  ~FdGuard() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

std::shared_ptr<MappedFile> MappedFile::open(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    const int err = errno;
    if (err == ENOENT || err == ENOTDIR)
      throw_error(ErrorCode::kNotFound, path, ": no such file");
    throw_error(ErrorCode::kInvalidModel, path, ": cannot stat: ", std::strerror(err));
  }
  SC_CHECK(S_ISREG(st.st_mode), ErrorCode::kInvalidModel, path, ": not a regular file");

  FdGuard guard{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  if (guard.fd < 0) {
    const int err = errno;
    if (err == ENOENT) throw_error(ErrorCode::kNotFound, path, ": no such file");
    throw_error(ErrorCode::kInvalidModel, path, ": cannot open: ", std::strerror(err));
  }
  // Size from the open descriptor, not the earlier stat: the path may have been replaced.
  if (::fstat(guard.fd, &st) != 0)
    throw_error(ErrorCode::kInvalidModel, path, ": cannot stat: ", std::strerror(errno));
  SC_CHECK(S_ISREG(st.st_mode), ErrorCode::kInvalidModel, path, ": not a regular file");
  const size_t size = static_cast<size_t>(st.st_size);
  if (size == 0) return std::shared_ptr<MappedFile>(new MappedFile(path, nullptr, 0));

  void* ptr = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, guard.fd, 0);
  if (ptr == MAP_FAILED)
    throw_error(ErrorCode::kInvalidModel, path, ": cannot map ", size, " bytes: ", std::strerror(errno));
  // The mapping stays valid after the descriptor is closed.
  return std::shared_ptr<MappedFile>(new MappedFile(path, static_cast<uint8_t*>(ptr), size));
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) ::munmap(data_, size_);
}

bool path_exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

bool is_directory(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

}  // namespace speechcore::io
