// Fixed-layout encoding of protocol headers: little-endian plain values appended to a
// byte vector and read back with bounds checks. Payloads (arguments, results) go through
// mproc's serialization instead. Internal to libmproc.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "mproc/error.hpp"

namespace mproc::detail {

template <class T>
  requires std::is_trivially_copyable_v<T>
void put(std::vector<std::byte>& out, const T& v) {
  // resize + memcpy rather than insert(): g++ 12 at -O3 reports a bogus
  // -Wstringop-overflow for a range insert into a vector it has seen cleared.
  const std::size_t n = out.size();
  out.resize(n + sizeof(T));
  std::memcpy(out.data() + n, &v, sizeof(T));
}

/// Appends a chunk's item end offsets as u64s, in one copy.
inline void append_ends(std::vector<std::byte>& out, const std::vector<std::size_t>& ends) {
  static_assert(sizeof(std::size_t) == sizeof(std::uint64_t));
  const std::size_t n = out.size();
  out.resize(n + ends.size() * sizeof(std::uint64_t));
  if (!ends.empty()) std::memcpy(out.data() + n, ends.data(), ends.size() * sizeof(std::uint64_t));
}

inline void put_string(std::vector<std::byte>& out, std::string_view s) {
  put<std::uint64_t>(out, s.size());
  const auto* p = reinterpret_cast<const std::byte*>(s.data());
  out.insert(out.end(), p, p + s.size());
}

/// Reads values from a message; any read past the end throws SerializationError.
class WireReader {
 public:
  explicit WireReader(std::span<const std::byte> bytes) : bytes_(bytes) {}

  template <class T>
    requires std::is_trivially_copyable_v<T>
  T get() {
    T v;
    std::memcpy(&v, take(sizeof(T)).data(), sizeof(T));
    return v;
  }
  std::string get_string() {
    const auto n = get<std::uint64_t>();
    auto b = take(n);
    return std::string(reinterpret_cast<const char*>(b.data()), b.size());
  }
  std::span<const std::byte> take(std::size_t n) {
    if (n > bytes_.size() - pos_) throw SerializationError("truncated protocol message");
    auto b = bytes_.subspan(pos_, n);
    pos_ += n;
    return b;
  }
  std::span<const std::byte> rest() const { return bytes_.subspan(pos_); }

 private:
  std::span<const std::byte> bytes_;
  std::size_t pos_ = 0;
};

}  // namespace mproc::detail
