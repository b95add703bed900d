// A small strict JSON reader (RFC 8259) for `mproc trace-view`. value() builds a DOM of
// one value; begin_array()/next_element() and begin_object()/next_key() step through a
// container without building it, so that a trace of a million events is read one event at
// a time rather than as one large tree. Nesting is limited (max_depth), so a hostile file
// cannot exhaust the stack. Every error is a ParseError that carries its byte offset.
//
// Strings come out as UTF-8: \uXXXX escapes and surrogate pairs are decoded; a lone
// surrogate escape and a byte sequence that is not UTF-8 become U+FFFD, so that whatever a
// string holds can be printed without further checks.
#pragma once

#include <cstddef>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace mproc::cli::json {

struct Value;
using Array = std::vector<Value>;
/// Object members in document order, duplicates kept.
using Object = std::vector<std::pair<std::string, Value>>;

/// The kinds of JSON value.
enum class Kind { null, boolean, number, string, array, object };

/// "null", "a boolean", "a number", "a string", "an array" or "an object", for messages.
std::string_view kind_name(Kind k);

/// One JSON value. Numbers are doubles; one too large for a double is +-infinity.
struct Value {
  std::variant<std::nullptr_t, bool, double, std::string, Array, Object> data;

  Kind kind() const { return static_cast<Kind>(data.index()); }
  const double* number() const { return std::get_if<double>(&data); }
  const std::string* string() const { return std::get_if<std::string>(&data); }
  const Array* array() const { return std::get_if<Array>(&data); }
  const Object* object() const { return std::get_if<Object>(&data); }
  /// The member `key` of an object (the last one when repeated, as most readers do);
  /// nullptr when absent or when this is not an object.
  const Value* find(std::string_view key) const;
};

/// Malformed JSON. what() ends with " at byte N", N counted from 0.
class ParseError : public std::runtime_error {
 public:
  ParseError(std::string_view what, std::size_t offset);
  std::size_t offset() const noexcept { return offset_; }

 private:
  std::size_t offset_;
};

/// Reads one JSON text from the front. Not thread-safe. Every member function throws
/// ParseError on malformed input.
class Reader {
 public:
  /// `text` must outlive the reader. Arrays and objects nested more than `max_depth` deep
  /// are an error.
  explicit Reader(std::string_view text, std::size_t max_depth = 256);

  /// The kind of the next value, without consuming it.
  Kind peek();
  /// Parses the next value whole.
  Value value();

  /// Consumes the '[' of the next value, which must be an array. Then
  /// `while (r.next_element()) r.value();` (or any other way to consume one value).
  void begin_array();
  /// True when the current array has another element (its ',' consumed); false when it
  /// ended (its ']' consumed).
  bool next_element();
  /// Consumes the '{' of the next value, which must be an object.
  void begin_object();
  /// The next member's key, its ':' consumed (then consume its value); nullopt when the
  /// current object ended (its '}' consumed).
  std::optional<std::string> next_key();

  /// Checks that only whitespace follows the value read.
  void finish();
  /// The current byte offset.
  std::size_t offset() const { return pos_; }

 private:
  [[noreturn]] void fail(std::string_view what, std::size_t at) const;
  [[noreturn]] void fail_here(std::string_view expected) const;
  void skip_space();
  void enter();
  std::string read_string();
  double read_number();
  void read_literal(std::string_view word);
  unsigned read_hex4();

  std::string_view text_;
  std::size_t pos_ = 0;
  std::size_t max_depth_;
  std::vector<bool> first_;  // per open container: no element or member read yet
};

/// Parses `text`, which must hold exactly one JSON value.
Value parse(std::string_view text, std::size_t max_depth = 256);

}  // namespace mproc::cli::json
