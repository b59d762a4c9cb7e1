#include "io/unicode.h"

#include <algorithm>
#include <iterator>

namespace speechcore::io::unicode {

namespace {

struct Range {
  uint32_t first;
  uint32_t last;
  uint8_t kind;
};

constexpr Range kRanges[] = {
#include "io/unicode_ranges.inc"
};

bool is_white_space(uint32_t cp) {
  if (cp <= 0x20) return cp == 0x20 || (cp >= 0x09 && cp <= 0x0D);
  if (cp < 0x85) return false;
  return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) ||
         cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

// Length of the valid UTF-8 sequence at s[pos], 0 if ill-formed. When ill-formed, `subpart`
// receives the length of the maximal subpart (the longest prefix that could still start a
// valid sequence), at least 1.
size_t check_sequence(const unsigned char* s, size_t n, size_t pos, uint32_t& cp,
                      size_t& subpart) {
  const unsigned char b0 = s[pos];
  subpart = 1;
  if (b0 < 0x80) {
    cp = b0;
    return 1;
  }
  size_t len;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    len = 2;
    cp = b0 & 0x1F;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    len = 3;
    cp = b0 & 0x0F;
    if (b0 == 0xE0) lo = 0xA0;   // no overlong forms
    if (b0 == 0xED) hi = 0x9F;   // no surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    len = 4;
    cp = b0 & 0x07;
    if (b0 == 0xF0) lo = 0x90;   // no overlong forms
    if (b0 == 0xF4) hi = 0x8F;   // not above U+10FFFF
  } else {
    return 0;  // 0x80..0xC1, 0xF5..0xFF never start a sequence
  }
  for (size_t k = 1; k < len; ++k) {
    if (pos + k >= n) return 0;
    const unsigned char b = s[pos + k];
    const unsigned char l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
    if (b < l || b > h) return 0;
    cp = (cp << 6) | (b & 0x3F);
    subpart = k + 1;
  }
  return len;
}

}  // namespace

CharClass classify(uint32_t cp) {
  if (cp < 0x80) {
    if ((cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z')) return CharClass::kLetter;
    if (cp >= '0' && cp <= '9') return CharClass::kNumber;
    return is_white_space(cp) ? CharClass::kSpace : CharClass::kOther;
  }
  if (is_white_space(cp)) return CharClass::kSpace;
  // First range whose last >= cp.
  const Range* it = std::lower_bound(std::begin(kRanges), std::end(kRanges), cp,
                                     [](const Range& r, uint32_t v) { return r.last < v; });
  if (it != std::end(kRanges) && it->first <= cp) return static_cast<CharClass>(it->kind);
  return CharClass::kOther;
}

size_t decode_utf8(const std::string& s, size_t pos, uint32_t& cp) {
  size_t subpart;
  return check_sequence(reinterpret_cast<const unsigned char*>(s.data()), s.size(), pos, cp,
                        subpart);
}

void append_utf8(uint32_t cp, std::string& out) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::string utf8_lossy(const std::string& bytes) {
  const auto* s = reinterpret_cast<const unsigned char*>(bytes.data());
  const size_t n = bytes.size();
  std::string out;
  out.reserve(n + 8);
  size_t pos = 0;
  while (pos < n) {
    if (s[pos] < 0x80) {  // ASCII fast path
      out.push_back(static_cast<char>(s[pos++]));
      continue;
    }
    uint32_t cp;
    size_t subpart;
    const size_t len = check_sequence(s, n, pos, cp, subpart);
    if (len) {
      out.append(bytes, pos, len);
      pos += len;
    } else {
      out.append("\xEF\xBF\xBD");  // U+FFFD
      pos += subpart;
    }
  }
  return out;
}

}  // namespace speechcore::io::unicode
