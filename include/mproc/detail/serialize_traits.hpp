// How mproc/serialize.hpp classifies a type: which wire encoding it gets, whether it is
// serializable at all, whether a run of it can be copied with one memcpy, and the fewest
// bytes one value can encode to. Internal to mproc; everything here is compile-time except
// the error-message helpers, which only run when a decode fails.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <forward_list>
#include <list>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <variant>
#include <vector>

#include "../error.hpp"

namespace mproc {

class OutputArchive;
class InputArchive;

namespace detail {

template <class T>
inline constexpr bool always_false_v = false;

/// The wire encoding a type gets. The order of the checks in kind_of() is the precedence.
enum class Kind {
  unsupported,
  boolean,        // one byte, 0 or 1
  arithmetic,     // sizeof(T) bytes, little-endian
  enumeration,    // as its underlying type; only enums with a fixed underlying type
  string,         // u64 length, then the characters
  vector_bool,    // u64 length, then the bits packed LSB-first, padding bits zero
  vector,         // u64 length, then the elements
  sequence,       // u64 length, then the elements (deque, list, forward_list)
  array,          // the N elements (std::array and C arrays), no length
  pair,           // first, second
  tuple,          // the elements in order
  optional,       // one byte 0/1, then the value when 1
  variant,        // index (u8, or u32 past 256 alternatives), then the alternative
  map,            // u64 count, then key, value pairs ([unordered_][multi]map)
  set,            // u64 count, then keys ([unordered_][multi]set)
  user,           // whatever the type's serialize() writes
  raw,            // any other trivially copyable type: sizeof(T) bytes, copied as is
};

// Why some std types are refused rather than copied as trivially copyable bytes: a view
// would travel as a pointer into the sender's memory. Sending data without copying is
// what mproc::Array does (shared.hpp): it travels as a reference to its segment.
enum class Refusal { none, view };

struct StdTraitsBase {
  static constexpr Refusal refusal = Refusal::none;
};

template <class T>
struct StdTraits : StdTraitsBase {
  static constexpr Kind kind = Kind::unsupported;
};

template <class C, class Tr, class A>
struct StdTraits<std::basic_string<C, Tr, A>> : StdTraitsBase {
  static constexpr Kind kind = Kind::string;
  using element = C;
};
template <class A>
struct StdTraits<std::vector<bool, A>> : StdTraitsBase {
  static constexpr Kind kind = Kind::vector_bool;
};
template <class T, class A>
struct StdTraits<std::vector<T, A>> : StdTraitsBase {
  static constexpr Kind kind = Kind::vector;
  using element = T;
};
// The other sequence containers encode as a vector does; `links` is the pointers a node
// holds besides its element (for the allocation budget).
template <class T, class A>
struct StdTraits<std::deque<T, A>> : StdTraitsBase {
  static constexpr Kind kind = Kind::sequence;
  using element = T;
  static constexpr std::size_t links = 0;
};
template <class T, class A>
struct StdTraits<std::list<T, A>> : StdTraitsBase {
  static constexpr Kind kind = Kind::sequence;
  using element = T;
  static constexpr std::size_t links = 2;
};
template <class T, class A>
struct StdTraits<std::forward_list<T, A>> : StdTraitsBase {
  static constexpr Kind kind = Kind::sequence;
  using element = T;
  static constexpr std::size_t links = 1;
};
template <class T, std::size_t N>
struct StdTraits<std::array<T, N>> : StdTraitsBase {
  static constexpr Kind kind = Kind::array;
  using element = T;
  static constexpr std::size_t size = N;
};
template <class T, std::size_t N>
struct StdTraits<T[N]> : StdTraitsBase {
  static constexpr Kind kind = Kind::array;
  using element = T;
  static constexpr std::size_t size = N;
};
template <class A, class B>
struct StdTraits<std::pair<A, B>> : StdTraitsBase {
  static constexpr Kind kind = Kind::pair;
};
template <class... T>
struct StdTraits<std::tuple<T...>> : StdTraitsBase {
  static constexpr Kind kind = Kind::tuple;
};
template <class T>
struct StdTraits<std::optional<T>> : StdTraitsBase {
  static constexpr Kind kind = Kind::optional;
  using element = T;
};
template <class... T>
struct StdTraits<std::variant<T...>> : StdTraitsBase {
  static constexpr Kind kind = Kind::variant;
};
// `ordered`: iterates in key order, so the keys of an encoding must come in that order
// (strictly for map and set, non-decreasing for the multi- containers). `multi`: equal
// keys may repeat; otherwise a repeated key is refused, as it would be dropped.
template <class K, class V, class C, class A>
struct StdTraits<std::map<K, V, C, A>> : StdTraitsBase {
  static constexpr Kind kind = Kind::map;
  static constexpr bool ordered = true;
  static constexpr bool multi = false;
};
template <class K, class V, class C, class A>
struct StdTraits<std::multimap<K, V, C, A>> : StdTraitsBase {
  static constexpr Kind kind = Kind::map;
  static constexpr bool ordered = true;
  static constexpr bool multi = true;
};
template <class K, class V, class H, class E, class A>
struct StdTraits<std::unordered_map<K, V, H, E, A>> : StdTraitsBase {
  static constexpr Kind kind = Kind::map;
  static constexpr bool ordered = false;
  static constexpr bool multi = false;
};
template <class K, class V, class H, class E, class A>
struct StdTraits<std::unordered_multimap<K, V, H, E, A>> : StdTraitsBase {
  static constexpr Kind kind = Kind::map;
  static constexpr bool ordered = false;
  static constexpr bool multi = true;
};
template <class K, class C, class A>
struct StdTraits<std::set<K, C, A>> : StdTraitsBase {
  static constexpr Kind kind = Kind::set;
  static constexpr bool ordered = true;
  static constexpr bool multi = false;
};
template <class K, class C, class A>
struct StdTraits<std::multiset<K, C, A>> : StdTraitsBase {
  static constexpr Kind kind = Kind::set;
  static constexpr bool ordered = true;
  static constexpr bool multi = true;
};
template <class K, class H, class E, class A>
struct StdTraits<std::unordered_set<K, H, E, A>> : StdTraitsBase {
  static constexpr Kind kind = Kind::set;
  static constexpr bool ordered = false;
  static constexpr bool multi = false;
};
template <class K, class H, class E, class A>
struct StdTraits<std::unordered_multiset<K, H, E, A>> : StdTraitsBase {
  static constexpr Kind kind = Kind::set;
  static constexpr bool ordered = false;
  static constexpr bool multi = true;
};
template <class C, class Tr>
struct StdTraits<std::basic_string_view<C, Tr>> {
  static constexpr Kind kind = Kind::unsupported;
  static constexpr Refusal refusal = Refusal::view;
};
template <class T, std::size_t N>
struct StdTraits<std::span<T, N>> {
  static constexpr Kind kind = Kind::unsupported;
  static constexpr Refusal refusal = Refusal::view;
};

template <class T>
concept has_member_serialize = requires(T& t, OutputArchive& out, InputArchive& in) {
  t.serialize(out);
  t.serialize(in);
};

namespace adl {
// A deleted declaration so that ordinary lookup stops here and only argument-dependent
// lookup can find a user's serialize(Archive&, T&): in T's namespace, or in namespace
// mproc (the archive's), which is where overloads for types one does not own go.
void serialize() = delete;

template <class T>
concept has_free_serialize = requires(T& t, OutputArchive& out, InputArchive& in) {
  serialize(out, t);
  serialize(in, t);
};

template <class Archive, class T>
void call_serialize(Archive& ar, T& t) {
  serialize(ar, t);
}
}  // namespace adl

template <class T>
concept has_user_serialize = has_member_serialize<T> || adl::has_free_serialize<T>;

// Only an enum with a fixed underlying type (every scoped enum, and `enum E : int`) has
// every value of that type as a valid value; for the others, converting an out-of-range
// number is undefined behaviour ([expr.static.cast]/10), and the range cannot be known
// without reflection. Direct-list-initialization from an integer compiles exactly for
// fixed underlying types ([dcl.init.list]/3.8).
template <class E>
concept fixed_enum = std::is_enum_v<E> && requires { E{std::underlying_type_t<E>{}}; };

template <class T>
constexpr Kind kind_of() {
  if constexpr (std::is_same_v<T, bool>) {
    return Kind::boolean;
  } else if constexpr (std::is_arithmetic_v<T>) {
    return Kind::arithmetic;
  } else if constexpr (std::is_enum_v<T> && has_user_serialize<T>) {
    return Kind::user;
  } else if constexpr (std::is_enum_v<T>) {
    return fixed_enum<T> ? Kind::enumeration : Kind::unsupported;
  } else if constexpr (StdTraits<T>::kind != Kind::unsupported ||
                       StdTraits<T>::refusal != Refusal::none) {
    return StdTraits<T>::kind;
  } else if constexpr (has_user_serialize<T>) {
    return Kind::user;
  } else if constexpr (std::is_trivially_copyable_v<T> && !std::is_const_v<T> &&
                       !std::is_volatile_v<T>) {
    return Kind::raw;
  } else {
    return Kind::unsupported;
  }
}

template <class T>
inline constexpr Kind kind_v = kind_of<T>();

template <class T>
constexpr bool is_serializable();

template <class Tuple>
struct AllSerializable;
template <template <class...> class L, class... T>
struct AllSerializable<L<T...>> {
  static constexpr bool value = (is_serializable<T>() && ...);
};

template <class T>
constexpr bool is_serializable() {
  if constexpr (std::is_reference_v<T> || std::is_const_v<T> || std::is_volatile_v<T>) {
    return false;
  } else {
    constexpr Kind k = kind_v<T>;
    if constexpr (k == Kind::unsupported) {
      return false;
    } else if constexpr (k == Kind::string) {
      return kind_v<typename StdTraits<T>::element> == Kind::arithmetic;
    } else if constexpr (k == Kind::vector || k == Kind::sequence || k == Kind::array ||
                         k == Kind::optional) {
      return is_serializable<typename StdTraits<T>::element>();
    } else if constexpr (k == Kind::pair || k == Kind::tuple || k == Kind::variant) {
      return AllSerializable<T>::value;
    } else if constexpr (k == Kind::map) {
      return is_serializable<typename T::key_type>() && is_serializable<typename T::mapped_type>();
    } else if constexpr (k == Kind::set) {
      return is_serializable<typename T::key_type>();
    } else if constexpr (k == Kind::enumeration) {
      return is_serializable<std::underlying_type_t<T>>();
    } else {
      return true;
    }
  }
}

/// True when a contiguous run of T is its own wire encoding, so it can be written and read
/// with one memcpy: every bit pattern of it is a valid T (no bool, no variant index, no
/// optional flag), and no serialize() asks for something else.
template <class T>
constexpr bool is_bulk() {
  constexpr Kind k = kind_v<T>;
  if constexpr (k == Kind::arithmetic || k == Kind::raw) {
    return true;
  } else if constexpr (k == Kind::enumeration) {
    return !std::is_same_v<std::underlying_type_t<T>, bool>;
  } else if constexpr (k == Kind::array) {
    using E = typename StdTraits<T>::element;
    return is_bulk<E>() && sizeof(T) == StdTraits<T>::size * sizeof(E);
  } else {
    return false;
  }
}

template <class T>
inline constexpr bool is_bulk_v = is_bulk<T>();

/// The fewest bytes any value of T encodes to; 0 for user types, whose encoding is
/// unknown. Decoding a count of elements checks count * max(1, this) against the bytes
/// left, so a hostile count cannot make the decoder allocate more than a valid message
/// of the same length could need.
template <class T>
constexpr std::size_t min_size() {
  constexpr Kind k = kind_v<T>;
  if constexpr (k == Kind::boolean || k == Kind::optional) {
    return 1;
  } else if constexpr (k == Kind::arithmetic || k == Kind::raw) {
    return sizeof(T);
  } else if constexpr (k == Kind::enumeration) {
    return min_size<std::underlying_type_t<T>>();
  } else if constexpr (k == Kind::string || k == Kind::vector || k == Kind::vector_bool ||
                       k == Kind::sequence || k == Kind::map || k == Kind::set) {
    return 8;
  } else if constexpr (k == Kind::array) {
    return StdTraits<T>::size * min_size<typename StdTraits<T>::element>();
  } else if constexpr (k == Kind::pair) {
    return min_size<typename T::first_type>() + min_size<typename T::second_type>();
  } else if constexpr (k == Kind::tuple) {
    return []<std::size_t... I>(std::index_sequence<I...>) {
      return (std::size_t{0} + ... + min_size<std::tuple_element_t<I, T>>());
    }(std::make_index_sequence<std::tuple_size_v<T>>{});
  } else if constexpr (k == Kind::variant) {
    constexpr std::size_t n = std::variant_size_v<T>;
    return (n <= 256 ? 1 : 4) + []<std::size_t... I>(std::index_sequence<I...>) {
      std::size_t m = SIZE_MAX;
      ((m = std::min(m, min_size<std::variant_alternative_t<I, T>>())), ...);
      return m;
    }(std::make_index_sequence<n>{});
  } else {
    return 0;
  }
}

template <class T>
inline constexpr std::size_t min_size_v = min_size<T>();

// ---- the decode allocation budget ----

/// Decoding one value may allocate, for the elements of the containers in it, at most
/// alloc_allowance + alloc_per_byte * (the bytes left when the value starts). Valid data
/// sits far inside it: a vector<double> or a string needs 1 byte per input byte, a
/// std::set<char> node 40. What it stops is a few input bytes asking for a lot of memory:
/// a std::nullopt is 1 byte on the wire and may be sizeof(T) in a vector.
inline constexpr std::size_t alloc_allowance = std::size_t{64} << 20;
inline constexpr std::size_t alloc_per_byte = 64;

/// The budget of a value that starts with `input_bytes` left, saturating.
constexpr std::size_t alloc_budget(std::size_t input_bytes) noexcept {
  if (input_bytes > (SIZE_MAX - alloc_allowance) / alloc_per_byte) return SIZE_MAX;
  return alloc_allowance + alloc_per_byte * input_bytes;
}

/// What default-constructing a T allocates before it holds anything: libstdc++'s deque
/// allocates its map (8 pointers) and one block (512 bytes, or one element if larger);
/// the other std types nothing. (A user type's constructor is its own business.)
template <class T>
constexpr std::size_t alloc_on_construct() {
  constexpr Kind k = kind_v<T>;
  if constexpr (k == Kind::sequence) {
    if constexpr (std::is_same_v<T, std::deque<typename T::value_type, typename T::allocator_type>>)
      return 8 * sizeof(void*) + std::max<std::size_t>(512, sizeof(typename T::value_type));
    else
      return 0;
  } else if constexpr (k == Kind::array) {
    return StdTraits<T>::size * alloc_on_construct<typename StdTraits<T>::element>();
  } else if constexpr (k == Kind::pair) {
    return alloc_on_construct<typename T::first_type>() +
           alloc_on_construct<typename T::second_type>();
  } else if constexpr (k == Kind::tuple) {
    return []<std::size_t... I>(std::index_sequence<I...>) {
      return (std::size_t{0} + ... + alloc_on_construct<std::tuple_element_t<I, T>>());
    }(std::make_index_sequence<std::tuple_size_v<T>>{});
  } else {
    return 0;
  }
}

/// What one element of container C costs the budget: its size in the container, what
/// constructing it allocates, and the node links of a node-based container (libstdc++'s:
/// a list node two pointers, a red-black node a colour and three pointers, a hash node a
/// next pointer and maybe the hash, and the bucket array a pointer per element). An
/// estimate of what the allocator is asked for, the same on both sides: the encoder adds
/// up the same charges and refuses what the decoder would.
template <class C>
constexpr std::size_t alloc_per_element() {
  constexpr Kind k = kind_v<C>;
  constexpr std::size_t ptr = sizeof(void*);
  using E = typename C::value_type;
  if constexpr (k == Kind::string) {
    return sizeof(E);
  } else if constexpr (k == Kind::vector) {
    return sizeof(E) + alloc_on_construct<E>();
  } else if constexpr (k == Kind::sequence) {
    return sizeof(E) + alloc_on_construct<E>() + StdTraits<C>::links * ptr;
  } else if constexpr (k == Kind::map || k == Kind::set) {
    return sizeof(E) + alloc_on_construct<E>() + (StdTraits<C>::ordered ? 4 * ptr : 3 * ptr);
  } else {
    static_assert(always_false_v<C>, "not a container");
  }
}

// ---- error messages: built only on the failure path ----

template <class T>
constexpr auto raw_type_name() noexcept {
  return __PRETTY_FUNCTION__;
}

/// A readable name of T, from the compiler's own signature text, so that it costs nothing
/// until an error message needs it. libstdc++'s inline-namespaced std::string is shortened.
template <class T>
std::string type_name() {
  std::string_view s = raw_type_name<T>();
  const std::size_t begin = s.find("T = ");
  const std::size_t end = s.rfind(']');
  if (begin == std::string_view::npos || end == std::string_view::npos || end < begin)
    return std::string(s);
  std::string name(s.substr(begin + 4, end - begin - 4));
  for (std::string_view verbose :
       {std::string_view("std::__cxx11::basic_string<char, std::char_traits<char>, "
                         "std::allocator<char> >"),
        std::string_view("std::__cxx11::basic_string<char>"),
        std::string_view("std::basic_string<char, std::char_traits<char>, std::allocator<char> >"),
        std::string_view("std::basic_string<char>")}) {
    for (std::size_t at; (at = name.find(verbose)) != std::string::npos;)
      name.replace(at, verbose.size(), "std::string");
  }
  return name;
}

inline std::string hex_byte(unsigned value) {
  static constexpr char digits[] = "0123456789abcdef";
  return std::string{'0', 'x', digits[(value >> 4) & 0xf], digits[value & 0xf]};
}

[[noreturn, gnu::cold, gnu::noinline]] inline void throw_serialization_error(std::string message) {
  throw SerializationError(std::move(message));
}

}  // namespace detail
}  // namespace mproc
