// Python's range, zip and numpy's array_split as C++ ranges, convenient as the inputs of
// Pool::map and Pool::starmap:
//
//   pool.map(f, mproc::range(10, 0, -2));             // 10 8 6 4 2
//   pool.starmap(add, mproc::zip(xs, ys));            // f(xs[i], ys[i])
//   for (auto part : mproc::chunks(v, 4)) ...         // 4 nearly equal contiguous parts
//
// The views hold their inputs as std::views::all does: an lvalue by reference (keep it
// alive while the view is used), an rvalue by moving it in. None of them is thread-safe
// to advance from several threads; reading a const view from several threads is.
#pragma once

#include <algorithm>
#include <compare>
#include <cstddef>
#include <iterator>
#include <limits>
#include <ranges>
#include <span>
#include <stdexcept>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

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

/// Python's range(start, stop, step) with a step: a sized, random-access view of the
/// integers start, start + step, ... that stop before `stop` (after it, for a negative
/// step). Its values are computed, never stored. See range(start, stop, step).
template <class T>
class StepRange : public std::ranges::view_interface<StepRange<T>> {
  using U = std::make_unsigned_t<T>;

 public:
  class iterator {
   public:
    using iterator_concept = std::random_access_iterator_tag;
    using iterator_category = std::random_access_iterator_tag;
    using value_type = T;
    using difference_type = std::ptrdiff_t;

    iterator() = default;
    // Unsigned arithmetic: start + i * step is in range for every valid i, but the
    // intermediate product may not be (range(INT_MAX, INT_MIN, -1)).
    T operator*() const noexcept {
      return static_cast<T>(static_cast<U>(start_) +
                            static_cast<U>(static_cast<U>(index_) * static_cast<U>(step_)));
    }
    T operator[](difference_type n) const noexcept { return *(*this + n); }
    iterator& operator++() noexcept {
      ++index_;
      return *this;
    }
    iterator operator++(int) noexcept {
      iterator old = *this;
      ++index_;
      return old;
    }
    iterator& operator--() noexcept {
      --index_;
      return *this;
    }
    iterator operator--(int) noexcept {
      iterator old = *this;
      --index_;
      return old;
    }
    iterator& operator+=(difference_type n) noexcept {
      index_ += n;
      return *this;
    }
    iterator& operator-=(difference_type n) noexcept {
      index_ -= n;
      return *this;
    }
    friend iterator operator+(iterator it, difference_type n) noexcept { return it += n; }
    friend iterator operator+(difference_type n, iterator it) noexcept { return it += n; }
    friend iterator operator-(iterator it, difference_type n) noexcept { return it -= n; }
    friend difference_type operator-(const iterator& a, const iterator& b) noexcept {
      return a.index_ - b.index_;
    }
    friend bool operator==(const iterator& a, const iterator& b) noexcept {
      return a.index_ == b.index_;
    }
    friend auto operator<=>(const iterator& a, const iterator& b) noexcept {
      return a.index_ <=> b.index_;
    }

   private:
    friend class StepRange;
    iterator(T start, T step, difference_type index) noexcept
        : start_(start), step_(step), index_(index) {}
    T start_{};
    T step_{1};
    difference_type index_ = 0;
  };

  StepRange() = default;
  /// Throws std::invalid_argument if `step` is 0 (Python's ValueError).
  StepRange(T start, T stop, T step) : start_(start), step_(step) {
    if (step == 0) throw std::invalid_argument("mproc::range: step must not be zero");
    // Python's len(range): ceil((stop - start) / step) when that is positive, else 0;
    // computed on magnitudes in U, so no difference overflows (and a type narrower than
    // int, promoted to int by the arithmetic, is brought back to U before dividing).
    const auto u = [](auto v) { return static_cast<U>(v); };
    if (step > 0 && start < stop)
      size_ = static_cast<std::size_t>(u(u(stop) - u(start) - 1u) / u(step)) + 1;
    else if (step < 0 && start > stop)
      size_ = static_cast<std::size_t>(u(u(start) - u(stop) - 1u) / u(U{0} - u(step))) + 1;
  }

  iterator begin() const noexcept { return iterator(start_, step_, 0); }
  iterator end() const noexcept {
    return iterator(start_, step_, static_cast<std::ptrdiff_t>(size_));
  }
  std::size_t size() const noexcept { return size_; }

  T start() const noexcept { return start_; }
  T step() const noexcept { return step_; }

 private:
  T start_{};
  T step_{1};
  std::size_t size_ = 0;
};

/// Python's range(start, stop, step): start, start + step, ... while below `stop` (above
/// it when `step` is negative); empty when the step points away from `stop`. The element
/// type is the common type of the three. Sized and random-access. Throws
/// std::invalid_argument if `step` is 0.
template <class A, class B, class S>
  requires std::is_integral_v<A> && std::is_integral_v<B> && std::is_integral_v<S>
StepRange<std::common_type_t<A, B, S>> range(A start, B stop, S step) {
  using T = std::common_type_t<A, B, S>;
  static_assert(std::is_signed_v<T> || !std::is_signed_v<S>,
                "mproc::range: a negative step needs a signed element type");
  return StepRange<T>(static_cast<T>(start), static_cast<T>(stop), static_cast<T>(step));
}

namespace detail {

template <class... Rs>
concept all_random_access = (std::ranges::random_access_range<Rs> && ...);
template <class... Rs>
concept all_bidirectional = (std::ranges::bidirectional_range<Rs> && ...);
template <class... Rs>
concept all_forward = (std::ranges::forward_range<Rs> && ...);

template <class... Rs>
auto zip_iterator_concept() {
  if constexpr (all_random_access<Rs...>)
    return std::random_access_iterator_tag{};
  else if constexpr (all_bidirectional<Rs...>)
    return std::bidirectional_iterator_tag{};
  else if constexpr (all_forward<Rs...>)
    return std::forward_iterator_tag{};
  else
    return std::input_iterator_tag{};
}

}  // namespace detail

/// Python's zip over views (see mproc::zip): the i-th element is a std::tuple of copies
/// of the inputs' i-th elements; it ends with the shortest input. Sized when every input
/// is; as strong an iterator as the weakest input's, up to random access.
template <std::ranges::view... Vs>
  requires(sizeof...(Vs) > 0)
class ZipView : public std::ranges::view_interface<ZipView<Vs...>> {
 public:
  using value_type = std::tuple<std::ranges::range_value_t<Vs>...>;

  class sentinel;
  class iterator {
   public:
    using iterator_concept = decltype(detail::zip_iterator_concept<Vs...>());
    using value_type = ZipView::value_type;
    using difference_type = std::ptrdiff_t;

    iterator() = default;
    value_type operator*() const {
      return std::apply([](const auto&... it) { return value_type(*it...); }, its_);
    }
    iterator& operator++() {
      std::apply([](auto&... it) { (++it, ...); }, its_);
      return *this;
    }
    void operator++(int)
      requires(!detail::all_forward<Vs...>)
    {
      ++*this;
    }
    iterator operator++(int)
      requires detail::all_forward<Vs...>
    {
      iterator old = *this;
      ++*this;
      return old;
    }
    iterator& operator--()
      requires detail::all_bidirectional<Vs...>
    {
      std::apply([](auto&... it) { (--it, ...); }, its_);
      return *this;
    }
    iterator operator--(int)
      requires detail::all_bidirectional<Vs...>
    {
      iterator old = *this;
      --*this;
      return old;
    }
    iterator& operator+=(difference_type n)
      requires detail::all_random_access<Vs...>
    {
      std::apply([n](auto&... it) { ((it += n), ...); }, its_);
      return *this;
    }
    iterator& operator-=(difference_type n)
      requires detail::all_random_access<Vs...>
    {
      return *this += -n;
    }
    value_type operator[](difference_type n) const
      requires detail::all_random_access<Vs...>
    {
      return *(*this + n);
    }
    friend iterator operator+(iterator it, difference_type n)
      requires detail::all_random_access<Vs...>
    {
      return it += n;
    }
    friend iterator operator+(difference_type n, iterator it)
      requires detail::all_random_access<Vs...>
    {
      return it += n;
    }
    friend iterator operator-(iterator it, difference_type n)
      requires detail::all_random_access<Vs...>
    {
      return it -= n;
    }
    // All iterators move in lockstep: the first one's distance is the distance.
    friend difference_type operator-(const iterator& a, const iterator& b)
      requires detail::all_random_access<Vs...>
    {
      return static_cast<difference_type>(std::get<0>(a.its_) - std::get<0>(b.its_));
    }
    friend bool operator==(const iterator& a, const iterator& b)
      requires detail::all_forward<Vs...>
    {
      return std::get<0>(a.its_) == std::get<0>(b.its_);
    }
    friend auto operator<=>(const iterator& a, const iterator& b)
      requires detail::all_random_access<Vs...>
    {
      return std::get<0>(a.its_) <=> std::get<0>(b.its_);
    }
    /// The end is reached when any input ends (the shortest input).
    friend bool operator==(const iterator& it, const sentinel& s) { return it.at_end(s); }
    friend difference_type operator-(const sentinel& s, const iterator& it)
      requires(detail::all_random_access<Vs...> && (std::ranges::sized_range<Vs> && ...))
    {
      return it.to_end(s);
    }
    friend difference_type operator-(const iterator& it, const sentinel& s)
      requires(detail::all_random_access<Vs...> && (std::ranges::sized_range<Vs> && ...))
    {
      return -(s - it);
    }

   private:
    friend class ZipView;
    explicit iterator(std::tuple<std::ranges::iterator_t<Vs>...> its) : its_(std::move(its)) {}
    bool at_end(const sentinel& s) const {
      return [&]<std::size_t... I>(std::index_sequence<I...>) {
        return ((std::get<I>(its_) == std::get<I>(s.ends_)) || ...);
      }(std::index_sequence_for<Vs...>{});
    }
    difference_type to_end(const sentinel& s) const {
      return s.size_ - static_cast<difference_type>(std::get<0>(its_) - std::get<0>(s.begins_));
    }
    std::tuple<std::ranges::iterator_t<Vs>...> its_;
  };

  class sentinel {
   public:
    sentinel() = default;

   private:
    friend class ZipView;
    friend class iterator;
    std::tuple<std::ranges::sentinel_t<Vs>...> ends_;
    // For sentinel - iterator on sized random-access inputs.
    std::tuple<std::ranges::iterator_t<Vs>...> begins_;
    std::ptrdiff_t size_ = 0;
  };

  ZipView() = default;
  explicit ZipView(Vs... views) : views_(std::move(views)...) {}

  // const, so a const ZipView iterates too; the views are mutable because a ref_view's or
  // owning_view's begin() may need a non-const view, and elements are only ever copied out.
  iterator begin() const {
    return iterator(std::apply([](auto&... v) { return std::tuple(std::ranges::begin(v)...); },
                               views_));
  }
  sentinel end() const {
    sentinel s;
    s.ends_ = std::apply([](auto&... v) { return std::tuple(std::ranges::end(v)...); }, views_);
    if constexpr (detail::all_random_access<Vs...> && (std::ranges::sized_range<Vs> && ...)) {
      s.begins_ =
          std::apply([](auto&... v) { return std::tuple(std::ranges::begin(v)...); }, views_);
      s.size_ = static_cast<std::ptrdiff_t>(size());
    }
    return s;
  }

  /// The length of the shortest input.
  std::size_t size() const
    requires(std::ranges::sized_range<Vs> && ...)
  {
    return std::apply(
        [](auto&... v) {
          std::size_t n = std::numeric_limits<std::size_t>::max();
          ((n = std::min(n, static_cast<std::size_t>(std::ranges::size(v)))), ...);
          return n;
        },
        views_);
  }

 private:
  mutable std::tuple<Vs...> views_;
};

/// Python's zip(a, b, ...): tuples of the inputs' elements, as many as the shortest input
/// has, for Pool::starmap (`pool.starmap(add, mproc::zip(xs, ys))`). Each element is a
/// std::tuple of copies. Sized when every input is sized; random-access when every input
/// is. Lvalue inputs are referred to (keep them alive), rvalues moved in.
template <std::ranges::viewable_range... Rs>
  requires(sizeof...(Rs) > 0)
auto zip(Rs&&... inputs) {
  return ZipView<std::views::all_t<Rs>...>(std::views::all(std::forward<Rs>(inputs))...);
}

/// numpy's array_split(v, n): `n` contiguous parts of `input`, in order, whose sizes
/// differ by at most one (the first size % n parts have one more element); parts may be
/// empty when n exceeds the size. A contiguous input gives std::span parts, any other
/// sized forward range std::ranges::subrange parts; they refer to `input`, which must
/// outlive them. Spans are not serializable: for a process or mpi Pool, map over
/// index ranges or mproc::Array slices instead. Throws std::invalid_argument if n is 0.
template <std::ranges::forward_range R>
  requires std::ranges::sized_range<R>
auto chunks(R& input, std::size_t n) {
  if (n == 0) throw std::invalid_argument("mproc::chunks: the number of parts must not be zero");
  const std::size_t size = static_cast<std::size_t>(std::ranges::size(input));
  const std::size_t base = size / n;
  const std::size_t extra = size % n;
  if constexpr (std::ranges::contiguous_range<R>) {
    std::span<std::remove_reference_t<std::ranges::range_reference_t<R>>> all(
        std::ranges::data(input), size);
    std::vector<decltype(all)> parts;
    parts.reserve(n);
    std::size_t at = 0;
    for (std::size_t i = 0; i < n; ++i) {
      const std::size_t len = base + (i < extra ? 1 : 0);
      parts.push_back(all.subspan(at, len));
      at += len;
    }
    return parts;
  } else {
    using It = std::ranges::iterator_t<R>;
    std::vector<std::ranges::subrange<It>> parts;
    parts.reserve(n);
    It at = std::ranges::begin(input);
    for (std::size_t i = 0; i < n; ++i) {
      const std::size_t len = base + (i < extra ? 1 : 0);
      It next = std::ranges::next(at, static_cast<std::ranges::range_difference_t<R>>(len));
      parts.emplace_back(at, next);
      at = next;
    }
    return parts;
  }
}

}  // namespace mproc
