// Chrome trace-event JSON for pool timelines (see mproc/detail/trace.hpp).
#include "mproc/detail/trace.hpp"

#include <cxxabi.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <map>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "mproc/version.hpp"
#include "os/platform.hpp"

namespace mproc::detail {

std::uint64_t trace_clock_ns() noexcept { return monotonic_ns(); }

const char* trace_label(std::string_view text) {
  if (text.empty()) return nullptr;
  // Node-based: the strings never move, and are never freed (a label may be in an event
  // of any timeline until the program ends).
  static std::mutex mutex;
  static auto* labels = new std::set<std::string, std::less<>>();
  std::lock_guard lock(mutex);
  auto it = labels->find(text);
  if (it == labels->end()) it = labels->emplace(text).first;
  return it->c_str();
}

namespace {

std::string demangle(const char* name) {
  int status = 0;
  std::unique_ptr<char, decltype(&std::free)> out(
      abi::__cxa_demangle(name, nullptr, nullptr, &status), &std::free);
  return status == 0 && out ? std::string(out.get()) : std::string(name);
}

}  // namespace

std::string trace_code_name(const TraceCode& code) {
  if (code.type != nullptr) return demangle(code.type->name());
  if (code.address == nullptr) return {};
  Dl_info info{};
  if (::dladdr(code.address, &info) == 0) return fmt::format("{}", code.address);
  if (info.dli_sname != nullptr && info.dli_saddr == code.address) return demangle(info.dli_sname);
  // No symbol of its own (the dynamic symbol table of an executable holds only what it
  // exports; -rdynamic exports the rest): where it is, as addr2line(1) takes it.
  const char* module = info.dli_fname != nullptr ? info.dli_fname : "?";
  if (const char* slash = std::strrchr(module, '/')) module = slash + 1;
  return fmt::format("{}+{:#x}", module,
                     reinterpret_cast<std::uintptr_t>(code.address) -
                         reinterpret_cast<std::uintptr_t>(info.dli_fbase));
}

const char* item_trace_label(const ItemLabel& f, std::size_t first) noexcept {
  try {
    return trace_label(f(first));
  } catch (...) {
    return nullptr;
  }
}

std::string current_error_label() {
  std::string what = current_exception_message();
  std::string type = current_exception_type_name();
  return what.empty() ? type : type + ": " + what;
}

namespace {

// A timeline keeps at most this many events (about 100 MB); later ones are counted.
constexpr std::size_t max_events = std::size_t{1} << 20;

const char* status_name(TraceStatus s) {
  switch (s) {
    case TraceStatus::ok: return "ok";
    case TraceStatus::error: return "error";
    case TraceStatus::crashed: return "crashed";
    case TraceStatus::timeout: return "timeout";
    case TraceStatus::cancelled: return "cancelled";
  }
  return "unknown";
}

/// `s` as the body of a JSON string.
std::string json_escape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20)
          out += fmt::format("\\u{:04x}", static_cast<unsigned>(c));
        else
          out += c;
    }
  }
  return out;
}

/// Writes `text` to `path` and sets `id` to the new file's (device, inode).
bool write_file(const std::string& path, const std::string& text, std::string& why,
                std::pair<dev_t, ino_t>& id) {
  // Write beside the file and rename, so a reader never sees half a timeline. The
  // temporary file gets a name nobody can guess and is created with O_EXCL (mkostemp(3)),
  // so a symlink planted where it will be cannot redirect the write to another file.
  std::string tmp = path + ".XXXXXX";
  const int fd = ::mkostemp(tmp.data(), O_CLOEXEC);
  if (fd < 0) {
    why = std::strerror(errno);
    return false;
  }
  ::fchmod(fd, 0644);  // mkostemp makes it 0600; a timeline is as readable as before
  std::size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      why = std::strerror(errno);
      ::close(fd);
      ::unlink(tmp.c_str());
      return false;
    }
    done += static_cast<std::size_t>(n);
  }
  struct stat st{};
  if (::fstat(fd, &st) != 0 || ::close(fd) != 0 || ::rename(tmp.c_str(), path.c_str()) != 0) {
    why = std::strerror(errno);
    ::unlink(tmp.c_str());
    return false;
  }
  id = {st.st_dev, st.st_ino};
  return true;
}

}  // namespace

namespace {

/// Text kept in blocks that never move: appended to under a lock, read without one (a
/// signal handler reads what `used` says is complete).
class TextBlocks {
 public:
  static constexpr std::size_t block_size = std::size_t{1} << 20;
  ~TextBlocks() {
    for (Block* b = head_.load(); b != nullptr;) {
      Block* next = b->next.load();
      delete b;
      b = next;
    }
  }
  /// Appends `text` (at most block_size bytes). Not thread-safe: the caller serialises.
  void append(std::string_view text) {
    if (tail_ == nullptr || tail_->used.load(std::memory_order_relaxed) + text.size() > block_size) {
      auto* b = new Block;
      if (tail_ == nullptr)
        head_.store(b, std::memory_order_release);
      else
        tail_->next.store(b, std::memory_order_release);
      tail_ = b;
    }
    const std::size_t used = tail_->used.load(std::memory_order_relaxed);
    std::memcpy(tail_->data + used, text.data(), text.size());
    // Release: a reader that sees the new length sees the bytes.
    tail_->used.store(used + text.size(), std::memory_order_release);
  }
  /// Calls `f(data, size)` for each block's complete text. Async-signal-safe.
  template <class F>
  void each(F&& f) const {
    for (const Block* b = head_.load(std::memory_order_acquire); b != nullptr;
         b = b->next.load(std::memory_order_acquire))
      f(b->data, b->used.load(std::memory_order_acquire));
  }

 private:
  struct Block {
    char data[block_size];
    std::atomic<std::size_t> used{0};
    std::atomic<Block*> next{nullptr};
  };
  std::atomic<Block*> head_{nullptr};
  Block* tail_ = nullptr;
};

/// write(2) until done; false on an error. Async-signal-safe.
bool write_all(int fd, const char* data, std::size_t size) {
  while (size > 0) {
    const ssize_t n = ::write(fd, data, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data += n;
    size -= static_cast<std::size_t>(n);
  }
  return true;
}

/// `v` in decimal into `out` (at least 21 bytes); its length. Async-signal-safe.
std::size_t decimal(std::uint64_t v, char* out) {
  char tmp[21];
  std::size_t n = 0;
  do {
    tmp[n++] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v != 0);
  for (std::size_t i = 0; i < n; ++i) out[i] = tmp[n - 1 - i];
  return n;
}

void watch(const TraceFile* file) noexcept;
void unwatch(const TraceFile* file) noexcept;

}  // namespace

/// Everything recorded for one file by the pools of this program that named it. Events
/// are formatted as they are recorded, into blocks that a signal handler can write out
/// (dump()) without taking a lock or allocating.
class TraceFile {
 public:
  explicit TraceFile(std::string path) : path_(std::move(path)), origin_ns_(trace_clock_ns()) {
    // The crash file's name is made now: the handler cannot allocate.
    crash_tmp_ = fmt::format("{}.{}.crash", path_, ::getpid());
    set_header();
    watch(this);
  }
  ~TraceFile() { unwatch(this); }
  TraceFile(const TraceFile&) = delete;
  TraceFile& operator=(const TraceFile&) = delete;

  std::uint32_t add_pool(const char* backend, unsigned workers, bool bytes) {
    std::lock_guard lock(mutex_);
    pools_.push_back(Pool{backend, workers, bytes, false});
    ++version_;
    set_header();
    return static_cast<std::uint32_t>(pools_.size());
  }

  void record(std::uint32_t pool, const TraceEvent& e) {
    std::lock_guard lock(mutex_);
    if (count_ >= max_events) {
      dropped_.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    ++count_;
    ++version_;
    Pool& p = pools_[pool - 1];
    if (e.lane == kCallerLane && !p.caller) {
      p.caller = true;
      set_header();
    }
    events_.append(format_event(pool, p, e));
  }

  std::string render() {
    std::string out;
    dump([&](const char* data, std::size_t size) {
      out.append(data, size);
      return true;
    });
    return out;
  }

  /// Hands the whole file's text to `put(data, size)` piece by piece. Takes no lock and
  /// allocates nothing, so a signal handler may call it: it sees every event whose
  /// record() returned.
  template <class Put>
  bool dump(Put&& put) const {
    const std::string* header = header_.load(std::memory_order_acquire);
    bool ok = put(header->data(), header->size());
    events_.each([&](const char* data, std::size_t size) { ok = ok && put(data, size); });
    char number[24];
    static constexpr std::string_view tail_a = "\n],\n\"displayTimeUnit\":\"ms\",\n\"otherData\":{\"producer\":\"mproc ";
    ok = ok && put(tail_a.data(), tail_a.size()) &&
         put(version_string, std::strlen(version_string));
    static constexpr std::string_view tail_b = "\",\"clock\":\"CLOCK_MONOTONIC\",\"origin_ns\":";
    ok = ok && put(tail_b.data(), tail_b.size()) && put(number, decimal(origin_ns_, number));
    static constexpr std::string_view tail_c = ",\"dropped_events\":";
    ok = ok && put(tail_c.data(), tail_c.size()) &&
         put(number, decimal(dropped_.load(std::memory_order_relaxed), number));
    return ok && put("}}\n", 3);
  }

  /// Writes the file from a signal or terminate handler: beside it, then renamed over
  /// it (open(2), write(2), rename(2) are async-signal-safe).
  void write_now() const noexcept {
    const int fd = ::open(crash_tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW,
                          0644);
    if (fd < 0) return;
    const bool ok = dump([fd](const char* d, std::size_t n) { return write_all(fd, d, n); });
    if (::close(fd) == 0 && ok)
      ::rename(crash_tmp_.c_str(), path_.c_str());
    else
      ::unlink(crash_tmp_.c_str());
  }

  /// Writes the timeline unless nothing changed since the last write; false with the
  /// reason in `why` if it cannot.
  bool write(std::string& why) {
    std::lock_guard lock(write_mutex_);
    std::uint64_t version;
    std::string text;
    {
      std::lock_guard data(mutex_);
      version = version_;
      if (version == written_) return true;
      text = render();
    }
    if (!write_file(path_, text, why, file_id_)) return false;
    written_ = version;
    return true;
  }

  /// Whether the file on disk is still the one last written here (not deleted or replaced).
  bool still_on_disk() {
    std::lock_guard lock(write_mutex_);
    struct stat st{};
    return ::stat(path_.c_str(), &st) == 0 && std::pair(st.st_dev, st.st_ino) == file_id_;
  }

  std::atomic<int> users{0};  // live Tracers

  const std::string& path() const noexcept { return path_; }
  bool warned = false;  // under the registry's lock

 private:
  struct Pool {
    const char* backend;
    unsigned workers;
    bool bytes;
    bool caller;
  };

  /// trace_code_name, once per function (under mutex_).
  const std::string& code_name(const TraceCode& code) {
    auto [it, added] = names_.try_emplace({code.address, code.type});
    if (added) it->second = trace_code_name(code);
    return it->second;
  }

  /// The opening and the metadata events of every pool, published for dump(). Old
  /// headers are kept (a handler may be reading one); there is one per pool or so.
  void set_header() {
    fmt::memory_buffer out;
    auto it = std::back_inserter(out);
    fmt::format_to(it, "{{\"traceEvents\":[\n");
    // Every event starts with its separator but the first, a pool's process_name: an
    // event is recorded only by a pool, after its metadata.
    for (std::size_t p = 0; p < pools_.size(); ++p) {
      const Pool& pool = pools_[p];
      const std::size_t pid = p + 1;
      fmt::format_to(it,
                     "{}{{\"ph\":\"M\",\"name\":\"process_name\",\"pid\":{},\"tid\":0,"
                     "\"args\":{{\"name\":\"Pool {}: {} backend, {} worker{}\"}}}}",
                     p == 0 ? "" : ",\n", pid, pid, pool.backend, pool.workers, pool.workers == 1 ? "" : "s");
      fmt::format_to(it,
                     ",\n{{\"ph\":\"M\",\"name\":\"process_sort_index\",\"pid\":{},\"tid\":0,"
                     "\"args\":{{\"sort_index\":{}}}}}",
                     pid, pid);
      for (unsigned w = 0; w < pool.workers; ++w)
        fmt::format_to(it,
                       ",\n{{\"ph\":\"M\",\"name\":\"thread_name\",\"pid\":{},\"tid\":{},"
                       "\"args\":{{\"name\":\"worker {}\"}}}}",
                       pid, w, w);
      if (pool.caller)
        fmt::format_to(it,
                       ",\n{{\"ph\":\"M\",\"name\":\"thread_name\",\"pid\":{},\"tid\":{},"
                       "\"args\":{{\"name\":\"calling thread\"}}}}",
                       pid, pool.workers);
    }
    headers_.push_back(std::make_unique<const std::string>(fmt::to_string(out)));
    header_.store(headers_.back().get(), std::memory_order_release);
  }

  std::string format_event(std::uint32_t pid, const Pool& pool, const TraceEvent& e) {
    fmt::memory_buffer out;
    auto it = std::back_inserter(out);
    const std::uint32_t tid = e.lane == kCallerLane ? pool.workers : e.lane;
    // Microseconds with nanosecond digits; an end before the origin cannot happen, but a
    // negative duration would make viewers drop the event, so clamp.
    const double ts = (static_cast<double>(e.start_ns) - static_cast<double>(origin_ns_)) / 1e3;
    const double dur =
        e.end_ns > e.start_ns ? static_cast<double>(e.end_ns - e.start_ns) / 1e3 : 0.0;
    fmt::format_to(it,
                   ",\n{{\"ph\":\"X\",\"name\":\"{}\",\"cat\":\"chunk\",\"pid\":{},\"tid\":{},"
                   "\"ts\":{:.3f},\"dur\":{:.3f},\"args\":{{\"job\":{},\"first\":{},"
                   "\"items\":{}",
                   json_escape(e.method), pid, tid, ts, dur, e.job, e.first, e.items);
    if (pool.bytes)
      fmt::format_to(it, ",\"bytes_in\":{},\"bytes_out\":{}", e.bytes_in, e.bytes_out);
    fmt::format_to(it, ",\"errors\":{},\"status\":\"{}\"", e.errors, status_name(e.status));
    if (e.status == TraceStatus::crashed || e.status == TraceStatus::timeout ||
        e.status == TraceStatus::cancelled)
      fmt::format_to(it, ",\"failed_index\":{}", e.failed_index);
    if (e.worker_pid != 0) fmt::format_to(it, ",\"worker_pid\":{}", e.worker_pid);
    // Labels and messages are cut so that an event always fits a block.
    auto cut = [](std::string_view s) { return json_escape(s.substr(0, 2000)); };
    const std::string& function = code_name(e.code);
    if (e.code.label != nullptr || !function.empty())
      fmt::format_to(it, ",\"label\":\"{}\"", cut(e.code.label != nullptr ? e.code.label : function));
    if (!function.empty()) fmt::format_to(it, ",\"function\":\"{}\"", cut(function));
    if (!e.error.empty()) fmt::format_to(it, ",\"error\":\"{}\"", cut(e.error));
    fmt::format_to(it, "}}}}");
    return fmt::to_string(out);
  }

  const std::string path_;
  const std::uint64_t origin_ns_;
  std::string crash_tmp_;
  std::mutex mutex_;
  std::vector<Pool> pools_;
  std::vector<std::unique_ptr<const std::string>> headers_;  // under mutex_
  std::atomic<const std::string*> header_{nullptr};
  TextBlocks events_;      // appended under mutex_
  std::size_t count_ = 0;  // events recorded
  std::atomic<std::uint64_t> dropped_{0};
  std::map<std::pair<const void*, const std::type_info*>, std::string> names_;
  std::uint64_t version_ = 1;  // bumped by every change; the empty file is version 1
  std::mutex write_mutex_;      // one writer at a time
  std::uint64_t written_ = 0;   // under write_mutex_
  std::pair<dev_t, ino_t> file_id_{};  // under write_mutex_
};

namespace {

// The timelines a program that ends abnormally still writes: std::terminate, SIGINT and
// SIGTERM write every file as recorded so far, then do what they would have done. The
// table is read by the handlers without a lock.
constexpr std::size_t max_watched = 64;
std::atomic<const TraceFile*> watched[max_watched];
std::atomic<pid_t> owner_pid{0};
std::terminate_handler previous_terminate = nullptr;

void write_watched() noexcept {
  // A forked worker or fork server inherits the handlers and the table: the timeline is
  // its parent's to write.
  if (::getpid() != owner_pid.load(std::memory_order_relaxed)) return;
  for (auto& slot : watched)
    if (const TraceFile* f = slot.load(std::memory_order_acquire)) f->write_now();
}

[[noreturn]] void on_terminate() {
  write_watched();
  if (previous_terminate != nullptr) previous_terminate();
  std::abort();
}

void on_signal(int sig) {
  const int saved = errno;
  write_watched();
  // SA_RESETHAND put back the default action; the signal is blocked until this returns,
  // then kills the program as it would have without the handler.
  ::raise(sig);
  errno = saved;
}

void install_handlers() {
  owner_pid.store(::getpid(), std::memory_order_relaxed);
  previous_terminate = std::set_terminate(on_terminate);
  for (const int sig : {SIGINT, SIGTERM}) {
    // A program that handles or ignores the signal itself keeps its own handling.
    struct sigaction old{};
    if (::sigaction(sig, nullptr, &old) != 0 || (old.sa_flags & SA_SIGINFO) != 0 ||
        old.sa_handler != SIG_DFL)
      continue;
    struct sigaction sa{};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESETHAND;
    ::sigaction(sig, &sa, nullptr);
  }
}

void watch(const TraceFile* file) noexcept {
  static std::once_flag once;
  try {
    std::call_once(once, install_handlers);
  } catch (const std::system_error&) {
    // call_once could not run it (no threads): the timeline is still written when the
    // pools end, only not on std::terminate or a signal.
  }
  for (auto& slot : watched) {
    const TraceFile* none = nullptr;
    if (slot.compare_exchange_strong(none, file)) return;
  }
}

void unwatch(const TraceFile* file) noexcept {
  for (auto& slot : watched) {
    const TraceFile* self = file;
    if (slot.compare_exchange_strong(self, nullptr)) return;
  }
}

// Timelines by file, for the life of the program: a pool naming a file adds to what the
// earlier pools recorded there instead of replacing it (unless the file was deleted).
std::mutex registry_mutex;
std::map<std::string, std::shared_ptr<TraceFile>>& registry() {
  static auto* files = new std::map<std::string, std::shared_ptr<TraceFile>>();
  return *files;
}

std::string file_key(const std::string& path) {
  std::error_code ec;
  auto p = std::filesystem::weakly_canonical(std::filesystem::absolute(path, ec), ec);
  return ec ? path : p.string();
}

}  // namespace

Tracer::Tracer(const std::string& path, const char* backend, unsigned workers, bool bytes) {
  if (path.empty()) throw std::invalid_argument("Pool: the trace file name is empty");
  const std::string key = file_key(path);
  {
    std::lock_guard lock(registry_mutex);
    auto& slot = registry()[key];
    // A timeline whose pools have all ended starts over if its file was deleted or
    // replaced since: the program (or a test run again) wants a fresh one.
    if (slot && slot->users.load() == 0 && !slot->still_on_disk()) slot.reset();
    if (!slot) {
      auto file = std::make_shared<TraceFile>(path);
      std::string why;
      if (!file->write(why)) {
        registry().erase(key);
        throw std::invalid_argument(
            fmt::format("Pool: cannot write the trace file {}: {}", path, why));
      }
      slot = std::move(file);
    }
    file_ = slot;
    ++file_->users;
  }
  pool_ = file_->add_pool(backend, workers, bytes);
}

Tracer::~Tracer() {
  flush();
  std::lock_guard lock(registry_mutex);
  --file_->users;
}

void Tracer::record(const TraceEvent& event) { file_->record(pool_, event); }

void Tracer::flush() noexcept {
  try {
    std::string why;
    if (file_->write(why)) return;
    std::lock_guard lock(registry_mutex);
    if (file_->warned) return;
    file_->warned = true;
    std::fprintf(stderr, "mproc: cannot write the trace file %s: %s\n", file_->path().c_str(),
                 why.c_str());
  } catch (...) {
  }
}

}  // namespace mproc::detail
