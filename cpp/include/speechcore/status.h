// speechcore: the one error type that crosses the public API.
#pragma once

#include <stdexcept>
#include <string>

namespace speechcore {

// What went wrong, coarse enough to map onto one exception class per kind in Python.
enum class ErrorCode {
  kInvalidArgument,  // an option or argument the caller gave is not valid
  kNotFound,         // a file or directory does not exist
  kInvalidModel,     // a model directory is missing files, truncated, corrupt or of the wrong shape
  kInvalidAudio,     // audio that cannot be decoded or used (empty, NaN/inf, wrong shape)
  kUnsupported,      // valid request this build or device cannot serve (e.g. device="cuda" without CUDA)
  kOutOfMemory,      // an allocation failed
  kCancelled,        // a request was aborted
  kInternal,         // a bug: an invariant did not hold
};

const char* error_code_name(ErrorCode code);

// Every failure that leaves the library is a speechcore::Error.
class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  ErrorCode code() const { return code_; }

 private:
  ErrorCode code_;
};

}  // namespace speechcore
