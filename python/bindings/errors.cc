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

// (class, message) of the Python exception for e. Messages may quote bytes from a corrupt file:
// decoded leniently.
static std::pair<py::object, py::object> python_class_and_text(const Error& e) {
  py::object errors = py::module_::import("speechcore.errors");
  py::object cls = errors.attr(python_class_for(e.code()));
  const std::string msg = e.what();
  py::object text = py::reinterpret_steal<py::object>(
      PyUnicode_DecodeUTF8(msg.data(), static_cast<Py_ssize_t>(msg.size()), "replace"));
  return {cls, text};
}

py::object python_error(const Error& e) {
  auto [cls, text] = python_class_and_text(e);
  return cls(text);
}

void register_errors(py::module_& m) {
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const Error& e) {
      auto [cls, text] = python_class_and_text(e);
      PyErr_SetObject(cls.ptr(), text.ptr());
    } catch (const std::bad_alloc& e) {
      py::object errors = py::module_::import("speechcore.errors");
      PyErr_SetString(errors.attr("OutOfMemoryError").ptr(), "out of memory");
    }
  });
}

}  // namespace speechcore::bindings
