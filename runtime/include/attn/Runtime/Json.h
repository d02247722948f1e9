//===- Json.h - A tiny JSON value, parser and writer ------------*- C++ -*-===//
//
// Package manifests are JSON. The runtime must not depend on LLVM (whose
// llvm::json would do), so this is a small self-contained subset: RFC 8259
// values, objects keep their key order, depth and size limits make it safe on
// hostile input.
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_RUNTIME_JSON_H
#define ATTN_RUNTIME_JSON_H

#include "attn/Runtime/Status.h"

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace attn {
namespace json {

/// A JSON value. Objects are ordered lists of members so that written
/// manifests are deterministic and byte-for-byte reproducible.
class Value {
public:
  enum class Kind { Null, Bool, Number, String, Array, Object };
  using Member = std::pair<std::string, Value>;

  Value() = default;
  static Value null() { return Value(); }
  static Value boolean(bool b);
  static Value number(double d);
  static Value string(std::string s);
  static Value array(std::vector<Value> elements = {});
  static Value object(std::vector<Member> members = {});

  Kind getKind() const { return kind; }
  bool isNull() const { return kind == Kind::Null; }
  bool isBool() const { return kind == Kind::Bool; }
  bool isNumber() const { return kind == Kind::Number; }
  bool isString() const { return kind == Kind::String; }
  bool isArray() const { return kind == Kind::Array; }
  bool isObject() const { return kind == Kind::Object; }

  bool getBool() const { return boolValue; }
  double getNumber() const { return numberValue; }
  const std::string &getString() const { return stringValue; }
  const std::vector<Value> &getArray() const { return elements; }
  std::vector<Value> &getArray() { return elements; }
  const std::vector<Member> &getObject() const { return members; }

  /// Object member lookup; nullptr when absent or not an object.
  const Value *get(std::string_view key) const;
  /// Appends a member (objects only); returns *this for chaining.
  Value &set(std::string key, Value value);
  /// Appends an element (arrays only).
  void push(Value value) { elements.push_back(std::move(value)); }

  /// True when the number is integral and exactly representable as int64.
  bool isInteger() const;

private:
  Kind kind = Kind::Null;
  bool boolValue = false;
  double numberValue = 0;
  std::string stringValue;
  std::vector<Value> elements;
  std::vector<Member> members;
};

/// Parses one JSON document (surrounding whitespace allowed). Errors carry a
/// byte offset. Nesting is limited to 64 levels.
Status parse(std::string_view text, Value &out);

/// Writes `value` with two-space indentation, members in insertion order.
/// Non-finite numbers are written as null (JSON has no spelling for them).
std::string write(const Value &value);

} // namespace json
} // namespace attn

#endif // ATTN_RUNTIME_JSON_H
