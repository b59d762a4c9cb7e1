// Umbrella header for the speechcore C++ API.
#pragma once

#include "speechcore/audio.h"
#include "speechcore/engine.h"
#include "speechcore/options.h"
#include "speechcore/results.h"
#include "speechcore/status.h"
#include "speechcore/tensor.h"

#define SPEECHCORE_VERSION "0.1.0"
