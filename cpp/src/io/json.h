// A small JSON reader (RFC 8259) for config.json and tokenizer.json. Objects keep key order.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace speechcore::io {

class JsonValue {
 public:
  enum class Type { kNull, kBool, kNumber, kString, kArray, kObject };

  Type type() const { return type_; }
  bool is_null() const { return type_ == Type::kNull; }
  bool is_bool() const { return type_ == Type::kBool; }
  bool is_number() const { return type_ == Type::kNumber; }
  bool is_string() const { return type_ == Type::kString; }
  bool is_array() const { return type_ == Type::kArray; }
  bool is_object() const { return type_ == Type::kObject; }

  // Typed accessors throw speechcore::Error(kInvalidArgument) naming `what` on a type mismatch.
  bool as_bool() const;
  double as_number() const;
  int64_t as_int() const;
  const std::string& as_string() const;
  const std::vector<JsonValue>& as_array() const;
  const std::vector<std::pair<std::string, JsonValue>>& as_object() const;

  // Object lookup: nullptr when absent (or not an object).
  const JsonValue* find(const std::string& key) const;
  size_t size() const;

  // Convenience getters with defaults for optional config fields.
  int64_t get_int(const std::string& key, int64_t fallback) const;
  double get_number(const std::string& key, double fallback) const;
  std::string get_string(const std::string& key, const std::string& fallback) const;
  bool get_bool(const std::string& key, bool fallback) const;

  static JsonValue make_null() { return JsonValue(); }

 private:
  friend class JsonParser;
  Type type_ = Type::kNull;
  bool bool_ = false;
  double number_ = 0.0;
  std::string string_;
  std::vector<JsonValue> array_;
  std::vector<std::pair<std::string, JsonValue>> object_;
  std::shared_ptr<std::map<std::string, size_t>> index_;  // key -> position, for large objects
};

// Parses text; throws speechcore::Error(kInvalidArgument) with line/column on bad JSON.
JsonValue parse_json(const std::string& text, const std::string& source_name = "json");
// Reads and parses a file; kNotFound if it does not exist.
JsonValue read_json_file(const std::string& path);

}  // namespace speechcore::io
