#include "mproc/detail/segment.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <random>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include <fmt/format.h>

#include "ipc/segment_keep.hpp"
#include "mproc/error.hpp"
#include "os/platform.hpp"

namespace mproc::detail {

namespace {

// The first cache line of every segment; the payload starts after it.
struct SegmentHeader {
  std::uint64_t magic;
  std::uint64_t id;
  std::uint64_t payload;  // payload bytes
};
constexpr std::uint64_t kMagic = 0x4d50524f43534547;  // "MPROCSEG"
constexpr std::size_t kHeaderBytes = Segment::kAlignment;
static_assert(sizeof(SegmentHeader) <= kHeaderBytes);

std::size_t page_size() {
  static const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  return page;
}

std::uint64_t random_id() {
  // Seeded once per process from the kernel; mixed with the pid so that a forked child
  // (which inherits the engine's state) does not repeat its parent's ids.
  static std::mutex m;
  static std::mt19937_64 engine{std::random_device{}()};
  std::lock_guard lk(m);
  std::uint64_t id = 0;
  while (id == 0) id = engine() ^ (static_cast<std::uint64_t>(::getpid()) << 40);
  return id;
}

void raise_fd_limit_once() {
  static std::once_flag once;
  std::call_once(once, [] {
    rlimit lim{};
    if (::getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
      lim.rlim_cur = lim.rlim_max;
      ::setrlimit(RLIMIT_NOFILE, &lim);  // best effort
    }
  });
}

using ReleaseWatch = std::function<void(std::uint64_t)>;

// This process's mappings, by segment id. Entries are weak: a mapping lives as long as
// some Segment in this process refers to it, or `kept` does (segment_keep.hpp). The mutex
// is taken around fork (atfork) so that a child never inherits it locked; the child keeps
// nothing and watches nothing.
struct Registry {
  std::mutex mutex;
  std::unordered_map<std::uint64_t, std::weak_ptr<SegmentImpl>> by_id;
  pid_t keep_from = 0;  // keep what is attached from this pid (0: keep nothing)
  std::vector<std::shared_ptr<SegmentImpl>> kept;  // least recently used first
  std::vector<std::weak_ptr<ReleaseWatch>> watches;

  Registry() {
    ::pthread_atfork([] { instance().mutex.lock(); }, [] { instance().mutex.unlock(); },
                     [] {
                       Registry& r = instance();
                       r.mutex.unlock();
                       r.keep_from = 0;
                       r.watches.clear();
                       std::vector<std::shared_ptr<SegmentImpl>> inherited;
                       inherited.swap(r.kept);  // unmapped (where unused) outside the mutex
                     });
  }
  static Registry& instance() {
    static Registry* r = new Registry();  // never destroyed: handles may outlive statics
    return *r;
  }
};

}  // namespace

class SegmentImpl {
 public:
  SegmentImpl(UniqueFd fd, void* base, std::size_t mapped, std::uint64_t id)
      : fd_(std::move(fd)), base_(base), mapped_(mapped), id_(id) {}
  SegmentImpl(const SegmentImpl&) = delete;
  SegmentImpl& operator=(const SegmentImpl&) = delete;
  ~SegmentImpl() {
    std::vector<std::shared_ptr<ReleaseWatch>> watches;
    {
      Registry& r = Registry::instance();
      std::lock_guard lk(r.mutex);
      auto it = r.by_id.find(id_);
      // Another mapping of the same id may have been registered since this one's last
      // reference went away; erase only an expired entry.
      if (it != r.by_id.end() && it->second.expired()) r.by_id.erase(it);
      if (payload_size() >= forgotten_segment_bytes)
        for (auto& w : r.watches)
          if (auto live = w.lock()) watches.push_back(std::move(live));
    }
    ::munmap(base_, mapped_);
    for (auto& w : watches) {
      try {
        (*w)(id_);
      } catch (...) {
        // A watch that could not take the news (no memory) only leaves a worker's
        // mapping of this segment in place until newer ones push it out.
      }
    }
  }

  int fd() const noexcept { return fd_.get(); }
  std::byte* payload() const noexcept { return static_cast<std::byte*>(base_) + kHeaderBytes; }
  std::size_t payload_size() const noexcept { return mapped_ - kHeaderBytes; }
  std::uint64_t id() const noexcept { return id_; }

 private:
  UniqueFd fd_;
  void* base_;
  std::size_t mapped_;
  std::uint64_t id_;
};

namespace {

// With r.mutex held: keeps `impl` (most recently used last) if this process keeps what
// `wire`'s process sends. Returns the mapping that pushed out of `kept`, for the caller
// to let go once the mutex is released (its destructor takes the mutex); it lives on
// while Segments use it.
std::shared_ptr<SegmentImpl> keep_locked(Registry& r, const SegmentWire& wire,
                                         const std::shared_ptr<SegmentImpl>& impl) {
  if (r.keep_from == 0 || wire.pid != r.keep_from) return nullptr;
  auto it = std::find(r.kept.begin(), r.kept.end(), impl);
  if (it != r.kept.end()) {
    std::rotate(it, it + 1, r.kept.end());
    return nullptr;
  }
  std::shared_ptr<SegmentImpl> evicted;
  if (r.kept.size() == kept_segments_max) {
    evicted = std::move(r.kept.front());
    r.kept.erase(r.kept.begin());
  }
  r.kept.push_back(impl);
  return evicted;
}

}  // namespace

void keep_attached_segments(pid_t owner) {
  Registry& r = Registry::instance();
  std::lock_guard lk(r.mutex);
  r.keep_from = owner;
}

void forget_kept_segments(std::span<const std::uint64_t> ids) {
  std::vector<std::shared_ptr<SegmentImpl>> gone;  // released after the mutex
  Registry& r = Registry::instance();
  std::lock_guard lk(r.mutex);
  for (auto it = r.kept.begin(); it != r.kept.end();) {
    if (std::find(ids.begin(), ids.end(), (*it)->id()) != ids.end()) {
      gone.push_back(std::move(*it));
      it = r.kept.erase(it);
    } else {
      ++it;
    }
  }
}

std::shared_ptr<void> watch_segment_releases(std::function<void(std::uint64_t)> released) {
  auto watch = std::make_shared<ReleaseWatch>(std::move(released));
  Registry& r = Registry::instance();
  std::lock_guard lk(r.mutex);
  std::erase_if(r.watches, [](const std::weak_ptr<ReleaseWatch>& w) { return w.expired(); });
  r.watches.push_back(watch);
  return watch;
}

Segment::Segment(std::shared_ptr<SegmentImpl> impl) noexcept
    : impl_(std::move(impl)), data_(impl_->payload()), size_(impl_->payload_size()) {}

std::uint64_t Segment::id() const noexcept { return impl_ ? impl_->id() : 0; }

Segment Segment::create(std::size_t size, std::string_view purpose, bool sparse) {
  if (size == 0) throw std::invalid_argument(fmt::format("{}: a shared segment of 0 bytes", purpose));
  const std::size_t page = page_size();
  if (size > (std::size_t{1} << 47))
    throw std::invalid_argument(
        fmt::format("{}: a shared segment of {} bytes is more than this machine can map", purpose,
                    size));
  const std::size_t mapped = (size + kHeaderBytes + page - 1) / page * page;
  raise_fd_limit_once();

  std::string name = "mproc:";
  name += purpose;
  if (name.size() > 249) name.resize(249);
  UniqueFd fd(::memfd_create(name.c_str(), MFD_CLOEXEC));
  if (!fd) throw_system_error(errno, fmt::format("memfd_create for {}", purpose));
  // A memfd is created 0777; only this user may reach it through /proc anyway, but say
  // so in the mode too.
  ::fchmod(fd.get(), 0600);
  if (retry_eintr([&] { return ::ftruncate(fd.get(), static_cast<off_t>(mapped)); }) != 0)
    throw_system_error(errno, fmt::format("ftruncate for {} ({} bytes)", purpose, mapped));
  const int flags = MAP_SHARED | (sparse ? MAP_NORESERVE : 0);
  void* base = ::mmap(nullptr, mapped, PROT_READ | PROT_WRITE, flags, fd.get(), 0);
  if (base == MAP_FAILED)
    throw_system_error(errno, fmt::format("mmap for {} ({} bytes)", purpose, mapped));

  const std::uint64_t id = random_id();
  auto* h = static_cast<SegmentHeader*>(base);
  h->magic = kMagic;
  h->id = id;
  h->payload = mapped - kHeaderBytes;
  auto impl = std::make_shared<SegmentImpl>(std::move(fd), base, mapped, id);
  {
    Registry& r = Registry::instance();
    std::lock_guard lk(r.mutex);
    r.by_id[id] = impl;
  }
  return Segment(std::move(impl));
}

Segment Segment::attach(const SegmentWire& wire) {
  const auto fail = [&](std::string_view why) -> Segment {
    throw SharedStateError(fmt::format(
        "cannot reach shared object {:016x} held by pid {} (fd {}): {}", wire.id, wire.pid,
        wire.fd, why));
  };
  if (wire.pid <= 0 || wire.fd < 0 || wire.id == 0 || wire.size == 0) return fail("malformed handle");
  // The size the handle claims is what its offsets were checked against: it must be the
  // segment's real size, also when this process has the segment mapped already.
  constexpr std::string_view kOtherSize = "not the segment the handle names (size differs)";
  Registry& r = Registry::instance();
  std::shared_ptr<SegmentImpl> evicted;  // let go after the mutex (keep_locked)
  {
    std::lock_guard lk(r.mutex);
    auto it = r.by_id.find(wire.id);
    if (it != r.by_id.end()) {
      if (auto impl = it->second.lock()) {
        if (impl->payload_size() != wire.size) return fail(kOtherSize);
        evicted = keep_locked(r, wire, impl);
        return Segment(std::move(impl));
      }
    }
  }
  const std::uint64_t page = page_size();
  if (wire.size > (std::uint64_t{1} << 47) || (wire.size + kHeaderBytes) % page != 0)
    return fail(kOtherSize);
  const std::size_t mapped = kHeaderBytes + wire.size;
  // stat() before open(): the fd may name anything (a terminal, a FIFO, a device), and
  // only a regular file of the claimed size is worth opening. The open cannot block or
  // take a controlling terminal in any case (O_NONBLOCK, O_NOCTTY), and what was opened
  // must be what was stat'ed.
  const std::string path = fmt::format("/proc/{}/fd/{}", wire.pid, wire.fd);
  const auto unreachable = [&](int err) {
    return fail(err == ENOENT ? std::string("that process has exited or closed it")
                              : std::string(std::strerror(err)));
  };
  struct stat named {};
  if (::stat(path.c_str(), &named) != 0) return unreachable(errno);
  if (!S_ISREG(named.st_mode)) return fail("not a shared segment");
  if (static_cast<std::uint64_t>(named.st_size) != mapped) return fail(kOtherSize);
  UniqueFd fd(retry_eintr(
      [&] { return ::open(path.c_str(), O_RDWR | O_CLOEXEC | O_NOCTTY | O_NONBLOCK); }));
  if (!fd) return unreachable(errno);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0 || st.st_dev != named.st_dev || st.st_ino != named.st_ino)
    return fail("not a shared segment");
  if (static_cast<std::uint64_t>(st.st_size) != mapped) return fail(kOtherSize);
  // Map the header first: the id decides whether this is the right file at all.
  void* base = ::mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE,
                      fd.get(), 0);
  if (base == MAP_FAILED) return fail(std::strerror(errno));
  const auto* h = static_cast<const SegmentHeader*>(base);
  if (h->magic != kMagic || h->id != wire.id || h->payload != wire.size) {
    ::munmap(base, mapped);
    return fail("not the segment the handle names (the fd number was reused)");
  }
  auto impl = std::make_shared<SegmentImpl>(std::move(fd), base, mapped, wire.id);
  std::lock_guard lk(r.mutex);
  // Another thread may have attached the same segment meanwhile: keep one mapping.
  auto& slot = r.by_id[wire.id];
  if (auto existing = slot.lock()) return Segment(std::move(existing));
  slot = impl;
  evicted = keep_locked(r, wire, impl);
  return Segment(std::move(impl));
}

SegmentWire Segment::wire() const {
  if (!impl_) throw std::logic_error("mproc: an empty shared handle cannot be sent");
  return SegmentWire{static_cast<std::int32_t>(::getpid()), impl_->fd(), impl_->id(),
                     static_cast<std::uint64_t>(size_)};
}

void SharedRef::check_wire(const SegmentWire& w, std::uint64_t offset, std::uint64_t bytes,
                           std::uint64_t alignment) {
  if (w.size < bytes || offset > w.size - bytes)
    throw SerializationError(fmt::format(
        "shared handle: object at offset {} ({} bytes) lies outside its {}-byte segment", offset,
        bytes, w.size));
  if (offset % 8 != 0 || (alignment != 0 && offset % alignment != 0))
    throw SerializationError(
        fmt::format("shared handle: misaligned object offset {} in its segment", offset));
  // Well formed, but nothing of the decoded type can be there: the handle names an
  // object inside another one's segment (a Barrier's lock, a Pipe's second direction).
  if (alignment == 0 && offset != 0)
    throw SharedStateError(fmt::format(
        "shared handle: the object at offset {} of its segment is not of the type decoded "
        "(that type starts its segment)",
        offset));
}

void check_kind(const void* p, SharedKind kind, const char* what) {
  std::uint32_t tag = 0;
  std::memcpy(&tag, p, sizeof tag);
  if (tag != static_cast<std::uint32_t>(kind))
    throw SharedStateError(fmt::format("{}: the handle does not name a {}", what, what));
}

}  // namespace mproc::detail
