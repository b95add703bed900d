// SharedMapping: an anonymous shared-memory segment (memfd_create + ftruncate + mmap
// MAP_SHARED) that forked children inherit. Internal to libmproc.
//
// Lifetime: the mapping lives until the SharedMapping is destroyed in *this* process;
// a forked child has its own copy of the mapping (same address, same pages) that lives
// until the child unmaps it or exits. The memory is freed when the last mapping and the
// last fd are gone. A memfd has no name in /dev/shm, so nothing can leak there, and it
// is reachable only through an fd or a mapping (it is private to the processes that hold
// one, never opened by another user).
//
// Visibility: a store by one process is a store to the same physical page as every
// other process's mapping; ordering between processes follows the std::atomic orders of
// the objects placed in it (lock-free atomics are address-free, [atomics.lockfree]).
#pragma once

#include <cstddef>
#include <string_view>

#include "os/platform.hpp"

namespace mproc::detail {

class SharedMapping {
 public:
  /// What to do with the memfd once the memory is mapped.
  enum class FdPolicy {
    keep,   ///< keep it open (fd() is valid): to pass it to a process that is not a child
    close,  ///< close it at once: forked children inherit the mapping, not the fd
  };

  /// An empty mapping (data() == nullptr).
  SharedMapping() noexcept = default;

  /// Creates a zero-filled segment of at least `size` bytes (rounded up to whole pages)
  /// and maps it read-write, MAP_SHARED. `purpose` names the memfd ("memfd:mproc:<purpose>"
  /// in /proc/<pid>/fd and /proc/<pid>/maps) and the errors. The fd is close-on-exec.
  /// Throws std::invalid_argument if size is 0, std::system_error
  /// ("memfd_create for <purpose>: ...", "ftruncate for ...", "mmap for ...") otherwise.
  SharedMapping(std::size_t size, std::string_view purpose, FdPolicy fd_policy = FdPolicy::keep);

  SharedMapping(SharedMapping&& other) noexcept;
  SharedMapping& operator=(SharedMapping&& other) noexcept;
  SharedMapping(const SharedMapping&) = delete;
  SharedMapping& operator=(const SharedMapping&) = delete;

  /// Unmaps (in this process only) and closes the fd if still open. Never throws.
  ~SharedMapping();

  void* data() const noexcept { return data_; }
  std::byte* bytes() const noexcept { return static_cast<std::byte*>(data_); }
  /// The mapped size: the requested size rounded up to a multiple of the page size.
  std::size_t size() const noexcept { return size_; }
  /// The memfd, or -1 once closed.
  int fd() const noexcept { return fd_.get(); }
  explicit operator bool() const noexcept { return data_ != nullptr; }

  /// Closes the memfd; the mapping stays valid.
  void close_fd() noexcept { fd_.reset(); }

  /// Unmaps and closes now; *this becomes empty.
  void reset() noexcept;

 private:
  void* data_ = nullptr;
  std::size_t size_ = 0;
  UniqueFd fd_;
};

}  // namespace mproc::detail
