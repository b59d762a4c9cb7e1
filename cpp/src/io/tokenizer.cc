// Loading, decoding and special tokens of the Whisper tokenizer. Encoding (pre-tokenizer +
// BPE) lives in tokenizer_encode.cc.
#include "io/tokenizer.h"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "core/status.h"
#include "io/json.h"
#include "io/unicode.h"

namespace speechcore::io {

namespace {

constexpr int kMaxVocab = 10'000'000;  // sanity bound on token ids
constexpr int kNumTimestamps = 1501;   // <|0.00|> .. <|30.00|>

// GPT-2's reversible byte <-> printable character map: printable Latin-1 bytes map to
// themselves, the other 68 bytes to U+0100 + n in byte order.
struct ByteLevelMap {
  uint32_t byte_to_char[256];
  int char_to_byte[512];  // all mapped chars are < U+0144; -1 = not a byte char

  ByteLevelMap() {
    std::fill(std::begin(char_to_byte), std::end(char_to_byte), -1);
    int extra = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      byte_to_char[b] = printable ? static_cast<uint32_t>(b) : static_cast<uint32_t>(256 + extra++);
      char_to_byte[byte_to_char[b]] = b;
    }
  }
};

const ByteLevelMap& byte_level_map() {
  static const ByteLevelMap map;
  return map;
}

// Bytes a token stands for: each character mapped back through the byte-level map; a token
// with any other character (an added token) stands for its own UTF-8 text, as in HF.
std::string token_bytes(const std::string& token) {
  const ByteLevelMap& map = byte_level_map();
  std::string out;
  out.reserve(token.size());
  size_t pos = 0;
  while (pos < token.size()) {
    uint32_t cp;
    const size_t len = unicode::decode_utf8(token, pos, cp);
    if (len == 0 || cp >= 512 || map.char_to_byte[cp] < 0) return token;
    out.push_back(static_cast<char>(map.char_to_byte[cp]));
    pos += len;
  }
  return out;
}

bool is_language_token(const std::string& s) {
  if (s.size() < 6 || s.size() > 7 || s.compare(0, 2, "<|") != 0 ||
      s.compare(s.size() - 2, 2, "|>") != 0)
    return false;
  for (size_t i = 2; i + 2 < s.size(); ++i)
    if (s[i] < 'a' || s[i] > 'z') return false;
  return true;
}

}  // namespace

std::shared_ptr<const Tokenizer> Tokenizer::from_file(const std::string& tokenizer_json) {
  std::ifstream f(tokenizer_json, std::ios::binary);
  SC_CHECK(f.good(), ErrorCode::kInvalidModel, tokenizer_json,
           ": tokenizer file not found or not readable");
  std::ostringstream ss;
  ss << f.rdbuf();
  SC_CHECK(!f.bad(), ErrorCode::kInvalidModel, tokenizer_json, ": read error");
  return from_json(ss.str(), tokenizer_json);
}

std::shared_ptr<const Tokenizer> Tokenizer::from_json(const std::string& json_text,
                                                      const std::string& source_name) {
  std::shared_ptr<Tokenizer> tok(new Tokenizer());
  tok->source_ = source_name;
  try {
    tok->load(json_text);
  } catch (const Error& e) {
    // Messages may quote bytes of a corrupt file: keep them valid UTF-8 for Python.
    const ErrorCode code =
        e.code() == ErrorCode::kOutOfMemory ? ErrorCode::kOutOfMemory : ErrorCode::kInvalidModel;
    const std::string what = e.what();
    const bool prefixed = what.compare(0, source_name.size() + 1, source_name + ":") == 0;
    throw Error(code, unicode::utf8_lossy(prefixed ? what : source_name + ": " + what));
  }
  return tok;
}

void Tokenizer::load(const std::string& json_text) {
  const JsonValue root = parse_json(json_text, "tokenizer JSON");
  SC_CHECK(root.is_object(), ErrorCode::kInvalidModel, source_, ": not a JSON object");
  const JsonValue* model = root.find("model");
  SC_CHECK(model && model->is_object(), ErrorCode::kInvalidModel, source_,
           ": missing \"model\" object");
  const std::string type = model->get_string("type", "BPE");
  SC_CHECK(type == "BPE", ErrorCode::kInvalidModel, source_, ": model type is \"", type,
           "\", expected \"BPE\"");
  const JsonValue* vocab = model->find("vocab");
  SC_CHECK(vocab && vocab->is_object() && vocab->size() > 0, ErrorCode::kInvalidModel, source_,
           ": missing or empty \"model.vocab\"");
  const JsonValue* merges = model->find("merges");
  SC_CHECK(merges && merges->is_array(), ErrorCode::kInvalidModel, source_,
           ": missing \"model.merges\" array");
  const JsonValue* added = root.find("added_tokens");
  SC_CHECK(!added || added->is_array() || added->is_null(), ErrorCode::kInvalidModel, source_,
           ": \"added_tokens\" is not an array");

  auto check_id = [&](int64_t id, const std::string& token) {
    SC_CHECK(id >= 0 && id < kMaxVocab, ErrorCode::kInvalidModel, source_, ": token \"", token,
             "\" has invalid id ", id);
    return static_cast<int>(id);
  };

  // Vocabulary and added tokens.
  int max_id = -1;
  token_to_id_.reserve(vocab->size() + 256);
  for (const auto& kv : vocab->as_object()) {
    const int id = check_id(kv.second.as_int(), kv.first);
    token_to_id_[kv.first] = id;
    max_id = std::max(max_id, id);
  }
  if (added && added->is_array()) {
    for (const JsonValue& t : added->as_array()) {
      SC_CHECK(t.is_object(), ErrorCode::kInvalidModel, source_, ": added token is not an object");
      const JsonValue* id = t.find("id");
      const JsonValue* content = t.find("content");
      SC_CHECK(id && id->is_number() && content && content->is_string() &&
                   !content->as_string().empty(),
               ErrorCode::kInvalidModel, source_, ": added token without id or content");
      AddedToken a{content->as_string(), check_id(id->as_int(), content->as_string()),
                   t.get_bool("special", false)};
      max_id = std::max(max_id, a.id);
      added_.push_back(std::move(a));
    }
  }
  id_to_token_.assign(static_cast<size_t>(max_id) + 1, std::string());
  is_special_.assign(id_to_token_.size(), 0);
  for (const auto& kv : vocab->as_object()) id_to_token_[token_to_id_[kv.first]] = kv.first;
  for (const AddedToken& a : added_) {
    id_to_token_[a.id] = a.content;
    token_to_id_[a.content] = a.id;  // added tokens take precedence, as in HF
    is_special_[a.id] = a.special ? 1 : 0;
    added_first_byte_[static_cast<unsigned char>(a.content[0])] = true;
  }
  std::sort(added_.begin(), added_.end(),
            [](const AddedToken& x, const AddedToken& y) { return x.content < y.content; });
  id_to_bytes_.resize(id_to_token_.size());
  for (size_t i = 0; i < id_to_token_.size(); ++i) id_to_bytes_[i] = token_bytes(id_to_token_[i]);

  // The 256 single-byte tokens BPE starts from.
  const ByteLevelMap& map = byte_level_map();
  for (int b = 0; b < 256; ++b) {
    std::string ch;
    unicode::append_utf8(map.byte_to_char[b], ch);
    const auto it = token_to_id_.find(ch);
    SC_CHECK(it != token_to_id_.end(), ErrorCode::kInvalidModel, source_,
             ": vocab lacks the byte-level token for byte ", b);
    byte_to_id_[b] = it->second;
  }

  // Merges: "left right" strings (older files) or ["left", "right"] pairs (newer files).
  merges_.reserve(merges->size() * 2);
  int rank = 0;
  for (const JsonValue& m : merges->as_array()) {
    std::string left, right;
    if (m.is_string()) {
      const std::string& s = m.as_string();
      const size_t space = s.find(' ');
      SC_CHECK(space != std::string::npos && s.find(' ', space + 1) == std::string::npos,
               ErrorCode::kInvalidModel, source_, ": merge ", rank, " \"", s,
               "\" is not two tokens separated by a space");
      left = s.substr(0, space);
      right = s.substr(space + 1);
    } else {
      SC_CHECK(m.is_array() && m.size() == 2 && m.as_array()[0].is_string() &&
                   m.as_array()[1].is_string(),
               ErrorCode::kInvalidModel, source_, ": merge ", rank,
               " is neither a string nor a pair of strings");
      left = m.as_array()[0].as_string();
      right = m.as_array()[1].as_string();
    }
    const auto l = token_to_id_.find(left), r = token_to_id_.find(right),
               n = token_to_id_.find(left + right);
    SC_CHECK(l != token_to_id_.end() && r != token_to_id_.end() && n != token_to_id_.end(),
             ErrorCode::kInvalidModel, source_, ": merge ", rank, " (\"", left, "\", \"", right,
             "\") uses a token missing from the vocab");
    merges_[pair_key(l->second, r->second)] = MergeInfo{rank, n->second};  // later wins, as HF
    ++rank;
  }
  find_special_tokens();
}

void Tokenizer::find_special_tokens() {
  eot_ = token_to_id("<|endoftext|>");
  sot_ = token_to_id("<|startoftranscript|>");
  translate_ = token_to_id("<|translate|>");
  transcribe_ = token_to_id("<|transcribe|>");
  sot_lm_ = token_to_id("<|startoflm|>");
  sot_prev_ = token_to_id("<|startofprev|>");
  no_speech_ = token_to_id("<|nospeech|>");
  if (no_speech_ < 0) no_speech_ = token_to_id("<|nocaptions|>");
  no_timestamps_ = token_to_id("<|notimestamps|>");
  SC_CHECK(eot_ >= 0 && sot_ >= 0 && no_timestamps_ >= 0, ErrorCode::kInvalidModel, source_,
           ": not a Whisper tokenizer (needs <|endoftext|>, <|startoftranscript|> and "
           "<|notimestamps|>)");
  multilingual_ = model_vocab_size() >= 51865;
  const int end = translate_ >= 0 ? translate_ : vocab_size();
  for (int id = sot_ + 1; id < end; ++id) {
    const std::string& t = id_to_token_[id];
    if (!is_language_token(t)) {
      if (translate_ < 0) break;
      continue;
    }
    languages_.emplace_back(t.substr(2, t.size() - 4), id);
  }
}

int Tokenizer::model_vocab_size() const {
  return std::max(vocab_size(), timestamp_begin() + kNumTimestamps);
}

int Tokenizer::token_to_id(const std::string& token) const {
  const auto it = token_to_id_.find(token);
  return it == token_to_id_.end() ? -1 : it->second;
}

std::string Tokenizer::id_to_token(int id) const {
  return id >= 0 && id < vocab_size() ? id_to_token_[id] : std::string();
}

std::string Tokenizer::decode(const std::vector<int>& ids) const {
  std::string bytes;
  for (const int id : ids) {
    SC_CHECK(id >= 0, ErrorCode::kInvalidArgument, "decode: negative token id ", id);
    if (id < eot_ && id < vocab_size() && !is_special_[id]) bytes += id_to_bytes_[id];
  }
  return unicode::utf8_lossy(bytes);
}

std::string Tokenizer::decode_with_timestamps(const std::vector<int>& ids) const {
  std::string out;
  std::vector<int> run;
  for (const int id : ids) {
    if (id >= timestamp_begin()) {
      out += decode(run);
      run.clear();
      char buf[32];
      std::snprintf(buf, sizeof(buf), "<|%.2f|>", (id - timestamp_begin()) * 0.02);
      out += buf;
    } else {
      run.push_back(id);
    }
  }
  return out + decode(run);
}

int Tokenizer::language_token(const std::string& code) const {
  for (const auto& lang : languages_)
    if (lang.first == code) return lang.second;
  return -1;
}

std::vector<std::string> Tokenizer::language_codes() const {
  if (!multilingual_) return {"en"};
  std::vector<std::string> codes;
  for (const auto& lang : languages_) codes.push_back(lang.first);
  return codes;
}

std::vector<int> Tokenizer::language_tokens() const {
  std::vector<int> ids;
  for (const std::string& code : language_codes()) ids.push_back(language_token(code));
  return ids;
}

std::string Tokenizer::language_code(int token) const {
  for (const auto& lang : languages_)
    if (lang.second == token) return lang.first;
  return "";
}

std::vector<int> Tokenizer::sot_sequence(const std::string& language,
                                         const std::string& task) const {
  if (!multilingual_) return {sot_};
  const int task_id = task == "transcribe" ? transcribe_ : task == "translate" ? translate_ : -1;
  SC_CHECK(task_id >= 0, ErrorCode::kInvalidArgument, "'", task,
           "' is not a valid task (accepted tasks: transcribe, translate)");
  const int lang_id = language_token(language);
  if (lang_id < 0) {
    std::string all;
    for (const auto& lang : languages_) all += (all.empty() ? "" : ", ") + lang.first;
    throw_error(ErrorCode::kInvalidArgument, "'", language,
                "' is not a valid language code (accepted language codes: ", all, ")");
  }
  return {sot_, lang_id, task_id};
}

std::vector<int> Tokenizer::non_speech_tokens() const {
  // Symbols that mark speaker tags or non-speech annotations; basic punctuation stays allowed.
  std::vector<std::string> symbols;
  for (const char c : std::string("\"#()*+/:;<=>@[\\]^_`{|}~")) symbols.emplace_back(1, c);
  for (const char* s : {"「", "」", "『", "』", "<<", ">>", "<<<", ">>>", "--", "---", "-(", "-[",
                        "('", "(\"", "((", "))", "(((", ")))", "[[", "]]", "{{", "}}", "♪♪",
                        "♪♪♪"})
    symbols.emplace_back(s);
  // Musical symbols U+2669..U+266F: possibly several tokens each; their first token (shared
  // leading UTF-8 bytes within U+2640..U+267F) is safe to suppress.
  const std::vector<std::string> misc = {"♩", "♪", "♫", "♬", "♭", "♮", "♯"};

  std::vector<int> result;
  // Hyphens and single quotes stay allowed between words, not at the start of one.
  for (const char* s : {" -", " '"}) {
    const std::vector<int> t = encode(s);
    if (!t.empty()) result.push_back(t[0]);
  }
  auto add = [&](const std::string& symbol, bool always_first) {
    for (const std::string& text : {symbol, " " + symbol}) {
      const std::vector<int> t = encode(text);
      if (t.size() == 1 || (always_first && !t.empty())) result.push_back(t[0]);
    }
  };
  for (const std::string& s : symbols) add(s, false);
  for (const std::string& s : misc) add(s, true);
  std::sort(result.begin(), result.end());
  result.erase(std::unique(result.begin(), result.end()), result.end());
  return result;
}

}  // namespace speechcore::io
