// mproc::lines: a file read block by block with read(2) and cut into lines. Plain fds
// rather than an ifstream: one buffer of a known size (the memory bound the header
// promises), errno for the error message, and O_CLOEXEC so the fd does not leak into
// processes that mproc::Process or a pool forks and execs.
#include "mproc/lines.hpp"

#include <cerrno>
#include <cstring>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "os/platform.hpp"

namespace mproc::detail {

LineReader::LineReader(const std::filesystem::path& path)
    : path_(path.string()), block_(new char[kLinesBlockBytes]) {
  const std::string context = "mproc::lines: cannot read '" + path_ + "'";
  fd_ = retry_eintr([&] { return ::open(path_.c_str(), O_RDONLY | O_CLOEXEC); });
  if (fd_ < 0) throw_system_error(errno, context);
  struct stat st {};
  if (::fstat(fd_, &st) != 0) {
    const int err = errno;
    ::close(fd_);
    throw_system_error(err, context);
  }
  if (S_ISDIR(st.st_mode)) {
    ::close(fd_);
    throw_system_error(EISDIR, context);
  }
}

LineReader::~LineReader() {
  if (fd_ >= 0) ::close(fd_);
}

bool LineReader::fill() {
  if (eof_) return false;
  const ssize_t n = retry_eintr([&] { return ::read(fd_, block_.get(), kLinesBlockBytes); });
  if (n < 0) throw_system_error(errno, "mproc::lines: reading '" + path_ + "'");
  at_ = 0;
  end_ = static_cast<std::size_t>(n);
  if (n == 0) eof_ = true;
  return n > 0;
}

bool LineReader::next() {
  if (done_) return false;
  line_.clear();
  bool any = false;  // a byte of this line was read (a last line without '\n')
  for (;;) {
    if (at_ == end_ && !fill()) {
      if (!any) {
        done_ = true;
        return false;
      }
      break;
    }
    any = true;
    const char* from = block_.get() + at_;
    const auto* nl = static_cast<const char*>(std::memchr(from, '\n', end_ - at_));
    if (nl == nullptr) {
      line_.append(from, end_ - at_);
      at_ = end_;
      continue;
    }
    line_.append(from, static_cast<std::size_t>(nl - from));
    at_ = static_cast<std::size_t>(nl - block_.get()) + 1;
    // A "\r\n" end goes whole, also when the '\r' came in the previous block; a '\r'
    // at the very end of the file, with no '\n' after it, stays.
    if (!line_.empty() && line_.back() == '\r') line_.pop_back();
    break;
  }
  return true;
}

}  // namespace mproc::detail
