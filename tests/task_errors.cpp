// throw_kind and the registration of two user error types (see task_errors.hpp).
// Compiled without hot/cold splitting (tests/CMakeLists.txt), so each throw stays in
// throw_kind rather than in a local ".cold" part that the stack trace cannot name.
#include "task_errors.hpp"

#include <fcntl.h>

#include <mproc/error.hpp>

#include <cerrno>
#include <new>
#include <string>
#include <system_error>

namespace {

/// An error category no other process can name.
class ParserCategory : public std::error_category {
 public:
  const char* name() const noexcept override { return "parser"; }
  std::string message(int value) const override { return "parser error " + std::to_string(value); }
};

}  // namespace

MPROC_REGISTER_EXCEPTION(MissingKeyError);
MPROC_REGISTER_EXCEPTION(ConfigError);

int throw_kind(int k) {
  const std::string m = "kind " + std::to_string(k);
  switch (k) {
    case 0: throw std::logic_error(m);
    case 1: throw std::invalid_argument(m);
    case 2: throw std::domain_error(m);
    case 3: throw std::length_error(m);
    case 4: throw std::out_of_range(m);
    case 5: throw std::runtime_error(m);
    case 6: throw std::range_error(m);
    case 7: throw std::overflow_error(m);
    case 8: throw std::underflow_error(m);
    case 9: throw std::system_error(std::error_code(ENOENT, std::generic_category()), m);
    case 10: {
      // A real failed new[]: the runtime refuses a negative length before allocating.
      volatile long n = -1;
      int* p = new int[n];
      delete[] p;
      return k;
    }
    case 11: throw mproc::SerializationError(m);
    case 12: throw mproc::SharedStateError(m);
    case 13: throw mproc::TimeoutError(m);
    case 14: throw ConfigError(m);
    case 15: throw MissingKeyError(m);
    case 16: throw UnregisteredError(m);
    case 17: throw BadSlot(m);
    case 18: throw DeepKeyError(m);
    case 19: {
      // A real system error: open(2) of a path that cannot exist.
      if (::open("/nonexistent-mproc-dir/x", O_RDONLY) < 0)
        throw std::system_error(errno, std::system_category(), m);
      return k;
    }
    case 20: throw 42;
    case 21: {
      static const ParserCategory parser;
      throw std::system_error(7, parser, m);
    }
    default: return k;
  }
}
