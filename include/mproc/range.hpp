// mproc::range(a, b): Python's range(a, b) as a sized random-access view of integers,
// convenient as the input of Pool::map.
#pragma once

#include <ranges>
#include <type_traits>

namespace mproc {

/// The integers a, a+1, ..., b-1 (empty when b <= a). The element type is the common type
/// of a and b, so range(1, 5001) yields int and range(0L, n) yields long.
template <class A, class B>
  requires std::is_integral_v<A> && std::is_integral_v<B>
auto range(A a, B b) {
  using T = std::common_type_t<A, B>;
  const T first = static_cast<T>(a);
  const T last = static_cast<T>(b) < first ? first : static_cast<T>(b);
  return std::views::iota(first, last);
}

/// The integers 0, 1, ..., n-1.
template <class T>
  requires std::is_integral_v<T>
auto range(T n) {
  return range(T{0}, n);
}

}  // namespace mproc
