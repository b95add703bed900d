// Must NOT compile: an exception type registered for rethrowing in the caller needs a
// constructor from the message string; the error says so.
#include <mproc/error.hpp>

#include <stdexcept>

struct NoMessage : std::runtime_error {
  NoMessage() : std::runtime_error("no message") {}
};

int main() {
  mproc::register_exception<NoMessage>();
  return 0;
}
