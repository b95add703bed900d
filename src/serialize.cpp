// The compiled part of serialization (include/mproc/serialize.hpp is templates): the
// depth of nested decodes on this thread, which shared-object handles consult while they
// are being decoded.
#include "mproc/serialize.hpp"

namespace mproc::detail {
namespace {

// Initial-exec: libmproc is loaded with the program, and a decode should not pay a
// __tls_get_addr call.
__attribute__((tls_model("initial-exec"))) thread_local int depth = 0;

}  // namespace

int& decode_depth() noexcept { return depth; }

}  // namespace mproc::detail
