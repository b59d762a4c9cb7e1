// Unicode helpers for the byte-level BPE tokenizer: UTF-8 decoding and the character classes
// the GPT-2 pre-tokenizer regex needs (\p{L}, \p{N}, \s).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace speechcore::io::unicode {

enum class CharClass : uint8_t { kOther = 0, kLetter = 1, kNumber = 2, kSpace = 3 };

// Class of a code point. Letters/numbers come from a generated table of the Unicode 14.0
// general categories L* and N* (unicode_ranges.inc, plus the CJK ideographs of Unicode 15.0/15.1);
// whitespace is the Unicode White_Space property (what Oniguruma's \s matches in UTF-8 mode).
// Approximation: the other letters/digits assigned after Unicode 14.0 (about 5,000 code points
// of historic or minority scripts: Kawi, Garay, Egyptian hieroglyphs ext-A, ...) are kOther,
// while HF `tokenizers` 0.23 (Oniguruma with Unicode 16.0) treats them as letters/numbers. All
// code points assigned in Unicode 14.0 classify exactly as in HF (checked by the tests).
CharClass classify(uint32_t cp);

// Decodes one UTF-8 sequence at s[pos]. Returns its length in bytes (1..4) and sets `cp`; on an
// ill-formed sequence returns 0 (the caller treats the byte at `pos` on its own).
size_t decode_utf8(const std::string& s, size_t pos, uint32_t& cp);

// Appends the UTF-8 encoding of `cp` to `out`.
void append_utf8(uint32_t cp, std::string& out);

// Converts arbitrary bytes to valid UTF-8, replacing each maximal ill-formed subpart with U+FFFD
// (the Unicode "substitution of maximal subparts" practice; same as Rust's
// String::from_utf8_lossy and Python's bytes.decode("utf-8", "replace")).
std::string utf8_lossy(const std::string& bytes);

}  // namespace speechcore::io::unicode
