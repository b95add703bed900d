// The JSON reader of json.hpp: a hand-written recursive-descent parser whose recursion is
// bounded by the reader's nesting limit.
#include "json.hpp"

#include <charconv>
#include <cstdlib>
#include <string>

#include <fmt/core.h>

namespace mproc::cli::json {

std::string_view kind_name(Kind k) {
  switch (k) {
    case Kind::null: return "null";
    case Kind::boolean: return "a boolean";
    case Kind::number: return "a number";
    case Kind::string: return "a string";
    case Kind::array: return "an array";
    case Kind::object: return "an object";
  }
  return "?";
}

const Value* Value::find(std::string_view key) const {
  const Object* o = object();
  if (o == nullptr) return nullptr;
  for (auto it = o->rbegin(); it != o->rend(); ++it)
    if (it->first == key) return &it->second;
  return nullptr;
}

ParseError::ParseError(std::string_view what, std::size_t offset)
    : std::runtime_error(fmt::format("{} at byte {}", what, offset)), offset_(offset) {}

namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }

void append_utf8(std::string& out, unsigned cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

constexpr unsigned replacement = 0xFFFD;

/// The length of the well-formed UTF-8 sequence at the front of `s` (Unicode 15, table
/// 3-7: no overlong forms, no surrogates, nothing above U+10FFFF), or 0.
std::size_t utf8_sequence(std::string_view s) {
  auto at = [&](std::size_t i) { return static_cast<unsigned char>(s[i]); };
  const unsigned char b0 = at(0);
  std::size_t n = 0;
  unsigned char lo = 0x80, hi = 0xBF;  // the range of the second byte
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    n = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    n = 3;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    n = 4;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  if (s.size() < n || at(1) < lo || at(1) > hi) return 0;
  for (std::size_t i = 2; i < n; ++i)
    if (at(i) < 0x80 || at(i) > 0xBF) return 0;
  return n;
}

}  // namespace

Reader::Reader(std::string_view text, std::size_t max_depth) : text_(text), max_depth_(max_depth) {
  // A byte order mark is not JSON, but RFC 8259 section 8.1 lets a parser ignore it.
  if (text_.substr(0, 3) == "\xEF\xBB\xBF") pos_ = 3;
}

void Reader::fail(std::string_view what, std::size_t at) const { throw ParseError(what, at); }

void Reader::fail_here(std::string_view expected) const {
  if (pos_ >= text_.size())
    fail(fmt::format("unexpected end of input, expected {}", expected), pos_);
  const auto c = static_cast<unsigned char>(text_[pos_]);
  if (c >= 0x20 && c < 0x7F)
    fail(fmt::format("unexpected '{}', expected {}", static_cast<char>(c), expected), pos_);
  fail(fmt::format("unexpected byte 0x{:02X}, expected {}", c, expected), pos_);
}

void Reader::skip_space() {
  while (pos_ < text_.size()) {
    const char c = text_[pos_];
    if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
    ++pos_;
  }
}

Kind Reader::peek() {
  skip_space();
  if (pos_ < text_.size()) {
    switch (text_[pos_]) {
      case '{': return Kind::object;
      case '[': return Kind::array;
      case '"': return Kind::string;
      case 't':
      case 'f': return Kind::boolean;
      case 'n': return Kind::null;
      default:
        if (text_[pos_] == '-' || is_digit(text_[pos_])) return Kind::number;
    }
  }
  fail_here("a value");
}

Value Reader::value() {
  Value v;
  switch (peek()) {
    case Kind::null: read_literal("null"); break;
    case Kind::boolean:
      if (text_[pos_] == 't') {
        read_literal("true");
        v.data = true;
      } else {
        read_literal("false");
        v.data = false;
      }
      break;
    case Kind::number: v.data = read_number(); break;
    case Kind::string: v.data = read_string(); break;
    case Kind::array: {
      Array a;
      begin_array();
      while (next_element()) a.push_back(value());
      a.shrink_to_fit();
      v.data = std::move(a);
      break;
    }
    case Kind::object: {
      Object o;
      begin_object();
      while (auto key = next_key()) o.emplace_back(std::move(*key), value());
      o.shrink_to_fit();
      v.data = std::move(o);
      break;
    }
  }
  return v;
}

void Reader::enter() {
  if (first_.size() >= max_depth_)
    fail(fmt::format("arrays and objects nested more than {} deep", max_depth_), pos_);
  first_.push_back(true);
  ++pos_;
}

void Reader::begin_array() {
  if (peek() != Kind::array) fail_here("'['");
  enter();
}

bool Reader::next_element() {
  skip_space();
  if (pos_ < text_.size() && text_[pos_] == ']') {
    first_.pop_back();
    ++pos_;
    return false;
  }
  if (first_.back()) {
    first_.back() = false;
    return true;
  }
  if (pos_ < text_.size() && text_[pos_] == ',') {
    ++pos_;  // "[1,]" fails in the caller's value(): the ',' promised one
    return true;
  }
  fail_here("',' or ']'");
}

void Reader::begin_object() {
  if (peek() != Kind::object) fail_here("'{'");
  enter();
}

std::optional<std::string> Reader::next_key() {
  skip_space();
  if (pos_ < text_.size() && text_[pos_] == '}') {
    first_.pop_back();
    ++pos_;
    return std::nullopt;
  }
  if (first_.back()) {
    first_.back() = false;
  } else if (pos_ < text_.size() && text_[pos_] == ',') {
    ++pos_;
    skip_space();
  } else {
    fail_here("',' or '}'");
  }
  if (pos_ >= text_.size() || text_[pos_] != '"') fail_here("a string key");
  std::string key = read_string();
  skip_space();
  if (pos_ >= text_.size() || text_[pos_] != ':') fail_here("':'");
  ++pos_;
  return key;
}

void Reader::finish() {
  skip_space();
  if (pos_ < text_.size()) fail_here("the end of the input after the JSON value");
}

void Reader::read_literal(std::string_view word) {
  if (text_.substr(pos_, word.size()) != word) fail_here(fmt::format("'{}'", word));
  pos_ += word.size();
}

unsigned Reader::read_hex4() {
  unsigned v = 0;
  for (int i = 0; i < 4; ++i, ++pos_) {
    if (pos_ >= text_.size()) fail_here("4 hex digits after \\u");
    const char c = text_[pos_];
    unsigned d = 0;
    if (is_digit(c))
      d = static_cast<unsigned>(c - '0');
    else if (c >= 'a' && c <= 'f')
      d = static_cast<unsigned>(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F')
      d = static_cast<unsigned>(c - 'A' + 10);
    else
      fail_here("4 hex digits after \\u");
    v = v * 16 + d;
  }
  return v;
}

std::string Reader::read_string() {
  std::string out;
  ++pos_;  // the opening quote
  for (;;) {
    // Runs of plain ASCII are copied in one go.
    std::size_t run = pos_;
    while (run < text_.size()) {
      const auto c = static_cast<unsigned char>(text_[run]);
      if (c == '"' || c == '\\' || c < 0x20 || c >= 0x80) break;
      ++run;
    }
    out.append(text_.substr(pos_, run - pos_));
    pos_ = run;
    if (pos_ >= text_.size()) fail("unexpected end of input in a string", pos_);
    const auto c = static_cast<unsigned char>(text_[pos_]);
    if (c == '"') {
      ++pos_;
      return out;
    }
    if (c < 0x20) fail(fmt::format("control character 0x{:02X} in a string", c), pos_);
    if (c >= 0x80) {
      const std::size_t n = utf8_sequence(text_.substr(pos_));
      if (n == 0) {
        append_utf8(out, replacement);
        ++pos_;
      } else {
        out.append(text_.substr(pos_, n));
        pos_ += n;
      }
      continue;
    }
    const std::size_t escape = pos_++;
    if (pos_ >= text_.size()) fail("unexpected end of input in a string", pos_);
    const char e = text_[pos_++];
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
        unsigned cp = read_hex4();
        if (cp >= 0xD800 && cp <= 0xDBFF && text_.substr(pos_, 2) == "\\u") {
          const std::size_t save = pos_;
          pos_ += 2;
          const unsigned low = read_hex4();
          if (low >= 0xDC00 && low <= 0xDFFF)
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
          else
            pos_ = save;  // not a pair: the next escape is read on its own
        }
        append_utf8(out, cp >= 0xD800 && cp <= 0xDFFF ? replacement : cp);
        break;
      }
      default: {
        const auto b = static_cast<unsigned char>(e);
        if (b >= 0x20 && b < 0x7F)
          fail(fmt::format("invalid escape '\\{}' in a string", e), escape);
        fail(fmt::format("invalid escape '\\' + byte 0x{:02X} in a string", b), escape);
      }
    }
  }
}

double Reader::read_number() {
  // The grammar of RFC 8259 section 6, checked here because from_chars and strtod accept
  // more ("1.", ".5", "+1", "0x1p3", "inf", leading zeros).
  const std::size_t start = pos_;
  auto digits = [&] {
    const std::size_t from = pos_;
    while (pos_ < text_.size() && is_digit(text_[pos_])) ++pos_;
    return pos_ - from;
  };
  if (text_[pos_] == '-') ++pos_;
  if (pos_ < text_.size() && text_[pos_] == '0') {
    ++pos_;
    if (pos_ < text_.size() && is_digit(text_[pos_])) fail("number with a leading zero", start);
  } else if (digits() == 0) {
    fail_here("a digit");
  }
  if (pos_ < text_.size() && text_[pos_] == '.') {
    ++pos_;
    if (digits() == 0) fail_here("a digit after '.'");
  }
  if (pos_ < text_.size() && (text_[pos_] == 'e' || text_[pos_] == 'E')) {
    ++pos_;
    if (pos_ < text_.size() && (text_[pos_] == '+' || text_[pos_] == '-')) ++pos_;
    if (digits() == 0) fail_here("a digit in the exponent");
  }
  const char* first = text_.data() + start;
  const char* last = text_.data() + pos_;
  double v = 0;
  const auto [p, ec] = std::from_chars(first, last, v);
  if (ec == std::errc() && p == last) return v;
  // Out of range: strtod gives +-HUGE_VAL (infinity) on overflow and 0 on underflow,
  // where from_chars leaves the value alone. The copy ends the text for strtod.
  const std::string copy(first, last);
  return std::strtod(copy.c_str(), nullptr);
}

Value parse(std::string_view text, std::size_t max_depth) {
  Reader r(text, max_depth);
  Value v = r.value();
  r.finish();
  return v;
}

}  // namespace mproc::cli::json
