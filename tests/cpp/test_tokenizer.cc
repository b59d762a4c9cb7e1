// Unit tests of the UTF-8 helpers, the pre-tokenizer and a hand-made BPE tokenizer (no files).
#include <cstdio>
#include <string>
#include <vector>

#include "check.h"
#include "io/tokenizer.h"
#include "io/unicode.h"
#include "speechcore/status.h"

using speechcore::io::Tokenizer;
namespace unicode = speechcore::io::unicode;

static const std::string kFFFD = "\xEF\xBF\xBD";

SC_TEST(utf8_lossy_replaces_maximal_subparts) {
  EXPECT_TRUE(unicode::utf8_lossy("abc") == "abc");
  EXPECT_TRUE(unicode::utf8_lossy("\xC3\xA9") == "\xC3\xA9");            // é
  EXPECT_TRUE(unicode::utf8_lossy("\xE2\x82") == kFFFD);                 // truncated 3-byte
  EXPECT_TRUE(unicode::utf8_lossy("\xE2\x82" "A") == kFFFD + "A");
  EXPECT_TRUE(unicode::utf8_lossy("\xF0\x80") == kFFFD + kFFFD);         // overlong lead
  EXPECT_TRUE(unicode::utf8_lossy("\xED\xA0\x80") == kFFFD + kFFFD + kFFFD);  // surrogate
  EXPECT_TRUE(unicode::utf8_lossy("\xC0\xAF") == kFFFD + kFFFD);
  EXPECT_TRUE(unicode::utf8_lossy("\xF4\x90\x80\x80") == kFFFD + kFFFD + kFFFD + kFFFD);
  EXPECT_TRUE(unicode::utf8_lossy("\xF0\x9F\x98") == kFFFD);             // truncated emoji
  EXPECT_TRUE(unicode::utf8_lossy("\xF0\x9F\x98\x80") == "\xF0\x9F\x98\x80");
}

SC_TEST(classify_code_points) {
  using unicode::CharClass;
  EXPECT_TRUE(unicode::classify('a') == CharClass::kLetter);
  EXPECT_TRUE(unicode::classify('7') == CharClass::kNumber);
  EXPECT_TRUE(unicode::classify('\n') == CharClass::kSpace);
  EXPECT_TRUE(unicode::classify(0x1C) == CharClass::kOther);   // not White_Space
  EXPECT_TRUE(unicode::classify(0x3000) == CharClass::kSpace);
  EXPECT_TRUE(unicode::classify(0x00E9) == CharClass::kLetter);  // é
  EXPECT_TRUE(unicode::classify(0x0416) == CharClass::kLetter);  // Ж
  EXPECT_TRUE(unicode::classify(0x4E2D) == CharClass::kLetter);  // 中
  EXPECT_TRUE(unicode::classify(0x0663) == CharClass::kNumber);  // Arabic-Indic 3
  EXPECT_TRUE(unicode::classify(0x00BD) == CharClass::kNumber);  // ½
  EXPECT_TRUE(unicode::classify(0x0301) == CharClass::kOther);   // combining acute
  EXPECT_TRUE(unicode::classify(0x1F600) == CharClass::kOther);  // emoji
}

SC_TEST(pre_tokenize_gpt2_regex) {
  const std::vector<std::string> got = Tokenizer::pre_tokenize("I'm  here,\n\n it's 42!! ");
  const std::vector<std::string> want = {"I", "'m", " ", " here", ",", "\n\n", " it", "'s",
                                         " 42", "!!", " "};
  EXPECT_TRUE(got == want);
  EXPECT_TRUE(Tokenizer::pre_tokenize("").empty());
  EXPECT_TRUE((Tokenizer::pre_tokenize("a\xFF" "b") == std::vector<std::string>{"a", "\xFF", "b"}));
}

// 256 byte tokens (GPT-2 byte-level characters), "ab", "abc", and Whisper's must-have specials.
static std::string small_tokenizer_json() {
  std::string vocab;
  int extra = 0;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    const unsigned cp = printable ? b : 256 + extra++;
    char buf[16];
    std::snprintf(buf, sizeof(buf), "\"\\u%04X\"", cp);
    vocab += std::string(buf) + ":" + std::to_string(b) + ",";
  }
  vocab += "\"ab\":256,\"abc\":257";
  return "{\"model\":{\"type\":\"BPE\",\"vocab\":{" + vocab +
         "},\"merges\":[\"a b\",\"ab c\"]},\"added_tokens\":["
         "{\"id\":258,\"content\":\"<|endoftext|>\",\"special\":true},"
         "{\"id\":259,\"content\":\"<|startoftranscript|>\",\"special\":true},"
         "{\"id\":260,\"content\":\"<|notimestamps|>\",\"special\":true}]}";
}

SC_TEST(small_tokenizer_roundtrip) {
  const auto tok = Tokenizer::from_json(small_tokenizer_json(), "small");
  EXPECT_TRUE(tok->vocab_size() == 261);
  EXPECT_TRUE(tok->eot() == 258 && tok->sot() == 259 && tok->timestamp_begin() == 261);
  EXPECT_TRUE(!tok->multilingual());
  EXPECT_TRUE((tok->encode("abcab<|endoftext|>x") == std::vector<int>{257, 256, 258, 'x'}));
  EXPECT_TRUE(tok->decode({257, 32, 256, 258, 5000}) == "abc ab");
  EXPECT_TRUE(tok->decode({0xC3}) == kFFFD);
  EXPECT_TRUE((tok->sot_sequence("de", "translate") == std::vector<int>{259}));
  EXPECT_THROWS(tok->decode({-1}));
}

SC_TEST(bad_json_is_invalid_model) {
  for (const std::string& text : {std::string("{"), std::string("{}"),
                                  std::string("{\"model\":{\"vocab\":{},\"merges\":[]}}")}) {
    bool ok = false;
    try {
      Tokenizer::from_json(text, "bad.json");
    } catch (const speechcore::Error& e) {
      ok = e.code() == speechcore::ErrorCode::kInvalidModel &&
           std::string(e.what()).rfind("bad.json:", 0) == 0;
    }
    EXPECT_TRUE(ok);
  }
  EXPECT_THROWS(Tokenizer::from_file("/nonexistent/tokenizer.json"));
}

SC_TEST_MAIN()
