// Timeouts as steady-clock deadlines, shared by every blocking call with a timeout twin.
#pragma once

#include <chrono>
#include <type_traits>

namespace mproc::detail {

using SteadyTime = std::chrono::steady_clock::time_point;
inline constexpr SteadyTime kForever = SteadyTime::max();

/// now + timeout, saturating: a huge timeout (hours::max()) is "forever", never an
/// overflow into the past; a negative one is already past.
template <class Rep, class Period>
SteadyTime deadline_after(std::chrono::duration<Rep, Period> timeout) {
  const auto now = std::chrono::steady_clock::now();
  const auto room = SteadyTime::max() - now;
  if (timeout >= room) return SteadyTime::max();
  return now + std::chrono::ceil<std::chrono::steady_clock::duration>(timeout);
}

/// The steady-clock deadline matching a deadline on any clock.
template <class Clock, class Duration>
SteadyTime to_steady(std::chrono::time_point<Clock, Duration> t) {
  if constexpr (std::is_same_v<Clock, std::chrono::steady_clock>) {
    return std::chrono::time_point_cast<std::chrono::steady_clock::duration>(t);
  } else {
    return deadline_after(t - Clock::now());
  }
}

}  // namespace mproc::detail
