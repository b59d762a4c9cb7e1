// core::to_float32 / convert_to_float32 against the scalar reference conversions in core/half.h.
#include <cstring>
#include <vector>

#include "check.h"
#include "core/convert.h"
#include "core/half.h"
#include "speechcore/status.h"

using namespace speechcore;

static uint32_t float_bits(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}

SC_TEST(half_matches_reference_for_all_bit_patterns_and_odd_alignment) {
  // One byte of offset: the converter must cope with unaligned sources (checkpoint data).
  std::vector<uint8_t> bytes(1 + 2 * 65536);
  for (uint32_t i = 0; i < 65536; ++i) {
    const uint16_t h = static_cast<uint16_t>(i);
    std::memcpy(bytes.data() + 1 + 2 * i, &h, 2);
  }
  std::vector<float> out(65536);
  core::convert_to_float32(bytes.data() + 1, DType::kFloat16, 65536, out.data());
  int mismatches = 0;
  for (uint32_t i = 0; i < 65536; ++i)
    mismatches += float_bits(out[i]) != float_bits(core::half_to_float(static_cast<uint16_t>(i)));
  EXPECT_TRUE(mismatches == 0);

  core::convert_to_float32(bytes.data() + 1, DType::kBFloat16, 65536, out.data());
  mismatches = 0;
  for (uint32_t i = 0; i < 65536; ++i)
    mismatches += float_bits(out[i]) != float_bits(core::bf16_to_float(static_cast<uint16_t>(i)));
  EXPECT_TRUE(mismatches == 0);
}

SC_TEST(to_float32_handles_strided_views_and_refuses_integers) {
  Tensor h = Tensor::empty({3, 4}, DType::kFloat16);
  for (int i = 0; i < 12; ++i) h.data<uint16_t>()[i] = core::float_to_half(static_cast<float>(i) - 5.5f);
  const Tensor col = h.narrow(1, 1, 2);  // [3, 2], not contiguous
  const Tensor f = core::to_float32(col);
  EXPECT_TRUE(f.dtype() == DType::kFloat32 && f.shape() == Shape({3, 2}) && f.is_contiguous());
  for (int r = 0; r < 3; ++r)
    for (int c = 0; c < 2; ++c) EXPECT_NEAR(f.data<float>()[r * 2 + c], r * 4 + c + 1 - 5.5, 0.0);

  Tensor x = Tensor::empty({5}, DType::kFloat32);
  for (int i = 0; i < 5; ++i) x.data<float>()[i] = 0.25f * i;
  const Tensor y = core::to_float32(x);
  EXPECT_TRUE(y.raw() != x.raw());  // always a new tensor
  for (int i = 0; i < 5; ++i) EXPECT_NEAR(y.data<float>()[i], 0.25 * i, 0.0);

  const Tensor scalar = core::to_float32(Tensor::zeros({}, DType::kBFloat16));
  EXPECT_TRUE(scalar.rank() == 0 && scalar.data<float>()[0] == 0.0f);
  EXPECT_TRUE(core::to_float32(Tensor::zeros({0, 3}, DType::kFloat16)).numel() == 0);
  EXPECT_THROWS(core::to_float32(Tensor::zeros({2}, DType::kInt32)));
  EXPECT_THROWS(core::to_float32(Tensor()));
}

SC_TEST_MAIN()
