//===- Json.cpp - A tiny JSON value, parser and writer --------------------===//

#include "attn/Runtime/Json.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace attn {
namespace json {

Value Value::boolean(bool b) {
  Value v;
  v.kind = Kind::Bool;
  v.boolValue = b;
  return v;
}

Value Value::number(double d) {
  Value v;
  v.kind = Kind::Number;
  v.numberValue = d;
  return v;
}

Value Value::string(std::string s) {
  Value v;
  v.kind = Kind::String;
  v.stringValue = std::move(s);
  return v;
}

Value Value::array(std::vector<Value> elements) {
  Value v;
  v.kind = Kind::Array;
  v.elements = std::move(elements);
  return v;
}

Value Value::object(std::vector<Member> members) {
  Value v;
  v.kind = Kind::Object;
  v.members = std::move(members);
  return v;
}

const Value *Value::get(std::string_view key) const {
  if (kind != Kind::Object)
    return nullptr;
  for (const Member &m : members)
    if (m.first == key)
      return &m.second;
  return nullptr;
}

Value &Value::set(std::string key, Value value) {
  members.emplace_back(std::move(key), std::move(value));
  return *this;
}

bool Value::isInteger() const {
  if (kind != Kind::Number || !std::isfinite(numberValue))
    return false;
  // 2^63 is exactly representable; anything at or past it is out of range.
  if (numberValue < -9223372036854775808.0 ||
      numberValue >= 9223372036854775808.0)
    return false;
  return std::floor(numberValue) == numberValue;
}

namespace {

/// A recursive-descent parser over a string_view. Every read is bounds
/// checked, so truncated or garbled input ends in an error, never a crash.
class Parser {
public:
  explicit Parser(std::string_view text) : text(text) {}

  Status parseDocument(Value &out) {
    skipSpace();
    if (Status s = parseValue(out, 0))
      return s;
    skipSpace();
    if (pos != text.size())
      return error("trailing characters after the JSON value");
    return Status::ok();
  }

private:
  static constexpr int kMaxDepth = 64;

  Status error(const std::string &what) const {
    return invalidPackage("JSON at byte " + std::to_string(pos) + ": " + what);
  }

  bool atEnd() const { return pos >= text.size(); }
  char peek() const { return atEnd() ? '\0' : text[pos]; }

  void skipSpace() {
    while (!atEnd() && (text[pos] == ' ' || text[pos] == '\t' ||
                        text[pos] == '\n' || text[pos] == '\r'))
      ++pos;
  }

  bool consumeWord(std::string_view word) {
    if (text.substr(pos, word.size()) != word)
      return false;
    pos += word.size();
    return true;
  }

  Status parseValue(Value &out, int depth) {
    if (depth > kMaxDepth)
      return error("nesting deeper than 64 levels");
    if (atEnd())
      return error("unexpected end of input");
    char c = peek();
    if (c == '{')
      return parseObject(out, depth);
    if (c == '[')
      return parseArray(out, depth);
    if (c == '"') {
      std::string s;
      if (Status st = parseString(s))
        return st;
      out = Value::string(std::move(s));
      return Status::ok();
    }
    if (c == '-' || (c >= '0' && c <= '9'))
      return parseNumber(out);
    if (consumeWord("true")) {
      out = Value::boolean(true);
      return Status::ok();
    }
    if (consumeWord("false")) {
      out = Value::boolean(false);
      return Status::ok();
    }
    if (consumeWord("null")) {
      out = Value::null();
      return Status::ok();
    }
    return error(std::string("unexpected character '") + c + "'");
  }

  Status parseObject(Value &out, int depth) {
    ++pos; // '{'
    out = Value::object();
    skipSpace();
    if (peek() == '}') {
      ++pos;
      return Status::ok();
    }
    while (true) {
      skipSpace();
      if (peek() != '"')
        return error("expected a string key");
      std::string key;
      if (Status s = parseString(key))
        return s;
      if (out.get(key))
        return error("duplicate key \"" + key + "\"");
      skipSpace();
      if (peek() != ':')
        return error("expected ':'");
      ++pos;
      skipSpace();
      Value member;
      if (Status s = parseValue(member, depth + 1))
        return s;
      out.set(std::move(key), std::move(member));
      skipSpace();
      if (peek() == ',') {
        ++pos;
        continue;
      }
      if (peek() == '}') {
        ++pos;
        return Status::ok();
      }
      return error("expected ',' or '}'");
    }
  }

  Status parseArray(Value &out, int depth) {
    ++pos; // '['
    out = Value::array();
    skipSpace();
    if (peek() == ']') {
      ++pos;
      return Status::ok();
    }
    while (true) {
      skipSpace();
      Value element;
      if (Status s = parseValue(element, depth + 1))
        return s;
      out.push(std::move(element));
      skipSpace();
      if (peek() == ',') {
        ++pos;
        continue;
      }
      if (peek() == ']') {
        ++pos;
        return Status::ok();
      }
      return error("expected ',' or ']'");
    }
  }

  static void appendUtf8(std::string &s, uint32_t cp) {
    if (cp < 0x80) {
      s += static_cast<char>(cp);
    } else if (cp < 0x800) {
      s += static_cast<char>(0xC0 | (cp >> 6));
      s += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      s += static_cast<char>(0xE0 | (cp >> 12));
      s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      s += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      s += static_cast<char>(0xF0 | (cp >> 18));
      s += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      s += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }

  Status parseHex4(uint32_t &out) {
    if (text.size() - pos < 4)
      return error("truncated \\u escape");
    out = 0;
    for (int i = 0; i < 4; ++i) {
      char c = text[pos++];
      out <<= 4;
      if (c >= '0' && c <= '9')
        out |= c - '0';
      else if (c >= 'a' && c <= 'f')
        out |= c - 'a' + 10;
      else if (c >= 'A' && c <= 'F')
        out |= c - 'A' + 10;
      else
        return error("bad hex digit in \\u escape");
    }
    return Status::ok();
  }

  Status parseString(std::string &out) {
    ++pos; // '"'
    while (true) {
      if (atEnd())
        return error("unterminated string");
      char c = text[pos++];
      if (c == '"')
        return Status::ok();
      if (static_cast<unsigned char>(c) < 0x20)
        return error("control character in string");
      if (c != '\\') {
        out += c;
        continue;
      }
      if (atEnd())
        return error("unterminated escape");
      char e = text[pos++];
      switch (e) {
      case '"':
      case '\\':
      case '/':
        out += e;
        break;
      case 'b':
        out += '\b';
        break;
      case 'f':
        out += '\f';
        break;
      case 'n':
        out += '\n';
        break;
      case 'r':
        out += '\r';
        break;
      case 't':
        out += '\t';
        break;
      case 'u': {
        uint32_t cp = 0;
        if (Status s = parseHex4(cp))
          return s;
        if (cp >= 0xD800 && cp < 0xDC00) {
          uint32_t low = 0;
          if (!consumeWord("\\u"))
            return error("unpaired surrogate");
          if (Status s = parseHex4(low))
            return s;
          if (low < 0xDC00 || low >= 0xE000)
            return error("unpaired surrogate");
          cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
        } else if (cp >= 0xDC00 && cp < 0xE000) {
          return error("unpaired surrogate");
        }
        appendUtf8(out, cp);
        break;
      }
      default:
        return error(std::string("bad escape '\\") + e + "'");
      }
    }
  }

  Status parseNumber(Value &out) {
    size_t start = pos;
    if (peek() == '-')
      ++pos;
    if (peek() == '0') {
      ++pos;
    } else if (peek() >= '1' && peek() <= '9') {
      while (peek() >= '0' && peek() <= '9')
        ++pos;
    } else {
      return error("bad number");
    }
    if (peek() == '.') {
      ++pos;
      if (!(peek() >= '0' && peek() <= '9'))
        return error("bad number: digit expected after '.'");
      while (peek() >= '0' && peek() <= '9')
        ++pos;
    }
    if (peek() == 'e' || peek() == 'E') {
      ++pos;
      if (peek() == '+' || peek() == '-')
        ++pos;
      if (!(peek() >= '0' && peek() <= '9'))
        return error("bad number: digit expected in exponent");
      while (peek() >= '0' && peek() <= '9')
        ++pos;
    }
    // strtod needs a terminated buffer; the grammar above already checked
    // the spelling, so it consumes exactly these characters.
    std::string spelling(text.substr(start, pos - start));
    out = Value::number(std::strtod(spelling.c_str(), nullptr));
    return Status::ok();
  }

  std::string_view text;
  size_t pos = 0;
};

void writeString(std::string &out, const std::string &s) {
  out += '"';
  for (unsigned char c : s) {
    switch (c) {
    case '"':
      out += "\\\"";
      break;
    case '\\':
      out += "\\\\";
      break;
    case '\n':
      out += "\\n";
      break;
    case '\t':
      out += "\\t";
      break;
    case '\r':
      out += "\\r";
      break;
    default:
      if (c < 0x20) {
        char buf[8];
        std::snprintf(buf, sizeof(buf), "\\u%04x", c);
        out += buf;
      } else {
        out += static_cast<char>(c);
      }
    }
  }
  out += '"';
}

/// Short scalar arrays ("grid", "axes") stay on one line for readability.
bool isFlat(const Value &v) {
  if (!v.isArray())
    return false;
  for (const Value &e : v.getArray())
    if (e.isArray() || e.isObject())
      return false;
  return true;
}

void writeValue(std::string &out, const Value &v, int indent) {
  std::string pad(static_cast<size_t>(indent) * 2, ' ');
  switch (v.getKind()) {
  case Value::Kind::Null:
    out += "null";
    return;
  case Value::Kind::Bool:
    out += v.getBool() ? "true" : "false";
    return;
  case Value::Kind::Number: {
    double d = v.getNumber();
    char buf[40];
    if (!std::isfinite(d))
      out += "null";
    else if (v.isInteger() && std::fabs(d) < 9007199254740992.0)
      std::snprintf(buf, sizeof(buf), "%lld", static_cast<long long>(d)),
          out += buf;
    else
      std::snprintf(buf, sizeof(buf), "%.17g", d), out += buf;
    return;
  }
  case Value::Kind::String:
    writeString(out, v.getString());
    return;
  case Value::Kind::Array: {
    if (v.getArray().empty()) {
      out += "[]";
      return;
    }
    bool flat = isFlat(v);
    out += flat ? "[" : "[\n";
    for (size_t i = 0; i < v.getArray().size(); ++i) {
      if (!flat)
        out += pad + "  ";
      writeValue(out, v.getArray()[i], indent + 1);
      if (i + 1 < v.getArray().size())
        out += flat ? ", " : ",\n";
    }
    out += flat ? "]" : "\n" + pad + "]";
    return;
  }
  case Value::Kind::Object: {
    if (v.getObject().empty()) {
      out += "{}";
      return;
    }
    out += "{\n";
    for (size_t i = 0; i < v.getObject().size(); ++i) {
      out += pad + "  ";
      writeString(out, v.getObject()[i].first);
      out += ": ";
      writeValue(out, v.getObject()[i].second, indent + 1);
      out += i + 1 < v.getObject().size() ? ",\n" : "\n";
    }
    out += pad + "}";
    return;
  }
  }
}

} // namespace

Status parse(std::string_view text, Value &out) {
  return Parser(text).parseDocument(out);
}

std::string write(const Value &value) {
  std::string out;
  writeValue(out, value, 0);
  return out;
}

} // namespace json
} // namespace attn
