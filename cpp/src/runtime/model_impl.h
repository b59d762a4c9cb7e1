// speechcore::Model's insides, shared by model.cc and the Engine (engine/engine.cc).
#pragma once

#include <memory>

#include "models/whisper/whisper_model.h"
#include "runtime/transcriber.h"
#include "speechcore/engine.h"

namespace speechcore {

struct Model::Impl {
  ModelInfo info;
  std::shared_ptr<const models::whisper::WhisperModel> whisper;
  std::unique_ptr<runtime::WhisperTranscriber> transcriber;
};

}  // namespace speechcore
