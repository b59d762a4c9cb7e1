// Internal error helpers: throw speechcore::Error with a formatted message.
#pragma once

#include <sstream>
#include <string>
#include <utility>

#include "speechcore/status.h"

namespace speechcore {

namespace detail {
inline void append(std::ostringstream&) {}
template <typename T, typename... Rest>
void append(std::ostringstream& os, T&& first, Rest&&... rest) {
  os << std::forward<T>(first);
  append(os, std::forward<Rest>(rest)...);
}
}  // namespace detail

template <typename... Args>
[[noreturn]] void throw_error(ErrorCode code, Args&&... args) {
  std::ostringstream os;
  detail::append(os, std::forward<Args>(args)...);
  throw Error(code, os.str());
}

}  // namespace speechcore

// SC_CHECK(cond, code, message parts...): throw when cond is false.
#define SC_CHECK(cond, code, ...)                                 \
  do {                                                            \
    if (!(cond)) ::speechcore::throw_error(code, __VA_ARGS__);    \
  } while (0)
// Internal invariants (bugs if they fail).
#define SC_ASSERT(cond)                                                                   \
  do {                                                                                    \
    if (!(cond))                                                                          \
      ::speechcore::throw_error(::speechcore::ErrorCode::kInternal, "internal check failed: ", \
                                #cond, " at ", __FILE__, ":", __LINE__);                  \
  } while (0)
