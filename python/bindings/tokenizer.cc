// Tokenizer bindings: _C.Tokenizer wraps speechcore::io::Tokenizer (immutable, shareable).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "bindings.h"
#include "io/tokenizer.h"

namespace py = pybind11;

namespace speechcore::bindings {

void register_tokenizer(py::module_& m) {
  using io::Tokenizer;
  py::class_<Tokenizer, std::shared_ptr<Tokenizer>>(m, "Tokenizer",
                                                    "Whisper byte-level BPE tokenizer.")
      .def_static(
          "from_file",
          [](const std::string& path) {
            std::shared_ptr<const Tokenizer> t;
            {
              py::gil_scoped_release release;
              t = Tokenizer::from_file(path);
            }
            return std::const_pointer_cast<Tokenizer>(t);
          },
          py::arg("path"), "Loads a Hugging Face tokenizer.json. Raises ModelError if invalid.")
      .def(
          "encode",
          [](const Tokenizer& t, const std::string& text) {
            py::gil_scoped_release release;
            return t.encode(text);
          },
          py::arg("text"), "Token ids of text (no special tokens added).")
      .def(
          "decode",
          [](const Tokenizer& t, const std::vector<int>& ids) {
            py::gil_scoped_release release;
            return t.decode(ids);
          },
          py::arg("ids"), "Text of the ids; ids >= eot are skipped.")
      .def("decode_with_timestamps", &Tokenizer::decode_with_timestamps, py::arg("ids"))
      .def("token_to_id", &Tokenizer::token_to_id, py::arg("token"), "Id of a token, -1 if absent.")
      .def("id_to_token", &Tokenizer::id_to_token, py::arg("id"),
           "Raw token string, '' if out of range.")
      .def_property_readonly("vocab_size", &Tokenizer::vocab_size)
      .def_property_readonly("model_vocab_size", &Tokenizer::model_vocab_size)
      .def_property_readonly("eot", &Tokenizer::eot)
      .def_property_readonly("sot", &Tokenizer::sot)
      .def_property_readonly("translate", &Tokenizer::translate)
      .def_property_readonly("transcribe", &Tokenizer::transcribe)
      .def_property_readonly("sot_lm", &Tokenizer::sot_lm)
      .def_property_readonly("sot_prev", &Tokenizer::sot_prev)
      .def_property_readonly("no_speech", &Tokenizer::no_speech)
      .def_property_readonly("no_timestamps", &Tokenizer::no_timestamps)
      .def_property_readonly("timestamp_begin", &Tokenizer::timestamp_begin)
      .def_property_readonly("multilingual", &Tokenizer::multilingual)
      .def("language_token", &Tokenizer::language_token, py::arg("code"))
      .def("language_codes", &Tokenizer::language_codes)
      .def("sot_sequence", &Tokenizer::sot_sequence, py::arg("language"), py::arg("task"))
      .def("non_speech_tokens", &Tokenizer::non_speech_tokens)
      .def_static(
          "pre_tokenize",
          [](const std::string& text) {
            std::vector<py::bytes> out;
            for (const std::string& piece : Tokenizer::pre_tokenize(text)) out.emplace_back(piece);
            return out;
          },
          py::arg("text"), "GPT-2 pre-tokenizer pieces of text, as UTF-8 bytes (for tests).");
}

}  // namespace speechcore::bindings
