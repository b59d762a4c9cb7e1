// The one place where speechcore::Error becomes a Python exception: the class for each
// ErrorCode lives in speechcore/errors.py.
#include <pybind11/pybind11.h>

#include "bindings.h"
#include "speechcore/status.h"

namespace py = pybind11;

namespace speechcore::bindings {

static const char* python_class_for(ErrorCode code) {
  switch (code) {
    case ErrorCode::kInvalidArgument: return "InvalidArgumentError";
    case ErrorCode::kNotFound: return "NotFoundError";
    case ErrorCode::kInvalidModel: return "ModelError";
    case ErrorCode::kInvalidAudio: return "AudioError";
    case ErrorCode::kUnsupported: return "UnsupportedError";
    case ErrorCode::kOutOfMemory: return "OutOfMemoryError";
    case ErrorCode::kCancelled: return "CancelledError";
    case ErrorCode::kInternal: return "InternalError";
  }
  return "SpeechcoreError";
}

void register_errors(py::module_& m) {
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const Error& e) {
      py::object errors = py::module_::import("speechcore.errors");
      py::object cls = errors.attr(python_class_for(e.code()));
      // Messages may quote bytes from a corrupt file: decode leniently.
      const std::string msg = e.what();
      py::object text = py::reinterpret_steal<py::object>(
          PyUnicode_DecodeUTF8(msg.data(), static_cast<Py_ssize_t>(msg.size()), "replace"));
      PyErr_SetObject(cls.ptr(), text.ptr());
    } catch (const std::bad_alloc& e) {
      py::object errors = py::module_::import("speechcore.errors");
      PyErr_SetString(errors.attr("OutOfMemoryError").ptr(), "out of memory");
    }
  });
}

}  // namespace speechcore::bindings
