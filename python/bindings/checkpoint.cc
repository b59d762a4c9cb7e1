// Checkpoint readers for Python: _C.open_checkpoint(path) -> CheckpointReader.
// get() returns a read-only numpy array over the reader's tensor (zero-copy when the data is
// aligned in the mapped file); the array keeps the mapping alive. bfloat16 has no numpy dtype,
// so bfloat16 tensors come back as uint16 bit patterns (use get_float32 for values).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <string>

#include "bindings.h"
#include "io/checkpoint.h"

namespace py = pybind11;

namespace speechcore::bindings {

namespace {

py::dtype numpy_dtype(DType dtype) {
  switch (dtype) {
    case DType::kFloat32: return py::dtype::of<float>();
    case DType::kFloat16: return py::dtype("float16");
    case DType::kBFloat16: return py::dtype::of<uint16_t>();  // raw bits
    case DType::kInt32: return py::dtype::of<int32_t>();
    case DType::kInt16: return py::dtype::of<int16_t>();
    case DType::kInt8: return py::dtype::of<int8_t>();
    case DType::kUInt8: return py::dtype::of<uint8_t>();
  }
  return py::dtype::of<uint8_t>();
}

// A read-only numpy array viewing `t`; a capsule owning a Tensor handle keeps the data alive.
py::array tensor_to_numpy(Tensor t) {
  const size_t es = dtype_size(t.dtype());
  std::vector<py::ssize_t> shape(t.shape().begin(), t.shape().end());
  std::vector<py::ssize_t> strides;
  for (int64_t s : t.strides()) strides.push_back(static_cast<py::ssize_t>(s * static_cast<int64_t>(es)));
  auto* holder = new Tensor(std::move(t));
  py::capsule owner(holder, [](void* p) { delete static_cast<Tensor*>(p); });
  static const char kEmpty[8] = {};
  const void* data = holder->raw() != nullptr ? holder->raw() : kEmpty;  // numpy wants non-null
  py::array arr(numpy_dtype(holder->dtype()), shape, strides, data, owner);
  py::detail::array_proxy(arr.ptr())->flags &= ~py::detail::npy_api::NPY_ARRAY_WRITEABLE_;
  return arr;
}

py::tuple shape_tuple(const Shape& shape) {
  py::tuple out(shape.size());
  for (size_t i = 0; i < shape.size(); ++i) out[i] = py::int_(shape[i]);
  return out;
}

}  // namespace

void register_checkpoint(py::module_& m) {
  using io::CheckpointReader;
  py::class_<CheckpointReader, std::shared_ptr<CheckpointReader>>(m, "CheckpointReader",
      "Memory-mapped model weights (CTranslate2 model.bin or safetensors).")
      .def_property_readonly("format", &CheckpointReader::format, "'ctranslate2' or 'safetensors'.")
      .def_property_readonly("path", &CheckpointReader::path)
      .def_property_readonly("metadata", &CheckpointReader::metadata)
      .def("tensors", [](const CheckpointReader& r) {
        py::list out;
        for (const auto& ti : r.tensors())
          out.append(py::make_tuple(ti.name, shape_tuple(ti.shape), dtype_name(ti.dtype)));
        return out;
      }, "Stored tensors in file order: list of (name, shape tuple, dtype name).")
      .def("aliases", [](const CheckpointReader& r) {
        py::dict out;
        for (const auto& [alias, target] : r.aliases()) out[py::str(alias)] = target;
        return out;
      }, "{alias: target} (CTranslate2 only).")
      .def("has", &CheckpointReader::has, py::arg("name"))
      .def("__contains__", &CheckpointReader::has)
      .def("__len__", [](const CheckpointReader& r) { return r.tensors().size(); })
      .def("info", [](const CheckpointReader& r, const std::string& name) {
        const auto& ti = r.info(name);
        return py::make_tuple(ti.name, shape_tuple(ti.shape), dtype_name(ti.dtype));
      }, py::arg("name"))
      .def("get", [](const CheckpointReader& r, const std::string& name) {
        Tensor t;
        {
          py::gil_scoped_release release;
          t = r.get(name);
        }
        return tensor_to_numpy(std::move(t));
      }, py::arg("name"),
         "Read-only array of the stored values (bfloat16 as uint16 bits).")
      .def("get_float32", [](const CheckpointReader& r, const std::string& name) {
        Tensor t;
        {
          py::gil_scoped_release release;
          t = r.get_float32(name);
        }
        return tensor_to_numpy(std::move(t));
      }, py::arg("name"), "A float32 copy of a float weight.")
      .def("scalar_int", &CheckpointReader::scalar_int, py::arg("name"),
           "Value of a one-element integer weight, or None when absent.")
      .def("scalar_float", &CheckpointReader::scalar_float, py::arg("name"))
      .def("__repr__", [](const CheckpointReader& r) {
        return "<CheckpointReader " + r.format() + " '" + r.path() + "', " +
               std::to_string(r.tensors().size()) + " tensors>";
      });

  m.def("open_checkpoint", [](const std::string& path) {
    std::unique_ptr<CheckpointReader> r;
    {
      py::gil_scoped_release release;
      r = io::open_checkpoint(path);
    }
    return std::shared_ptr<CheckpointReader>(std::move(r));
  }, py::arg("path"),
     "Opens a CTranslate2 model.bin, a .safetensors file, a *.safetensors.index.json, or a "
     "model directory holding one of them.");
}

}  // namespace speechcore::bindings
