// A task's exception on the wire: what a worker of the process or mpi backend sends when
// a task throws, and what the caller rethrows. One encoding for every transport (the
// item_error frame, a failed map_reduce partial). Internal to libmproc and libmproc_mpi.
//
//   string type        demangled type of the exception thrown ("my::Error", "int")
//   string what        its what() ("" for a type that is not a std::exception)
//   string traceback   the worker's stack at the throw, one frame per line
//   u32 n, string[n]   the registered types the exception is (mproc::register_exception
//                      and the built-in ones), most derived first
//   i32 code           std::system_error: the error code's value, else 0
//   u8 category        std::system_error: its category (ErrorCategory), else none
//
// The caller rethrows RemoteException<E> for the first of the n types it knows, and
// RemoteException<mproc::Error> when it knows none.
#pragma once

#include <cstddef>
#include <cstdint>
#include <exception>
#include <optional>
#include <string>
#include <vector>

#include <sys/types.h>

#include "mproc/export.hpp"
#include "pool/wire.hpp"

namespace mproc::detail {

/// The standard error categories an error code can travel with.
enum class ErrorCategory : std::uint8_t { none = 0, generic = 1, system = 2, iostream = 3, future = 4 };

struct RemoteFailure {
  std::string type, what, traceback;
  std::vector<std::string> kinds;
  std::int32_t code = 0;
  ErrorCategory category = ErrorCategory::none;

  /// Inside a catch block of a worker: the exception being handled, with the stack
  /// recorded at its throw.
  MPROC_API static RemoteFailure current();

  void write(std::vector<std::byte>& out) const {
    put_string(out, type);
    put_string(out, what);
    put_string(out, traceback);
    put<std::uint32_t>(out, static_cast<std::uint32_t>(kinds.size()));
    for (const auto& k : kinds) put_string(out, k);
    put<std::int32_t>(out, code);
    put<ErrorCategory>(out, category);
  }
  static RemoteFailure read(WireReader& r) {
    RemoteFailure f;
    f.type = r.get_string();
    f.what = r.get_string();
    f.traceback = r.get_string();
    const auto n = r.get<std::uint32_t>();
    // Each name costs at least its 8-byte length: a bogus count fails here, not in reserve.
    if (n > r.rest().size() / sizeof(std::uint64_t))
      throw SerializationError("corrupt task failure: too many type names");
    f.kinds.reserve(n);
    for (std::uint32_t i = 0; i < n; ++i) f.kinds.push_back(r.get_string());
    f.code = r.get<std::int32_t>();
    f.category = r.get<ErrorCategory>();
    return f;
  }

  /// The exception the caller receives, for item `index` (none: a partial) run by
  /// process `pid`: a RemoteException<E>.
  MPROC_API std::exception_ptr error(std::optional<std::size_t> index, pid_t pid) &&;
};

}  // namespace mproc::detail
