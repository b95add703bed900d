// Function pointers in shipped callables as (module, offset), for the mpi backend.
#include <cstdint>
#include <vector>

#include "mproc/detail/task.hpp"
#include "pool/code_ref.hpp"
#include "pool/wire.hpp"

namespace mproc::detail {

bool& portable_code() noexcept {
  thread_local bool on = false;
  return on;
}

void encode_code_address(const void* address, std::vector<std::byte>& out) {
  const CodeRef ref = code_ref(address);
  put<std::uint64_t>(out, ref.module);
  put<std::uint64_t>(out, ref.offset);
}

const void* decode_code_address(InputArchive& in) {
  CodeRef ref;
  in.read_bytes(&ref.module, sizeof ref.module);
  in.read_bytes(&ref.offset, sizeof ref.offset);
  return code_address(ref);
}

}  // namespace mproc::detail
