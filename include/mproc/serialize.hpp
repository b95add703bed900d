// mproc serialization: how values travel between processes, named after Python's pickle
// (dumps/loads) but typed, compact and safe against malformed input.
//
// A user type becomes serializable by writing one function for both directions, as in
// cereal:
//
//   struct Point { double x, y; std::string label;
//     template <class Archive> void serialize(Archive& ar) { ar(x, y, label); } };
//
// or a free function `template <class Archive> void serialize(Archive&, Point&)` found by
// argument-dependent lookup (in the type's namespace, or in namespace mproc for types one
// does not own). `Archive::is_loading` / `is_saving` tell the two directions apart.
//
// Wire format (no type tags and no field names: both sides know the type). Everything is
// little-endian; mproc targets x86-64 and arm64 only, so native order is wire order.
//   bool                    1 byte, 0 or 1 (anything else is rejected)
//   arithmetic              sizeof(T) bytes
//   enum                    as its underlying type
//   std::string             u64 length, then the characters
//   vector<T>               u64 count, then the elements
//   vector<bool>            u64 count, then ceil(count/8) bytes, bits LSB first, padding 0
//   deque, list,            as vector<T>, so that one's bytes decode as another
//     forward_list
//   array<T, N>, T[N]       the N elements
//   pair, tuple             the members in order
//   optional<T>             1 byte 0/1, then the value when 1
//   variant<T...>           index (u8, or u32 past 256 alternatives), then the alternative
//   map, multimap           u64 count, then key, value, key, value... in key order
//   set, multiset           u64 count, then the keys in key order
//   unordered_[multi]map    u64 count, then key, value... in the container's own order
//   unordered_[multi]set    u64 count, then the keys in the container's own order
//   user type               whatever its serialize() writes, nothing around it
//   trivially copyable      sizeof(T) bytes, copied as they are in memory
// A run of values whose memory is its own encoding (arithmetic types, enums with a fixed
// underlying type, trivially copyable structs without serialize(), arrays of these) is
// written and read with one memcpy: vector<double> of n is 8 + 8n bytes. dumps(a, b) is
// dumps(a) followed by dumps(b).
//
// Guarantees when decoding bytes from anywhere:
//   - Every read is bounds-checked; malformed, truncated or hostile input throws
//     SerializationError, saying what was wrong, and never reads out of bounds.
//   - No invalid value is created: bool bytes, optional flags and variant indices are
//     checked; enums without a fixed underlying type are refused at compile time.
//   - A value has one encoding (unordered containers aside, whose order is their own):
//     map and set refuse keys out of their comparator's order or repeated, multimap and
//     multiset keys out of order (equal keys may repeat, their values in the order they
//     were inserted); unordered_map and unordered_set refuse a repeated key, which would
//     otherwise be dropped; vector<bool> refuses nonzero padding bits.
//   - A count is accepted only if count * (fewest bytes an element can encode to) fits in
//     the bytes left. A user type counts as at least 1 byte; a container whose user-type
//     elements encode to less than that is refused when it is encoded, not when decoded.
//   - What decoding one value allocates for its containers' elements is bounded by the
//     input: at most alloc_allowance (64 MiB) + alloc_per_byte (64) * the bytes left when
//     the value starts, checked before each container allocates. So a few bytes cannot
//     ask for gigabytes (an empty optional is 1 byte on the wire and sizeof(optional<T>)
//     in a vector). The encoder counts the same and refuses a value it would exceed
//     (with SerializationError): what dumps writes, loads reads.
//   - User types nest at most max_depth (1024) deep, so hostile input cannot exhaust the
//     stack through a recursive type.
// Not guaranteed: a trivially copyable struct copied as bytes takes whatever bytes arrive;
// if it holds a bool, an enum or a pointer, give it a serialize() to check them.
// On an exception the value being decoded is valid but unspecified.
//
// Archives and the functions here are not thread-safe on a shared buffer; distinct
// buffers can be used from any threads.
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <iterator>
#include <memory>
#include <optional>
#include <ranges>
#include <span>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "detail/serialize_traits.hpp"
#include "error.hpp"

namespace mproc {

static_assert(std::endian::native == std::endian::little,
              "mproc's wire format is little-endian and written as native memory");

/// True for the types the archives can encode and decode: arithmetic types, enums with a
/// fixed underlying type, std::string, vector, deque, list, forward_list, array, C arrays,
/// pair, tuple, optional, variant, [unordered_][multi]map and [unordered_][multi]set of
/// serializable types, types with a serialize(Archive&) member or free function, and
/// other trivially copyable types.
/// References and cv-qualifiers are ignored.
template <class T>
concept serializable = detail::is_serializable<std::remove_cvref_t<T>>();

namespace detail {
struct Codec;

/// How many InputArchives (and loads calls) are alive on this thread. Handles to shared
/// objects (Lock, Value, Queue...) create a new object when default-constructed, as in
/// Python, except while this is non-zero: then they start empty, because the decoder is
/// about to overwrite them with the handle it reads.
MPROC_API int& decode_depth() noexcept;

/// Marks a scope in which default-constructed shared handles start empty.
class DecodeScope {
 public:
  DecodeScope() noexcept { ++decode_depth(); }
  DecodeScope(const DecodeScope&) noexcept { ++decode_depth(); }
  DecodeScope& operator=(const DecodeScope&) noexcept { return *this; }
  ~DecodeScope() { --decode_depth(); }
};

inline bool decoding() noexcept { return decode_depth() > 0; }
}  // namespace detail

/// Encodes values by appending to a byte vector it does not own.
class OutputArchive {
 public:
  static constexpr bool is_loading = false;
  static constexpr bool is_saving = true;
  /// How deeply user types may nest in one value (the decoder enforces the same limit).
  static constexpr std::size_t max_depth = 1024;
  /// What decoding one value may allocate: alloc_allowance + alloc_per_byte * its bytes
  /// (see InputArchive). The encoder refuses a value whose decoding would need more.
  static constexpr std::size_t alloc_allowance = detail::alloc_allowance;
  static constexpr std::size_t alloc_per_byte = detail::alloc_per_byte;

  explicit OutputArchive(std::vector<std::byte>& out) noexcept : out_(&out) {}

  /// Appends each value's encoding. Throws SerializationError for values the wire format
  /// cannot carry (a valueless variant, nesting past max_depth, a value whose decoding
  /// would allocate past alloc_allowance + alloc_per_byte * its encoded size), and what
  /// allocation throws.
  template <class... T>
  OutputArchive& operator()(const T&... values);

  /// Makes room for `size` more bytes, so that appending them moves nothing: for a
  /// serialize() that knows how much it writes (a big table, in many small writes).
  void reserve(std::size_t size) { out_->reserve(out_->size() + size); }

// GCC 12, once vector::insert is inlined next to a freshly made vector, reports bogus
// -Wstringop-overread/-Wstringop-overflow/-Warray-bounds in its reallocation path (GCC PR
// 107852 and kin); -Werror builds of user code would fail. GCC honours these pragmas at
// the inlined call site. Moving the insert out of line would also silence it, at several
// times the cost of a small write.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wstringop-overread"
#pragma GCC diagnostic ignored "-Wstringop-overflow"
#pragma GCC diagnostic ignored "-Warray-bounds"
#endif
  /// Appends `size` raw bytes.
  void write_bytes(const void* data, std::size_t size) {
    if (size == 0) return;
    const auto* p = static_cast<const std::byte*>(data);
    out_->insert(out_->end(), p, p + size);
  }
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

 private:
  friend struct detail::Codec;
  std::vector<std::byte>* out_;
  std::size_t depth_ = 0;    // nesting of user types, against max_depth
  std::size_t charged_ = 0;  // what decoding the value being encoded will allocate
};

/// Decodes values from bytes it does not own, which must outlive it.
class InputArchive {
 public:
  static constexpr bool is_loading = true;
  static constexpr bool is_saving = false;
  static constexpr std::size_t max_depth = OutputArchive::max_depth;
  /// Decoding one value (each argument of a call that is not inside a serialize()) may
  /// allocate, for the elements of its containers, at most alloc_allowance (64 MiB) +
  /// alloc_per_byte (64) * the bytes left when it starts; each container's elements are
  /// counted against it before they are allocated.
  static constexpr std::size_t alloc_allowance = detail::alloc_allowance;
  static constexpr std::size_t alloc_per_byte = detail::alloc_per_byte;

  explicit InputArchive(std::span<const std::byte> bytes) noexcept
      : data_(bytes.data()), size_(bytes.size()), budget_(detail::alloc_budget(bytes.size())) {}

  /// Decodes into each value in turn, replacing its contents. Throws SerializationError on
  /// malformed input, also on input whose decoding would allocate past the budget above;
  /// the value is then valid but unspecified.
  template <class... T>
  InputArchive& operator()(T&... values);

  /// Copies the next `size` bytes to `dst`. Throws SerializationError if fewer remain.
  void read_bytes(void* dst, std::size_t size) {
    const std::byte* p = take(size, "raw bytes", nullptr);
    if (size != 0) std::memcpy(dst, p, size);
  }

  /// The next `size` bytes, without copying; valid as long as the input is.
  /// Throws SerializationError if fewer remain.
  //
  // Zero copy between processes is the business of mproc::Array (shared.hpp): an Array
  // or a slice of one travels as (segment, offset, length). A bare std::span or
  // std::string_view is refused by `serializable`: it would travel as a pointer.
  std::span<const std::byte> read_span(std::size_t size) {
    const std::byte* p = take(size, "raw bytes", nullptr);
    return {p, size};
  }

  std::size_t position() const noexcept { return pos_; }
  std::size_t remaining() const noexcept { return size_ - pos_; }
  bool at_end() const noexcept { return pos_ == size_; }

 private:
  friend struct detail::Codec;

  // `name` is a function rather than a string so that the success path builds nothing.
  const std::byte* take(std::size_t n, const char* what, std::string (*name)()) {
    if (n > size_ - pos_) [[unlikely]]
      throw_truncated(n, what, name);
    const std::byte* p = data_ + pos_;
    pos_ += n;
    return p;
  }

  [[noreturn, gnu::cold, gnu::noinline]] void throw_truncated(std::size_t n, const char* what,
                                                              std::string (*name)()) const {
    std::string msg = "truncated input: need " + std::to_string(n) + " bytes for " + what;
    if (name != nullptr) msg += (*what != '\0' ? " of " : "") + name();
    msg += ", " + std::to_string(size_ - pos_) + " remain (at offset " + std::to_string(pos_) +
           ")";
    detail::throw_serialization_error(std::move(msg));
  }

  const std::byte* data_;
  std::size_t size_;
  std::size_t pos_ = 0;
  std::size_t depth_ = 0;
  std::size_t budget_;  // what the value being decoded may still allocate
  detail::DecodeScope decoding_;
};

namespace detail {

/// Names, at compile time, the innermost type that makes T unserializable and what to do
/// about it; called only when T is not serializable, so the error points at the culprit.
template <class T>
constexpr void diagnose() {
  if constexpr (is_serializable<T>()) {
    return;
  } else if constexpr (std::is_reference_v<T>) {
    static_assert(always_false_v<T>, "mproc: references cannot be serialized; use the value type");
  } else if constexpr (std::is_const_v<T> || std::is_volatile_v<T>) {
    static_assert(always_false_v<T>,
                  "mproc: cannot decode into a const or volatile object; use a non-const one");
  } else if constexpr (StdTraits<T>::refusal == Refusal::view) {
    static_assert(always_false_v<T>,
                  "mproc: std::string_view and std::span cannot be serialized (they would "
                  "travel as a pointer into this process); send a std::string or std::vector, "
                  "or put the data in an mproc::Array and send the Array (or a slice() of it): it "
                  "travels as a reference, without copying");
  } else if constexpr (std::is_enum_v<T>) {
    static_assert(always_false_v<T>,
                  "mproc: an enum without a fixed underlying type cannot be decoded safely "
                  "(an out-of-range value is undefined behaviour); declare it `enum class E` "
                  "or `enum E : int`, or give it a serialize(Archive&, E&) free function");
  } else if constexpr (kind_v<T> == Kind::string) {
    static_assert(always_false_v<T>,
                  "mproc: only strings of character (arithmetic) types are serializable");
  } else if constexpr (kind_v<T> == Kind::vector || kind_v<T> == Kind::sequence ||
                       kind_v<T> == Kind::array || kind_v<T> == Kind::optional) {
    diagnose<typename StdTraits<T>::element>();
  } else if constexpr (kind_v<T> == Kind::pair) {
    diagnose<typename T::first_type>();
    diagnose<typename T::second_type>();
  } else if constexpr (kind_v<T> == Kind::tuple || kind_v<T> == Kind::variant) {
    []<template <class...> class L, class... E>(std::type_identity<L<E...>>) {
      (diagnose<E>(), ...);
    }(std::type_identity<T>{});
  } else if constexpr (kind_v<T> == Kind::map) {
    diagnose<typename T::key_type>();
    diagnose<typename T::mapped_type>();
  } else if constexpr (kind_v<T> == Kind::set) {
    diagnose<typename T::key_type>();
  } else {
    static_assert(always_false_v<T>,
                  "mproc: this type is not serializable: add a serialize(Archive&) member or "
                  "free function, e.g. `template <class Archive> void serialize(Archive& ar) "
                  "{ ar(member1, member2); }`, or make the type trivially copyable");
  }
}

// What one element of a map or set encodes as, for the count bound.
template <class C, bool IsMap>
struct AssociativeElement {
  using type = typename C::key_type;
};
template <class C>
struct AssociativeElement<C, true> {
  using type = std::pair<typename C::key_type, typename C::mapped_type>;
};

/// The encoder and decoder for every Kind. One struct so that both archives can befriend it.
struct Codec {
  /// Encodes one value and refuses it if decoding it would exceed its allocation budget.
  template <class T>
  static void save_value(OutputArchive& ar, const T& v) {
    const std::size_t start = ar.out_->size();
    ar.charged_ = 0;
    save(ar, v);
    const std::size_t bytes = ar.out_->size() - start;
    if (ar.charged_ > alloc_budget(bytes)) [[unlikely]]
      throw_over_budget(ar.charged_, bytes, &type_name<T>);
  }

  template <class T>
  static void save(OutputArchive& ar, const T& v) {
    constexpr Kind k = kind_v<T>;
    if constexpr (!is_serializable<T>()) {
      diagnose<T>();
    } else if constexpr (k == Kind::boolean) {
      const unsigned char b = v ? 1 : 0;
      ar.write_bytes(&b, 1);
    } else if constexpr (k == Kind::arithmetic || k == Kind::raw) {
      ar.write_bytes(std::addressof(v), sizeof(T));
    } else if constexpr (k == Kind::enumeration) {
      save(ar, static_cast<std::underlying_type_t<T>>(v));
    } else if constexpr (k == Kind::string) {
      save_length(ar, v.size());
      charge<T>(ar, v.size());
      ar.write_bytes(v.data(), v.size() * sizeof(typename T::value_type));
    } else if constexpr (k == Kind::vector_bool) {
      save_bits(ar, v);
    } else if constexpr (k == Kind::vector) {
      save_length(ar, v.size());
      charge<T>(ar, v.size());
      const std::size_t start = ar.out_->size();
      save_range(ar, v.data(), v.size());
      check_encoded_size<T, typename T::value_type>(ar, start, v.size());
    } else if constexpr (k == Kind::sequence) {
      // forward_list has no size().
      const auto n = static_cast<std::size_t>(std::ranges::distance(v));
      save_length(ar, n);
      charge<T>(ar, n);
      const std::size_t start = ar.out_->size();
      for (const auto& e : v) save(ar, e);
      check_encoded_size<T, typename T::value_type>(ar, start, n);
    } else if constexpr (k == Kind::array) {
      save_range(ar, std::data(v), StdTraits<T>::size);
    } else if constexpr (k == Kind::pair) {
      save(ar, v.first);
      save(ar, v.second);
    } else if constexpr (k == Kind::tuple) {
      std::apply([&ar](const auto&... e) { (save(ar, e), ...); }, v);
    } else if constexpr (k == Kind::optional) {
      save(ar, v.has_value());
      if (v) save(ar, *v);
    } else if constexpr (k == Kind::variant) {
      if (v.valueless_by_exception()) [[unlikely]]
        throw_serialization_error("cannot encode a valueless " + type_name<T>());
      save_variant_index<T>(ar, v.index());
      std::visit([&ar](const auto& alt) { save(ar, alt); }, v);
    } else if constexpr (k == Kind::map) {
      save_length(ar, v.size());
      charge<T>(ar, v.size());
      const std::size_t start = ar.out_->size();
      for (const auto& [key, value] : v) {
        save(ar, key);
        save(ar, value);
      }
      check_encoded_size<T, std::pair<typename T::key_type, typename T::mapped_type>>(
          ar, start, v.size());
    } else if constexpr (k == Kind::set) {
      save_length(ar, v.size());
      charge<T>(ar, v.size());
      const std::size_t start = ar.out_->size();
      for (const auto& key : v) save(ar, key);
      check_encoded_size<T, typename T::key_type>(ar, start, v.size());
    } else {
      static_assert(k == Kind::user);
      DepthGuard guard(ar.depth_);
      // serialize() is written once for both directions, so it takes a non-const object;
      // with an OutputArchive it only reads it.
      call_user(ar, const_cast<T&>(v));
    }
  }

  template <class T>
  static void load(InputArchive& ar, T& v) {
    constexpr Kind k = kind_v<T>;
    if constexpr (!is_serializable<T>()) {
      diagnose<T>();
    } else if constexpr (k == Kind::boolean) {
      const auto b = std::to_integer<unsigned>(*ar.take(1, "", &type_name<bool>));
      if (b > 1) [[unlikely]]
        throw_serialization_error("invalid bool byte " + hex_byte(b) + " at offset " +
                                  std::to_string(ar.pos_ - 1));
      v = b == 1;
    } else if constexpr (k == Kind::arithmetic || k == Kind::raw) {
      std::memcpy(std::addressof(v), ar.take(sizeof(T), "", &type_name<T>), sizeof(T));
    } else if constexpr (k == Kind::enumeration) {
      std::underlying_type_t<T> u;
      load(ar, u);
      v = static_cast<T>(u);
    } else if constexpr (k == Kind::string) {
      using C = typename T::value_type;
      const std::size_t n = load_count<T, C>(ar);
      charge<T>(ar, n);
      v.resize(n);
      if (n != 0) std::memcpy(v.data(), ar.take(n * sizeof(C), "", &type_name<T>), n * sizeof(C));
    } else if constexpr (k == Kind::vector_bool) {
      load_bits(ar, v);
    } else if constexpr (k == Kind::vector) {
      const std::size_t n = load_count<T, typename T::value_type>(ar);
      charge<T>(ar, n);
      v.resize(n);
      load_range<T>(ar, v.data(), n);
    } else if constexpr (k == Kind::sequence) {
      const std::size_t n = load_count<T, typename T::value_type>(ar);
      charge<T>(ar, n);
      v.resize(n);
      for (auto& e : v) load(ar, e);
    } else if constexpr (k == Kind::array) {
      load_range<T>(ar, std::data(v), StdTraits<T>::size);
    } else if constexpr (k == Kind::pair) {
      load(ar, v.first);
      load(ar, v.second);
    } else if constexpr (k == Kind::tuple) {
      std::apply([&ar](auto&... e) { (load(ar, e), ...); }, v);
    } else if constexpr (k == Kind::optional) {
      const auto flag = std::to_integer<unsigned>(*ar.take(1, "flag", &type_name<T>));
      if (flag > 1) [[unlikely]]
        throw_serialization_error("invalid optional flag " + hex_byte(flag) + " for " +
                                  type_name<T>() + " at offset " + std::to_string(ar.pos_ - 1));
      if (flag == 0) {
        v.reset();
      } else {
        if (!v) v.emplace();
        load(ar, *v);
      }
    } else if constexpr (k == Kind::variant) {
      load_variant(ar, v, std::make_index_sequence<std::variant_size_v<T>>{});
    } else if constexpr (k == Kind::map || k == Kind::set) {
      load_associative(ar, v);
    } else {
      static_assert(k == Kind::user);
      DepthGuard guard(ar.depth_);
      call_user(ar, v);
    }
  }

 private:
  // Counts nesting of user types, the only way a type can recurse.
  struct DepthGuard {
    explicit DepthGuard(std::size_t& depth) : depth_(depth) {
      if (depth_ >= OutputArchive::max_depth) [[unlikely]]
        throw_serialization_error("user types nested deeper than " +
                                  std::to_string(OutputArchive::max_depth));
      ++depth_;
    }
    ~DepthGuard() { --depth_; }
    DepthGuard(const DepthGuard&) = delete;
    DepthGuard& operator=(const DepthGuard&) = delete;
    std::size_t& depth_;
  };

  template <class Archive, class T>
  static void call_user(Archive& ar, T& v) {
    if constexpr (has_member_serialize<T>)
      v.serialize(ar);
    else
      adl::call_serialize(ar, v);
  }

  static void save_length(OutputArchive& ar, std::size_t n) {
    const auto n64 = static_cast<std::uint64_t>(n);
    ar.write_bytes(&n64, sizeof n64);
  }

  // Reads a count of elements of E in container C and refuses it unless that many
  // elements could fit in the input left: the bound that keeps resize() honest.
  template <class C, class E>
  static std::size_t load_count(InputArchive& ar) {
    std::uint64_t n;
    std::memcpy(&n, ar.take(sizeof n, "length", &type_name<C>), sizeof n);
    constexpr std::size_t per = std::max<std::size_t>(1, min_size_v<E>);
    if (n > ar.remaining() / per) [[unlikely]]
      throw_count(n, per, ar.remaining(), &type_name<C>);
    return static_cast<std::size_t>(n);
  }

  [[noreturn, gnu::cold, gnu::noinline]] static void throw_count(std::uint64_t n, std::size_t per,
                                                                 std::size_t remain,
                                                                 std::string (*name)()) {
    throw_serialization_error("length " + std::to_string(n) + " of " + name() +
                              " exceeds the input: it needs at least " + std::to_string(per) +
                              " byte(s) per element and " + std::to_string(remain) +
                              " bytes remain");
  }

  // The allocation budget: the decoder checks each container's elements against what is
  // left of it before allocating them; the encoder adds up the same amounts, and
  // save_value compares the sum with the budget of the bytes written.
  template <class C, class Archive>
  static void charge(Archive& ar, std::size_t n) {
    constexpr std::size_t per = alloc_per_element<C>();
    spend(ar, n > SIZE_MAX / per ? SIZE_MAX : n * per, n, &type_name<C>);
  }

  static void spend(OutputArchive& ar, std::size_t bytes, std::size_t, std::string (*)()) {
    ar.charged_ = bytes > SIZE_MAX - ar.charged_ ? SIZE_MAX : ar.charged_ + bytes;
  }

  static void spend(InputArchive& ar, std::size_t bytes, std::size_t n, std::string (*name)()) {
    if (bytes > ar.budget_) [[unlikely]]
      throw_budget(bytes, n, ar.budget_, name);
    ar.budget_ -= bytes;
  }

  [[noreturn, gnu::cold, gnu::noinline]] static void throw_budget(std::size_t bytes, std::size_t n,
                                                                  std::size_t left,
                                                                  std::string (*name)()) {
    throw_serialization_error(
        "decoding " + name() + " of " + std::to_string(n) + " elements would allocate " +
        std::to_string(bytes) + " bytes, more than the " + std::to_string(left) +
        " left of the value's allowance (" + allowance_text() + "): corrupt or hostile input");
  }

  [[noreturn, gnu::cold, gnu::noinline]] static void throw_over_budget(std::size_t charged,
                                                                       std::size_t bytes,
                                                                       std::string (*name)()) {
    throw_serialization_error(
        "cannot encode " + name() + ": decoding its " + std::to_string(bytes) +
        " bytes would allocate " + std::to_string(charged) + " bytes, more than the " +
        std::to_string(alloc_budget(bytes)) + " a decoder allows for them (" + allowance_text() +
        ") and would refuse as hostile; send it in smaller pieces");
  }

  static std::string allowance_text() {
    return std::to_string(alloc_allowance >> 20) + " MiB + " + std::to_string(alloc_per_byte) +
           " bytes per input byte";
  }

  // A container of elements that may encode to nothing (user types) would be refused by
  // load_count's one-byte-per-element bound; refuse it here instead, where the mistake is.
  template <class C, class E>
  static void check_encoded_size(OutputArchive& ar, std::size_t start, std::size_t n) {
    if constexpr (min_size_v<E> == 0) {
      if (ar.out_->size() - start < n) [[unlikely]]
        throw_serialization_error(
            type_name<C>() + " of " + std::to_string(n) + " elements encodes to fewer than " +
            "one byte per element, which the decoder cannot bound; give the element type's "
            "serialize() at least one byte to write");
    }
  }

  template <class E>
  static void save_range(OutputArchive& ar, const E* p, std::size_t n) {
    if constexpr (is_bulk_v<E>) {
      ar.write_bytes(p, n * sizeof(E));
    } else {
      for (std::size_t i = 0; i < n; ++i) save(ar, p[i]);
    }
  }

  template <class C, class E>
  static void load_range(InputArchive& ar, E* p, std::size_t n) {
    if constexpr (is_bulk_v<E>) {
      // n is bounded by load_count (or is an array's N), so this cannot overflow.
      if (n != 0) std::memcpy(p, ar.take(n * sizeof(E), "elements", &type_name<C>), n * sizeof(E));
    } else {
      for (std::size_t i = 0; i < n; ++i) load(ar, p[i]);
    }
  }

  template <class V>
  static void save_bits(OutputArchive& ar, const V& v) {
    save_length(ar, v.size());
    spend(ar, v.size() / 8 + (v.size() % 8 != 0 ? 1 : 0), v.size(), &type_name<V>);
    unsigned char byte = 0;
    std::size_t i = 0;
    for (const bool bit : v) {
      byte = static_cast<unsigned char>(byte | (unsigned{bit} << (i % 8)));
      if (++i % 8 == 0) {
        ar.write_bytes(&byte, 1);
        byte = 0;
      }
    }
    if (i % 8 != 0) ar.write_bytes(&byte, 1);
  }

  template <class V>
  static void load_bits(InputArchive& ar, V& v) {
    std::uint64_t n;
    std::memcpy(&n, ar.take(sizeof n, "length", &type_name<V>), sizeof n);
    const std::uint64_t bytes = n / 8 + (n % 8 != 0 ? 1 : 0);
    if (bytes > ar.remaining()) [[unlikely]]
      throw_serialization_error("length " + std::to_string(n) + " of " + type_name<V>() +
                                " exceeds the input: it needs " + std::to_string(bytes) +
                                " bytes and " + std::to_string(ar.remaining()) + " remain");
    const std::byte* p = ar.take(static_cast<std::size_t>(bytes), "bits", &type_name<V>);
    spend(ar, static_cast<std::size_t>(bytes), static_cast<std::size_t>(n), &type_name<V>);
    v.resize(static_cast<std::size_t>(n));
    for (std::size_t i = 0; i < n; ++i) v[i] = ((std::to_integer<unsigned>(p[i / 8]) >> (i % 8)) & 1u) != 0;
    // Padding bits must be zero so that every value has exactly one encoding.
    if (n % 8 != 0 && (std::to_integer<unsigned>(p[bytes - 1]) >> (n % 8)) != 0) [[unlikely]]
      throw_serialization_error("nonzero padding bits in " + type_name<V>());
  }

  template <class V>
  static void save_variant_index(OutputArchive& ar, std::size_t index) {
    if constexpr (std::variant_size_v<V> <= 256) {
      save(ar, static_cast<std::uint8_t>(index));
    } else {
      save(ar, static_cast<std::uint32_t>(index));
    }
  }

  template <class V, std::size_t I>
  static void load_alternative(InputArchive& ar, V& v) {
    if (v.index() != I) v.template emplace<I>();
    load(ar, *std::get_if<I>(&v));
  }

  template <class V, std::size_t... I>
  static void load_variant(InputArchive& ar, V& v, std::index_sequence<I...>) {
    constexpr std::size_t n = sizeof...(I);
    using Index = std::conditional_t<(n <= 256), std::uint8_t, std::uint32_t>;
    Index index;
    std::memcpy(&index, ar.take(sizeof index, "index", &type_name<V>), sizeof index);
    if (index >= n) [[unlikely]]
      throw_serialization_error("invalid variant index " + std::to_string(index) + " of " +
                                std::to_string(n) + " for " + type_name<V>());
    using Load = void (*)(InputArchive&, V&);
    static constexpr Load table[] = {&load_alternative<V, I>...};
    table[index](ar, v);
  }

  template <class C>
  static void load_associative(InputArchive& ar, C& c) {
    constexpr bool is_map = kind_v<C> == Kind::map;
    using Key = typename C::key_type;
    using Element = typename AssociativeElement<C, is_map>::type;
    const std::size_t n = load_count<C, Element>(ar);
    charge<C>(ar, n);
    c.clear();
    if constexpr (!StdTraits<C>::ordered) c.reserve(n);
    for (std::size_t i = 0; i < n; ++i) {
      Key key{};
      load(ar, key);
      if constexpr (StdTraits<C>::ordered) {
        // One value, one encoding: the keys come in the container's own order, which is
        // how the encoder iterates. Checked against the last key, so the end() hint
        // below is exact and each insertion is amortised constant time.
        if (!c.empty()) {
          const Key& last = key_of<is_map>(*std::prev(c.end()));
          if (c.key_comp()(key, last)) [[unlikely]]
            throw_key(i, "keys out of order in ", &type_name<C>);
          if (!StdTraits<C>::multi && !c.key_comp()(last, key)) [[unlikely]]
            throw_key(i, "duplicate key in ", &type_name<C>);
        }
      }
      const std::size_t before = c.size();
      if constexpr (is_map) {
        typename C::mapped_type value{};
        load(ar, value);
        if constexpr (StdTraits<C>::ordered)
          c.emplace_hint(c.end(), std::move(key), std::move(value));
        else
          c.emplace(std::move(key), std::move(value));
      } else {
        if constexpr (StdTraits<C>::ordered)
          c.emplace_hint(c.end(), std::move(key));
        else
          c.emplace(std::move(key));
      }
      // A repeated key would silently shrink an unordered container; the encoder never
      // writes one. (The ordered ones refused it above.)
      if (!StdTraits<C>::multi && c.size() == before) [[unlikely]]
        throw_key(i, "duplicate key in ", &type_name<C>);
    }
  }

  template <bool IsMap, class V>
  static const auto& key_of(const V& element) {
    if constexpr (IsMap)
      return element.first;
    else
      return element;
  }

  [[noreturn, gnu::cold, gnu::noinline]] static void throw_key(std::size_t i, const char* what,
                                                               std::string (*name)()) {
    throw_serialization_error(what + name() + " at element " + std::to_string(i));
  }
};

}  // namespace detail

// A call outside any serialize() (depth 0) starts a value, with a budget of its own: so
// each value's budget on the decoding side is at least the one it was encoded under,
// however the values were grouped into calls on either side.
template <class... T>
OutputArchive& OutputArchive::operator()(const T&... values) {
  if (depth_ == 0)
    (detail::Codec::save_value(*this, values), ...);
  else
    (detail::Codec::save(*this, values), ...);
  return *this;
}

template <class... T>
InputArchive& InputArchive::operator()(T&... values) {
  if (depth_ == 0)
    ((budget_ = detail::alloc_budget(remaining()), detail::Codec::load(*this, values)), ...);
  else
    (detail::Codec::load(*this, values), ...);
  return *this;
}

/// Appends the encoding of each value to `out`, which is left as it was if this throws.
/// Throws SerializationError for a value the format cannot carry (see OutputArchive).
template <class... T>
void dump_into(std::vector<std::byte>& out, const T&... values) {
  if constexpr (!(serializable<T> && ...)) {
    // Fails a static_assert that names the innermost unserializable type and the fix.
    (detail::diagnose<T>(), ...);
  } else {
    const std::size_t mark = out.size();
    try {
      OutputArchive ar(out);
      ar(values...);
    } catch (...) {
      out.resize(mark);
      throw;
    }
  }
}

/// The encoding of the values, one after the other. Throws as dump_into.
template <class... T>
std::vector<std::byte> dumps(const T&... values) {
  std::vector<std::byte> out;
  dump_into(out, values...);
  return out;
}

/// Decodes `bytes` into each of `out` in turn, replacing their contents. Throws
/// SerializationError on malformed input or if bytes are left over; the outputs are then
/// valid but unspecified.
template <class... T>
void loads_into(std::span<const std::byte> bytes, T&... out) {
  static_assert(!(std::is_const_v<T> || ...), "mproc::loads_into: cannot decode into a const object");
  if constexpr (!(serializable<T> && ...)) {
    (detail::diagnose<std::remove_const_t<T>>(), ...);  // as in dump_into
  } else {
    InputArchive ar(bytes);
    ar(out...);
    if (!ar.at_end()) [[unlikely]]
      detail::throw_serialization_error(
          std::to_string(ar.remaining()) + " trailing bytes after the decoded value(s) (" +
          std::to_string(ar.position()) + " of " + std::to_string(bytes.size()) + " bytes used)");
  }
}

/// Decodes a T that must use all of `bytes`. T must be default-constructible.
/// Throws SerializationError on malformed input or trailing bytes.
template <class T>
T loads(std::span<const std::byte> bytes) {
  static_assert(!std::is_reference_v<T> && !std::is_const_v<T>,
                "mproc::loads<T>: T must be a non-const value type");
  static_assert(std::is_default_constructible_v<T>,
                "mproc::loads<T>: T must be default-constructible; decode into an existing "
                "object with loads_into");
  const detail::DecodeScope decoding;  // a shared handle T starts empty, not new
  T value{};
  loads_into(bytes, value);
  return value;
}

// ---- framing for byte streams ----

/// A frame header: "MPRF", four reserved bytes (zero), the payload length as u64.
inline constexpr std::size_t frame_header_size = 16;

/// The header that encode_frame puts before a payload of `payload_size` bytes, for writing
/// header and payload separately (writev) without copying the payload.
inline std::array<std::byte, frame_header_size> encode_frame_header(std::uint64_t payload_size) {
  std::array<std::byte, frame_header_size> h{std::byte{'M'}, std::byte{'P'}, std::byte{'R'},
                                              std::byte{'F'}};
  std::memcpy(h.data() + 8, &payload_size, sizeof payload_size);
  return h;
}

/// `payload` behind a frame header, for streams that do not keep message boundaries.
inline std::vector<std::byte> encode_frame(std::span<const std::byte> payload) {
  std::vector<std::byte> out;
  out.reserve(frame_header_size + payload.size());
  const auto header = encode_frame_header(payload.size());
  out.insert(out.end(), header.begin(), header.end());
  out.insert(out.end(), payload.begin(), payload.end());
  return out;
}

/// Splits a byte stream back into the payloads encode_frame framed, however the stream
/// was cut: a frame may arrive in any number of feed() calls and one feed() may carry
/// several frames. Not thread-safe.
class FrameDecoder {
 public:
  /// Frames longer than `max_frame` bytes are refused (the default is 16 GiB).
  explicit FrameDecoder(std::size_t max_frame = std::size_t{1} << 34) noexcept
      : max_frame_(max_frame) {}

  /// Consumes `bytes`. Does not block. Throws SerializationError if an earlier feed() met
  /// a bad header; a bad header in these bytes is reported by next(), after the frames
  /// before it.
  void feed(std::span<const std::byte> bytes) {
    if (!error_.empty()) detail::throw_serialization_error(error_);
    while (!bytes.empty() && error_.empty()) {
      if (!in_payload_) {
        const std::size_t n = std::min(bytes.size(), frame_header_size - header_fill_);
        std::memcpy(header_.data() + header_fill_, bytes.data(), n);
        header_fill_ += n;
        bytes = bytes.subspan(n);
        if (header_fill_ == frame_header_size) start_payload();
      } else {
        const std::size_t n =
            static_cast<std::size_t>(std::min<std::uint64_t>(bytes.size(), payload_left()));
        if (payload_.capacity() - payload_.size() < n) {
          // Grow with the data actually received, never straight to a declared length
          // that the sender may never deliver.
          const std::size_t want = std::max(payload_.size() + n, 2 * payload_.capacity());
          payload_.reserve(static_cast<std::size_t>(std::min<std::uint64_t>(want, payload_size_)));
        }
        payload_.insert(payload_.end(), bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(n));
        bytes = bytes.subspan(n);
      }
      if (in_payload_ && payload_left() == 0) finish_payload();
    }
  }

  /// The next complete payload, or nullopt if none is complete yet. Does not block.
  /// Throws SerializationError, once all frames before it are taken, for a header with a
  /// bad magic, nonzero reserved bytes or a length over max_frame; the decoder then stays
  /// failed.
  std::optional<std::vector<std::byte>> next() {
    if (!ready_.empty()) {
      std::vector<std::byte> frame = std::move(ready_.front());
      ready_.pop_front();
      return frame;
    }
    if (!error_.empty()) detail::throw_serialization_error(error_);
    return std::nullopt;
  }

  /// Bytes received for frames that are not complete yet.
  std::size_t pending_bytes() const noexcept {
    return in_payload_ ? frame_header_size + payload_.size() : header_fill_;
  }

 private:
  std::uint64_t payload_left() const noexcept { return payload_size_ - payload_.size(); }

  void start_payload() {
    header_fill_ = 0;
    if (std::memcmp(header_.data(), "MPRF", 4) != 0) {
      error_ = "bad frame magic";
      for (std::size_t i = 0; i < 4; ++i)
        error_ += ' ' + detail::hex_byte(std::to_integer<unsigned>(header_[i]));
      error_ += " (expected \"MPRF\")";
      return;
    }
    std::uint32_t reserved;
    std::memcpy(&reserved, header_.data() + 4, sizeof reserved);
    if (reserved != 0) {
      error_ = "nonzero reserved bytes in frame header: " + std::to_string(reserved);
      return;
    }
    std::memcpy(&payload_size_, header_.data() + 8, sizeof payload_size_);
    if (payload_size_ > max_frame_) {
      error_ = "frame length " + std::to_string(payload_size_) + " exceeds the maximum of " +
               std::to_string(max_frame_) + " bytes";
      return;
    }
    in_payload_ = true;
    payload_.clear();
  }

  void finish_payload() {
    ready_.push_back(std::move(payload_));
    payload_ = {};
    in_payload_ = false;
  }

  std::size_t max_frame_;
  std::array<std::byte, frame_header_size> header_{};
  std::size_t header_fill_ = 0;
  bool in_payload_ = false;
  std::uint64_t payload_size_ = 0;
  std::vector<std::byte> payload_;
  std::deque<std::vector<std::byte>> ready_;
  std::string error_;  // set once a bad header is seen
};

}  // namespace mproc
