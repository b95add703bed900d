#include "os/shm.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>

namespace mproc::detail {

namespace {

std::string context(std::string_view call, std::string_view purpose) {
  std::string s(call);
  s += " for ";
  s += purpose;
  return s;
}

}  // namespace

SharedMapping::SharedMapping(std::size_t size, std::string_view purpose, FdPolicy fd_policy) {
  if (size == 0) throw std::invalid_argument(context("SharedMapping of 0 bytes", purpose));
  const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  if (size > SIZE_MAX - page)
    throw std::invalid_argument(context("SharedMapping too large", purpose));
  const std::size_t rounded = (size + page - 1) / page * page;

  // memfd_create(2): the name is only a label, truncated at 249 bytes; it need not be
  // unique. MFD_CLOEXEC: a program the user exec()s must not inherit the segment.
  std::string name = "mproc:";
  name += purpose;
  if (name.size() > 249) name.resize(249);
  UniqueFd fd(::memfd_create(name.c_str(), MFD_CLOEXEC));
  if (!fd) throw_system_error(errno, context("memfd_create", purpose));

  // A new memfd is empty; ftruncate gives it zero-filled, lazily allocated pages.
  if (retry_eintr([&] { return ::ftruncate(fd.get(), static_cast<off_t>(rounded)); }) != 0)
    throw_system_error(errno, context("ftruncate", purpose));

  void* p = ::mmap(nullptr, rounded, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
  if (p == MAP_FAILED) throw_system_error(errno, context("mmap", purpose));

  data_ = p;
  size_ = rounded;
  if (fd_policy == FdPolicy::keep) fd_ = std::move(fd);
}

SharedMapping::SharedMapping(SharedMapping&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      fd_(std::move(other.fd_)) {}

SharedMapping& SharedMapping::operator=(SharedMapping&& other) noexcept {
  if (this != &other) {
    reset();
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
    fd_ = std::move(other.fd_);
  }
  return *this;
}

SharedMapping::~SharedMapping() { reset(); }

void SharedMapping::reset() noexcept {
  // munmap only fails for arguments we never pass (a range we did not map).
  if (data_ != nullptr) ::munmap(data_, size_);
  data_ = nullptr;
  size_ = 0;
  fd_.reset();
}

}  // namespace mproc::detail
