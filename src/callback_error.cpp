// The handler for exceptions of user callbacks (include/mproc/callback_error.hpp).
#include "mproc/callback_error.hpp"

#include <mutex>
#include <string>
#include <utility>

#include <fmt/format.h>

#include "os/platform.hpp"

namespace mproc {
namespace {

std::mutex handler_mutex;
CallbackErrorHandler& handler_slot() {
  static CallbackErrorHandler handler;
  return handler;
}

void default_callback_error(std::exception_ptr error) noexcept {
  std::string type = "unknown";
  std::string what;
  try {
    std::rethrow_exception(error);
  } catch (...) {
    type = detail::current_exception_type_name();
    what = detail::current_exception_message();
  }
  const std::string line =
      fmt::format("mproc: exception in a Future done callback: {}: {}\n", type, what);
  detail::write_all(2, line);
}

}  // namespace

CallbackErrorHandler set_callback_error_handler(CallbackErrorHandler handler) {
  std::lock_guard lock(handler_mutex);
  return std::exchange(handler_slot(), std::move(handler));
}

namespace detail {

void report_callback_error(std::exception_ptr error) noexcept {
  CallbackErrorHandler handler;
  {
    std::lock_guard lock(handler_mutex);
    handler = handler_slot();
  }
  if (!handler) return default_callback_error(error);
  try {
    handler(error);
  } catch (...) {
    // The handler itself failed: fall back to stderr rather than lose both.
    default_callback_error(error);
  }
}

}  // namespace detail
}  // namespace mproc
