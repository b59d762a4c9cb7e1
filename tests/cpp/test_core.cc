// Tensor, allocator, workspace, thread pool and JSON unit tests.
#include <atomic>
#include <cstring>

#include "check.h"
#include "core/allocator.h"
#include "core/half.h"
#include "core/thread_pool.h"
#include "core/workspace.h"
#include "io/json.h"
#include "speechcore/status.h"
#include "speechcore/tensor.h"

using namespace speechcore;

SC_TEST(tensor_views) {
  Tensor t = Tensor::zeros({2, 3, 4}, DType::kFloat32);
  EXPECT_TRUE(t.numel() == 24 && t.nbytes() == 96 && t.is_contiguous());
  for (int i = 0; i < 24; ++i) t.data<float>()[i] = static_cast<float>(i);
  Tensor r = t.reshape({6, -1});
  EXPECT_TRUE(r.dim(0) == 6 && r.dim(1) == 4 && r.data<float>() == t.data<float>());
  Tensor s = t.select(1);
  EXPECT_TRUE(s.rank() == 2 && s.data<float>()[0] == 12.0f);
  Tensor n = t.narrow(2, 1, 2);  // non-contiguous
  EXPECT_TRUE(!n.is_contiguous());
  Tensor c = n.clone();
  EXPECT_TRUE(c.is_contiguous() && c.data<float>()[0] == 1.0f && c.data<float>()[1] == 2.0f &&
              c.data<float>()[2] == 5.0f);
  EXPECT_THROWS(t.reshape({5, 5}));
  EXPECT_THROWS(Tensor::empty({-1}, DType::kFloat32));
}

SC_TEST(allocator_caches_and_counts) {
  core::HostCachingAllocator a;
  void* p = a.allocate(1000);
  EXPECT_TRUE(reinterpret_cast<uintptr_t>(p) % 64 == 0);
  auto s = a.stats();
  EXPECT_TRUE(s.bytes_in_use == 1024 && s.num_system_allocs == 1);
  a.free(p);
  void* q = a.allocate(900);  // same size class: served from the cache
  s = a.stats();
  EXPECT_TRUE(q == p && s.num_cache_hits == 1 && s.num_system_allocs == 1);
  a.free(q);
  EXPECT_TRUE(a.stats().bytes_cached == 1024 && a.stats().bytes_in_use == 0);
  a.clear_cache();
  EXPECT_TRUE(a.stats().bytes_cached == 0);
  EXPECT_TRUE(core::HostCachingAllocator::size_class(3 << 20) == size_t(3) << 20);
}

SC_TEST(workspace_grows_to_high_water) {
  core::HostCachingAllocator a;
  core::Workspace ws(a, 256);
  ws.allocate(200);
  ws.allocate(500);  // overflow
  EXPECT_TRUE(ws.high_water() >= 700);
  ws.reset();
  EXPECT_TRUE(ws.capacity() >= 700 && ws.used() == 0);
  const auto allocs = a.stats().num_allocs;
  ws.allocate(200);
  ws.allocate(500);  // fits now: no allocator call
  EXPECT_TRUE(a.stats().num_allocs == allocs);
}

SC_TEST(thread_pool_covers_range_and_rethrows) {
  core::ThreadPool pool(3);
  std::vector<int> hits(1000, 0);
  for (int rep = 0; rep < 50; ++rep)
    pool.parallel_for(1000, 7, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) hits[i]++;
    });
  bool all = true;
  for (int h : hits) all = all && h == 50;
  EXPECT_TRUE(all);
  EXPECT_THROWS(pool.parallel_for(100, 1, [](int64_t b, int64_t) {
    if (b > 0) throw std::runtime_error("boom");
  }));
  std::atomic<int> n{0};
  pool.parallel_for(10, 1, [&](int64_t b, int64_t e) { n += static_cast<int>(e - b); });
  EXPECT_TRUE(n == 10);
}

SC_TEST(half_conversions) {
  const float vals[] = {0.0f, 1.0f, -2.5f, 65504.0f, 6.1035156e-05f, 5.9604645e-08f, 0.333251953125f};
  for (float v : vals) EXPECT_NEAR(core::half_to_float(core::float_to_half(v)), v, 0.0);
  EXPECT_TRUE(std::isinf(core::half_to_float(core::float_to_half(1e6f))));
  EXPECT_NEAR(core::bf16_to_float(core::float_to_bf16(1.0f)), 1.0, 0.0);
  EXPECT_NEAR(core::bf16_to_float(core::float_to_bf16(3.14159f)), 3.140625, 0.0);
}

SC_TEST(json_parses_and_reports_errors) {
  auto v = io::parse_json(R"({"a": [1, 2.5, -3e2], "b": {"c": "x\u00e9\ud83d\ude00"}, "t": true, "n": null})");
  EXPECT_TRUE(v.find("a")->as_array().size() == 3);
  EXPECT_NEAR(v.find("a")->as_array()[2].as_number(), -300.0, 0.0);
  EXPECT_TRUE(v.find("b")->find("c")->as_string() == "x\xc3\xa9\xf0\x9f\x98\x80");
  EXPECT_TRUE(v.get_bool("t", false) && v.find("n")->is_null() && v.get_int("zz", 7) == 7);
  EXPECT_THROWS(io::parse_json("{\"a\": [1, 2"));
  EXPECT_THROWS(io::parse_json("{\"a\": 1} x"));
  EXPECT_THROWS(v.find("a")->as_string());
}

SC_TEST_MAIN()
