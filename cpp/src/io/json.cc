#include "io/json.h"

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "core/status.h"

namespace speechcore::io {

namespace {
const char* type_name(JsonValue::Type t) {
  switch (t) {
    case JsonValue::Type::kNull: return "null";
    case JsonValue::Type::kBool: return "bool";
    case JsonValue::Type::kNumber: return "number";
    case JsonValue::Type::kString: return "string";
    case JsonValue::Type::kArray: return "array";
    case JsonValue::Type::kObject: return "object";
  }
  return "?";
}
[[noreturn]] void type_error(JsonValue::Type want, JsonValue::Type got) {
  throw_error(ErrorCode::kInvalidArgument, "JSON value is a ", type_name(got), ", expected a ",
              type_name(want));
}
}  // namespace

bool JsonValue::as_bool() const {
  if (type_ != Type::kBool) type_error(Type::kBool, type_);
  return bool_;
}
double JsonValue::as_number() const {
  if (type_ != Type::kNumber) type_error(Type::kNumber, type_);
  return number_;
}
int64_t JsonValue::as_int() const {
  const double v = as_number();
  SC_CHECK(std::floor(v) == v, ErrorCode::kInvalidArgument, "JSON number ", v, " is not an integer");
  return static_cast<int64_t>(v);
}
const std::string& JsonValue::as_string() const {
  if (type_ != Type::kString) type_error(Type::kString, type_);
  return string_;
}
const std::vector<JsonValue>& JsonValue::as_array() const {
  if (type_ != Type::kArray) type_error(Type::kArray, type_);
  return array_;
}
const std::vector<std::pair<std::string, JsonValue>>& JsonValue::as_object() const {
  if (type_ != Type::kObject) type_error(Type::kObject, type_);
  return object_;
}
const JsonValue* JsonValue::find(const std::string& key) const {
  if (type_ != Type::kObject) return nullptr;
  if (index_) {
    auto it = index_->find(key);
    return it == index_->end() ? nullptr : &object_[it->second].second;
  }
  for (const auto& kv : object_)
    if (kv.first == key) return &kv.second;
  return nullptr;
}
size_t JsonValue::size() const {
  if (type_ == Type::kArray) return array_.size();
  if (type_ == Type::kObject) return object_.size();
  return 0;
}
int64_t JsonValue::get_int(const std::string& key, int64_t fallback) const {
  const JsonValue* v = find(key);
  return v && v->is_number() ? v->as_int() : fallback;
}
double JsonValue::get_number(const std::string& key, double fallback) const {
  const JsonValue* v = find(key);
  return v && v->is_number() ? v->as_number() : fallback;
}
std::string JsonValue::get_string(const std::string& key, const std::string& fallback) const {
  const JsonValue* v = find(key);
  return v && v->is_string() ? v->as_string() : fallback;
}
bool JsonValue::get_bool(const std::string& key, bool fallback) const {
  const JsonValue* v = find(key);
  return v && v->is_bool() ? v->as_bool() : fallback;
}

class JsonParser {
 public:
  JsonParser(const std::string& text, const std::string& name) : s_(text), name_(name) {}

  JsonValue parse_document() {
    skip_ws();
    JsonValue v = parse_value(0);
    skip_ws();
    if (pos_ != s_.size()) fail("unexpected trailing characters");
    return v;
  }

 private:
  [[noreturn]] void fail(const std::string& what) {
    size_t line = 1, col = 1;
    for (size_t i = 0; i < pos_ && i < s_.size(); ++i) {
      if (s_[i] == '\n') { ++line; col = 1; } else { ++col; }
    }
    throw_error(ErrorCode::kInvalidArgument, "invalid JSON in ", name_, " at line ", line,
                ", column ", col, ": ", what);
  }
  void skip_ws() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\n' || s_[pos_] == '\r' || s_[pos_] == '\t')) ++pos_;
  }
  char peek() { return pos_ < s_.size() ? s_[pos_] : '\0'; }
  void expect(char c) {
    if (peek() != c) fail(std::string("expected '") + c + "'");
    ++pos_;
  }
  bool match(const char* lit) {
    size_t n = std::char_traits<char>::length(lit);
    if (s_.compare(pos_, n, lit) == 0) { pos_ += n; return true; }
    return false;
  }

  JsonValue parse_value(int depth) {
    if (depth > 512) fail("nesting too deep");
    JsonValue v;
    const char c = peek();
    if (c == '{') {
      v.type_ = JsonValue::Type::kObject;
      ++pos_;
      skip_ws();
      if (peek() == '}') { ++pos_; return v; }
      for (;;) {
        skip_ws();
        if (peek() != '"') fail("expected a string key");
        std::string key = parse_string();
        skip_ws();
        expect(':');
        skip_ws();
        v.object_.emplace_back(std::move(key), parse_value(depth + 1));
        skip_ws();
        if (peek() == ',') { ++pos_; continue; }
        expect('}');
        break;
      }
      if (v.object_.size() > 16) {
        v.index_ = std::make_shared<std::map<std::string, size_t>>();
        for (size_t i = 0; i < v.object_.size(); ++i) (*v.index_)[v.object_[i].first] = i;
      }
    } else if (c == '[') {
      v.type_ = JsonValue::Type::kArray;
      ++pos_;
      skip_ws();
      if (peek() == ']') { ++pos_; return v; }
      for (;;) {
        skip_ws();
        v.array_.push_back(parse_value(depth + 1));
        skip_ws();
        if (peek() == ',') { ++pos_; continue; }
        expect(']');
        break;
      }
    } else if (c == '"') {
      v.type_ = JsonValue::Type::kString;
      v.string_ = parse_string();
    } else if (match("true")) {
      v.type_ = JsonValue::Type::kBool;
      v.bool_ = true;
    } else if (match("false")) {
      v.type_ = JsonValue::Type::kBool;
    } else if (match("null")) {
      v.type_ = JsonValue::Type::kNull;
    } else if (c == '-' || (c >= '0' && c <= '9')) {
      v.type_ = JsonValue::Type::kNumber;
      const char* begin = s_.c_str() + pos_;
      char* end = nullptr;
      v.number_ = std::strtod(begin, &end);
      if (end == begin) fail("bad number");
      pos_ += static_cast<size_t>(end - begin);
    } else if (c == '\0') {
      fail("unexpected end of input");
    } else {
      fail(std::string("unexpected character '") + c + "'");
    }
    return v;
  }

  static void put_utf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xc0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xe0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
      out += static_cast<char>(0x80 | (cp & 0x3f));
    } else {
      out += static_cast<char>(0xf0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
      out += static_cast<char>(0x80 | (cp & 0x3f));
    }
  }

  uint32_t parse_hex4() {
    if (pos_ + 4 > s_.size()) fail("truncated \\u escape");
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) {
      const char h = s_[pos_++];
      v <<= 4;
      if (h >= '0' && h <= '9') v |= h - '0';
      else if (h >= 'a' && h <= 'f') v |= h - 'a' + 10;
      else if (h >= 'A' && h <= 'F') v |= h - 'A' + 10;
      else fail("bad \\u escape");
    }
    return v;
  }

  std::string parse_string() {
    expect('"');
    std::string out;
    for (;;) {
      if (pos_ >= s_.size()) fail("unterminated string");
      const char c = s_[pos_++];
      if (c == '"') break;
      if (c != '\\') {
        out += c;
        continue;
      }
      if (pos_ >= s_.size()) fail("unterminated escape");
      const char e = s_[pos_++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          uint32_t cp = parse_hex4();
          if (cp >= 0xd800 && cp <= 0xdbff) {  // surrogate pair
            if (s_.compare(pos_, 2, "\\u") != 0) fail("lone high surrogate");
            pos_ += 2;
            const uint32_t lo = parse_hex4();
            if (lo < 0xdc00 || lo > 0xdfff) fail("bad low surrogate");
            cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
          }
          put_utf8(out, cp);
          break;
        }
        default: fail("bad escape");
      }
    }
    return out;
  }

  const std::string& s_;
  std::string name_;
  size_t pos_ = 0;
};

JsonValue parse_json(const std::string& text, const std::string& source_name) {
  return JsonParser(text, source_name).parse_document();
}

JsonValue read_json_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  SC_CHECK(f.good(), ErrorCode::kNotFound, "file not found: ", path);
  std::stringstream ss;
  ss << f.rdbuf();
  return parse_json(ss.str(), path);
}

}  // namespace speechcore::io
