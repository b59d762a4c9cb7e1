// Minimal assertion helpers for the C++ unit tests (each test file is one executable).
#pragma once

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

namespace sctest {

inline int& failures() {
  static int n = 0;
  return n;
}

struct Case {
  const char* name;
  std::function<void()> fn;
};
inline std::vector<Case>& cases() {
  static std::vector<Case> c;
  return c;
}
struct Register {
  Register(const char* name, std::function<void()> fn) { cases().push_back({name, std::move(fn)}); }
};

inline int run_all() {
  for (auto& c : cases()) {
    const int before = failures();
    try {
      c.fn();
    } catch (const std::exception& e) {
      std::printf("  exception: %s\n", e.what());
      ++failures();
    }
    std::printf("[%s] %s\n", failures() == before ? "ok" : "FAIL", c.name);
  }
  std::printf("%d failure(s)\n", failures());
  return failures() == 0 ? 0 : 1;
}

}  // namespace sctest

#define SC_TEST(name)                                                   \
  static void name();                                                   \
  static ::sctest::Register name##_reg(#name, name);                    \
  static void name()

#define EXPECT_TRUE(cond)                                                          \
  do {                                                                             \
    if (!(cond)) {                                                                 \
      std::printf("  %s:%d: expected %s\n", __FILE__, __LINE__, #cond);            \
      ++::sctest::failures();                                                      \
    }                                                                              \
  } while (0)

#define EXPECT_NEAR(a, b, tol)                                                     \
  do {                                                                             \
    const double _a = (a), _b = (b);                                               \
    if (!(std::fabs(_a - _b) <= (tol))) {                                          \
      std::printf("  %s:%d: %s=%g vs %s=%g (tol %g)\n", __FILE__, __LINE__, #a, _a, #b, _b, \
                  static_cast<double>(tol));                                       \
      ++::sctest::failures();                                                      \
    }                                                                              \
  } while (0)

#define EXPECT_THROWS(stmt)                                                        \
  do {                                                                             \
    bool _thrown = false;                                                          \
    try {                                                                          \
      stmt;                                                                        \
    } catch (const std::exception&) {                                              \
      _thrown = true;                                                              \
    }                                                                              \
    if (!_thrown) {                                                                \
      std::printf("  %s:%d: expected an exception from %s\n", __FILE__, __LINE__, #stmt); \
      ++::sctest::failures();                                                      \
    }                                                                              \
  } while (0)

#define SC_TEST_MAIN() \
  int main() { return ::sctest::run_all(); }
