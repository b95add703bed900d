// Code and static-data addresses as (module, offset), so that an address taken in one
// process can be found again in another process running the same binaries at different
// load addresses (PIE and ASLR): the ranks of an MPI job each load the executable and its
// shared libraries wherever the kernel and the dynamic linker chose.
//
// A module is one loaded ELF object (the executable, a shared library, the vDSO). Its key
// is a 64-bit hash of its GNU build-id, which the linker derives from the file's contents,
// so two processes agree on the key exactly when they load the same file. The offset is
// the address minus the module's load base (dl_iterate_phdr's dlpi_addr), which the
// dynamic linker adds to every address the file was linked with.
//
// The table of loaded modules is cached per process and rebuilt when the dynamic linker
// reports that an object was loaded or unloaded since (dlopen, dlclose), so refs into a
// library opened later resolve, and refs into an unloaded one fail instead of pointing
// into whatever was mapped there next. A forked child keeps the parent's cache, which
// holds the same modules at the same addresses.
//
// Internal to libmproc; exported for the MPI backend and the tests.
#pragma once

#include <cstdint>
#include <string>

#include "mproc/export.hpp"

namespace mproc::detail {

/// An address as (module, offset): `module` is a 64-bit key of the loaded object (ELF
/// file) that contains it, derived from its GNU build-id, and `offset` is the address
/// minus the module's load base. The default value refers to nothing (no key is 0).
struct CodeRef {
  std::uint64_t module = 0;
  std::uint64_t offset = 0;

  friend bool operator==(const CodeRef&, const CodeRef&) = default;
};

/// The CodeRef of an address inside any loaded module (the executable, a shared library,
/// the vDSO): code, or static data including zero-initialised (.bss) data. Does not
/// block beyond a short lock. Thread-safe.
/// Throws std::invalid_argument if no loaded module contains the address (heap, stack,
/// mmap'ed memory, null); std::bad_alloc.
MPROC_API CodeRef code_ref(const void* address);

/// The address in this process of `ref`. Does not block beyond a short lock. Thread-safe.
/// Throws mproc::SerializationError naming the module key in hex if no loaded module has
/// that key, or if the offset lies outside that module's loaded segments: it never
/// returns a pointer outside the module. When two loaded modules share a key (the same
/// file loaded twice under different paths), the one loaded first is used.
MPROC_API const void* code_address(const CodeRef& ref);

/// The key of the main executable, which code_ref gives to addresses inside it. Equal in
/// two processes when they run the same executable file (same build-id). Thread-safe.
/// Throws std::bad_alloc.
MPROC_API std::uint64_t executable_key();

/// The executable for error messages: its path and build-id in hex,
/// "/usr/bin/app (build-id 3f2a...)", or, without a build-id,
/// "/usr/bin/app (no build-id; key 0123456789abcdef)". Thread-safe. Throws std::bad_alloc.
MPROC_API std::string executable_identity();

}  // namespace mproc::detail
