// mproc::bind: Python's functools.partial for work shipped to other processes.
//
// `mproc::bind(f, a, b)` is a callable g with g(x...) == f(a, b, x...). The bound values
// are serialized and sent to each worker once per call of a Pool method, not once per
// item, so a large lookup table or a string costs one copy per worker. Use it for state
// that a lambda cannot carry to a worker process (a capture that is not trivially
// copyable, such as a std::string, a std::vector or a shared handle: mproc::Value, Array,
// Array2D, Queue, Lock, a Manager dict or list, which arrive as the same shared object),
// and never a captured pointer, which means nothing in a worker for an object made after
// the pool started.
#pragma once

#include <functional>
#include <tuple>
#include <type_traits>
#include <utility>

namespace mproc {

/// A function with some leading arguments bound by value. Made by mproc::bind.
template <class F, class... Bound>
class BoundCall {
 public:
  using function_type = F;
  using bound_type = std::tuple<Bound...>;

  BoundCall() = default;
  BoundCall(F f, std::tuple<Bound...> values) : f_(f), values_(std::move(values)) {}

  template <class... Args>
  decltype(auto) operator()(Args&&... args) const {
    return std::apply(
        [&](const Bound&... bound) -> decltype(auto) {
          return std::invoke(f_, bound..., std::forward<Args>(args)...);
        },
        values_);
  }

  const F& function() const noexcept { return f_; }
  const std::tuple<Bound...>& values() const noexcept { return values_; }
  F& function() noexcept { return f_; }
  std::tuple<Bound...>& values() noexcept { return values_; }

 private:
  F f_{};
  std::tuple<Bound...> values_;
};

/// Binds leading arguments of `f` by value (copied or moved into the result). `f` itself
/// must be trivially copyable (a function pointer, or a lambda without non-trivial captures);
/// the values must be serializable and default-constructible.
template <class F, class... Values>
auto bind(F f, Values&&... values) {
  static_assert(std::is_trivially_copyable_v<F>,
                "mproc::bind: the function must be trivially copyable (a function pointer or "
                "a lambda without non-trivial captures); bind the data as values instead");
  return BoundCall<F, std::decay_t<Values>...>(
      f, std::tuple<std::decay_t<Values>...>(std::forward<Values>(values)...));
}

}  // namespace mproc
