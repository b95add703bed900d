#include "mproc/shared.hpp"

#include <limits>

#include <fmt/format.h>

namespace mproc::detail {

Segment make_shared_data(SharedKind kind, std::size_t element_size, std::size_t count,
                         const char* purpose) {
  if (count > (std::numeric_limits<std::size_t>::max() - kSharedDataOffset) / element_size)
    throw std::length_error(fmt::format("mproc::{} of {} elements is too large", purpose, count));
  Segment s = Segment::create(kSharedDataOffset + element_size * count, purpose);
  init_lock_block(s.data(), true);
  auto* h = new (s.data() + kSharedHeaderOffset) SharedDataHeader{};
  h->kind = static_cast<std::uint32_t>(kind);
  h->element_size = static_cast<std::uint32_t>(element_size);
  h->count = count;
  return s;
}

void check_shared_data(const Segment& s, SharedKind kind, std::size_t element_size,
                       std::uint64_t offset, std::uint64_t count, const char* what) {
  check_kind(s.data() + kSharedHeaderOffset, kind, what);
  const auto* h = reinterpret_cast<const SharedDataHeader*>(s.data() + kSharedHeaderOffset);
  if (h->element_size != element_size)
    throw SharedStateError(fmt::format("{}: the handle names elements of {} bytes, not {}", what,
                                       h->element_size, element_size));
  const std::uint64_t end = kSharedDataOffset + h->count * element_size;
  if (end > s.size() || offset < kSharedDataOffset || offset > end ||
      (offset - kSharedDataOffset) % element_size != 0 || count > (end - offset) / element_size)
    throw SerializationError(
        fmt::format("{}: a slice of {} elements at byte {} lies outside the data", what, count,
                    offset));
}

}  // namespace mproc::detail
