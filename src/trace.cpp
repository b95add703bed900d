// Chrome trace-event JSON for pool timelines (see mproc/detail/trace.hpp).
#include "mproc/detail/trace.hpp"

#include <cxxabi.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
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

#include "mproc/error.hpp"
#include "mproc/future.hpp"
#include "mproc/process.hpp"
#include "mproc/trace.hpp"
#include "mproc/version.hpp"
#include "os/platform.hpp"
#include "trace_events.hpp"

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

/// One event's text, built without allocating (a signal handler formats the shared
/// slots with it). Text beyond its capacity is cut; the callers keep well below it.
class Line {
 public:
  Line& add(std::string_view s) noexcept {
    for (char c : s)
      if (n_ < sizeof buf_) buf_[n_++] = c;
    return *this;
  }
  Line& num(std::int64_t v) noexcept {
    if (v < 0) add("-");
    char t[24];
    return add({t, decimal(v < 0 ? 0 - static_cast<std::uint64_t>(v) : static_cast<std::uint64_t>(v), t)});
  }
  /// `ns` as microseconds with three decimals.
  Line& us(std::uint64_t ns) noexcept {
    num(static_cast<std::int64_t>(ns / 1000)).add(".");
    const auto frac = static_cast<unsigned>(ns % 1000);
    const char digits[3] = {static_cast<char>('0' + frac / 100), static_cast<char>('0' + frac / 10 % 10),
                            static_cast<char>('0' + frac % 10)};
    return add({digits, 3});
  }
  /// The NUL-terminated text of at most `max` bytes at `s`, as the body of a JSON string.
  Line& text(const char* s, std::size_t max) noexcept {
    for (std::size_t i = 0; i < max && s[i] != '\0'; ++i) {
      const char c = s[i];
      if (c == '"' || c == '\\') {
        const char esc[2] = {'\\', c};
        add({esc, 2});
      } else if (static_cast<unsigned char>(c) < 0x20) {
        add("?");
      } else {
        add({&c, 1});
      }
    }
    return *this;
  }
  const char* data() const noexcept { return buf_; }
  std::size_t size() const noexcept { return n_; }

 private:
  char buf_[1024];
  std::size_t n_ = 0;
};

void watch(const TraceFile* file) noexcept;
void unwatch(const TraceFile* file) noexcept;

}  // namespace

std::atomic<TraceSlots*> trace_slots_{nullptr};

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
    pools_.push_back(Pool{SectionKind::pool, backend, workers, bytes, false, {}});
    ++version_;
    set_header();
    return static_cast<std::uint32_t>(pools_.size());
  }

  /// A section for an executor's submits, "Executor N: backend backend, submits".
  std::uint32_t add_submits(const char* backend) {
    std::lock_guard lock(mutex_);
    std::size_t n = 1;
    for (const Pool& p : pools_) n += p.kind == SectionKind::submits ? 1 : 0;
    pools_.push_back(Pool{SectionKind::submits, backend, 0, false, false,
                          fmt::format("Executor {}: {} backend, submits", n, backend)});
    ++version_;
    set_header();
    return static_cast<std::uint32_t>(pools_.size());
  }

  /// Adds the sections of the shared slots' events and writes them out from now on.
  void attach_slots(const TraceSlots* slots) {
    std::lock_guard lock(mutex_);
    pools_.push_back(Pool{SectionKind::processes, "", 0, false, false, "Processes"});
    processes_pid_ = static_cast<std::uint32_t>(pools_.size());
    pools_.push_back(Pool{SectionKind::queues, "", 0, false, false, "Queues"});
    queues_pid_ = static_cast<std::uint32_t>(pools_.size());
    set_header();
    slots_.store(slots, std::memory_order_release);
  }

  /// A lane of section `section` for submits: the lowest free one.
  std::uint32_t take_lane(std::uint32_t section) {
    std::lock_guard lock(mutex_);
    Pool& p = pools_[section - 1];
    std::uint32_t lane = 0;
    while (lane < p.busy.size() && p.busy[lane]) ++lane;
    if (lane == p.busy.size()) p.busy.push_back(false);
    p.busy[lane] = true;
    if (lane >= p.workers) {
      p.workers = lane + 1;
      ++version_;
      set_header();
    }
    return lane;
  }

  void free_lane(std::uint32_t section, std::uint32_t lane) {
    std::lock_guard lock(mutex_);
    pools_[section - 1].busy[lane] = false;
  }

  /// One submit, from `t.start_ns` to now; frees its lane.
  void record_submit(std::uint32_t section, const SubmitTracer::Token& t, const char* status,
                     const std::string& error) {
    const std::uint64_t end_ns = trace_clock_ns();
    std::lock_guard lock(mutex_);
    pools_[section - 1].busy[t.lane] = false;
    if (count_ >= max_events) {
      dropped_.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    ++count_;
    ++version_;
    fmt::memory_buffer out;
    auto it = std::back_inserter(out);
    const double ts = (static_cast<double>(t.start_ns) - static_cast<double>(origin_ns_)) / 1e3;
    const double dur = end_ns > t.start_ns ? static_cast<double>(end_ns - t.start_ns) / 1e3 : 0.0;
    fmt::format_to(it,
                   ",\n{{\"ph\":\"X\",\"name\":\"submit\",\"cat\":\"submit\",\"pid\":{},"
                   "\"tid\":{},\"ts\":{:.3f},\"dur\":{:.3f},\"args\":{{\"job\":{},\"status\":\"{}\"",
                   section, t.lane, ts, dur, t.job, status);
    append_code(it, t.code);
    if (!error.empty()) fmt::format_to(it, ",\"error\":\"{}\"", cut(error));
    fmt::format_to(it, "}}}}");
    events_.append(std::string_view(out.data(), out.size()));
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
    std::uint64_t dropped = dropped_.load(std::memory_order_relaxed);
    if (const TraceSlots* slots = slots_.load(std::memory_order_acquire)) {
      ok = ok && dump_slots(*slots, put);
      dropped += slots->dropped.load(std::memory_order_relaxed);
    }
    char number[24];
    static constexpr std::string_view tail_a = "\n],\n\"displayTimeUnit\":\"ms\",\n\"otherData\":{\"producer\":\"mproc ";
    ok = ok && put(tail_a.data(), tail_a.size()) &&
         put(version_string, std::strlen(version_string));
    static constexpr std::string_view tail_b = "\",\"clock\":\"CLOCK_MONOTONIC\",\"origin_ns\":";
    ok = ok && put(tail_b.data(), tail_b.size()) && put(number, decimal(origin_ns_, number));
    static constexpr std::string_view tail_c = ",\"dropped_events\":";
    ok = ok && put(tail_c.data(), tail_c.size()) && put(number, decimal(dropped, number));
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
      // The shared slots change without a version: while they are attached, always write.
      if (version == written_ && slots_.load(std::memory_order_relaxed) == nullptr) return true;
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
  enum class SectionKind { pool, submits, processes, queues };
  /// A "process" of the trace: a pool, an executor's submits, or the Processes or Queues
  /// of the shared slots.
  struct Pool {
    SectionKind kind;
    const char* backend;
    unsigned workers;  // submits: lanes
    bool bytes;
    bool caller;
    std::string name;         // all but pools
    std::vector<bool> busy{};  // submits: lanes in use
  };

  /// The events of the shared slots, as dump() hands them out. Async-signal-safe.
  template <class Put>
  bool dump_slots(const TraceSlots& slots, Put& put) const {
    const std::uint64_t used = std::min<std::uint64_t>(
        slots.next.load(std::memory_order_acquire), kTraceSlots);
    bool ok = true;
    for (std::uint64_t i = 0; ok && i < used; ++i) {
      const TraceSlot& slot = slots.slots[i];
      const std::uint32_t state = slot.state.load(std::memory_order_acquire);
      if (state != 2 && state != 3) continue;
      Line line;
      if (slot.kind == TraceSlotKind::process)
        process_line(slot, state == 3, line);
      else if (slot.kind == TraceSlotKind::queue)
        queue_line(slot, line);
      ok = put(line.data(), line.size());
    }
    return ok;
  }

  void process_line(const TraceSlot& s, bool running, Line& l) const {
    const std::uint64_t end = running ? trace_clock_ns() : s.end_ns;
    l.add(",\n{\"ph\":\"M\",\"name\":\"thread_name\",\"pid\":").num(processes_pid_);
    l.add(",\"tid\":").num(s.tid).add(",\"args\":{\"name\":\"");
    l.text(s.name, sizeof s.name).add(" (pid ").num(s.tid).add(")\"}}");
    l.add(",\n{\"ph\":\"X\",\"name\":\"process\",\"cat\":\"process\",\"pid\":").num(processes_pid_).add(",\"tid\":").num(s.tid);
    times(s.start_ns, end, l);
    l.add(",\"args\":{\"pid\":").num(s.tid).add(",\"parent_pid\":").num(s.pid);
    if (running) {
      l.add(",\"status\":\"running\"");
    } else {
      l.add(",\"status\":\"").add(s.status == 0 ? "ok" : s.status == 1 ? "error" : "crashed");
      l.add("\",\"exitcode\":").num(s.code);
      if (s.text[0] != '\0') l.add(",\"error\":\"").text(s.text, sizeof s.text).add("\"");
    }
    l.add(",\"label\":\"").text(s.name, sizeof s.name).add("\"}}");
  }

  void queue_line(const TraceSlot& s, Line& l) const {
    if (s.first_of_lane != 0) {
      l.add(",\n{\"ph\":\"M\",\"name\":\"thread_name\",\"pid\":").num(queues_pid_);
      l.add(",\"tid\":").num(s.tid).add(",\"args\":{\"name\":\"");
      l.text(s.name, sizeof s.name).add(" (pid ").num(s.pid);
      if (s.tid != s.pid) l.add(", thread ").num(s.tid);
      l.add(")\"}}");
    }
    const char* op = s.op == 0 ? "put" : "get";
    l.add(",\n{\"ph\":\"X\",\"name\":\"").add(op);
    l.add("\",\"cat\":\"queue\",\"pid\":").num(queues_pid_).add(",\"tid\":").num(s.tid);
    times(s.start_ns, s.end_ns, l);
    auto queue_name = [&] {
      l.text(s.text, sizeof s.text).add(" ").num(static_cast<std::int64_t>(s.object >> 32));
      l.add(".").num(static_cast<std::int64_t>(s.object & 0xffffffffu));
    };
    l.add(",\"args\":{\"queue\":\"");
    queue_name();
    l.add("\",\"bytes\":").num(static_cast<std::int64_t>(s.bytes)).add(",\"blocked_us\":").us(s.blocked_ns);
    l.add(",\"status\":\"").add(s.status == 0 ? "ok" : s.status == 1 ? "timeout" : "closed");
    l.add("\",\"process_pid\":").num(s.pid).add(",\"label\":\"").add(op).add(" ");
    queue_name();
    l.add("\"}}");
  }

  /// ,"ts":..,"dur":.. of a span from `start` to `end`, relative to the origin.
  void times(std::uint64_t start, std::uint64_t end, Line& l) const {
    const std::uint64_t from = start > origin_ns_ ? start - origin_ns_ : 0;
    l.add(",\"ts\":").us(from).add(",\"dur\":").us(end > start ? end - start : 0);
  }

  /// ,"label":..,"function":.. of `code`.
  template <class It>
  void append_code(It it, const TraceCode& code) {
    const std::string& function = code_name(code);
    if (code.label != nullptr || !function.empty())
      fmt::format_to(it, ",\"label\":\"{}\"", cut(code.label != nullptr ? code.label : function));
    if (!function.empty()) fmt::format_to(it, ",\"function\":\"{}\"", cut(function));
  }

  /// Labels and messages are cut so that an event always fits a block.
  static std::string cut(std::string_view s) { return json_escape(s.substr(0, 2000)); }

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
    std::size_t pool_number = 0;
    for (std::size_t p = 0; p < pools_.size(); ++p) {
      const Pool& pool = pools_[p];
      const std::size_t pid = p + 1;
      if (pool.kind != SectionKind::pool) {
        fmt::format_to(it,
                       "{}{{\"ph\":\"M\",\"name\":\"process_name\",\"pid\":{},\"tid\":0,"
                       "\"args\":{{\"name\":\"{}\"}}}}",
                       p == 0 ? "" : ",\n", pid, json_escape(pool.name));
        fmt::format_to(it,
                       ",\n{{\"ph\":\"M\",\"name\":\"process_sort_index\",\"pid\":{},\"tid\":0,"
                       "\"args\":{{\"sort_index\":{}}}}}",
                       pid, pid);
        // Submit lanes are named here; the lanes of the slots' sections with their events.
        for (unsigned w = 0; w < pool.workers; ++w)
          fmt::format_to(it,
                         ",\n{{\"ph\":\"M\",\"name\":\"thread_name\",\"pid\":{},\"tid\":{},"
                         "\"args\":{{\"name\":\"lane {}\"}}}}",
                         pid, w, w);
        continue;
      }
      ++pool_number;
      fmt::format_to(it,
                     "{}{{\"ph\":\"M\",\"name\":\"process_name\",\"pid\":{},\"tid\":0,"
                     "\"args\":{{\"name\":\"Pool {}: {} backend, {} worker{}\"}}}}",
                     p == 0 ? "" : ",\n", pid, pool_number, pool.backend, pool.workers, pool.workers == 1 ? "" : "s");
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
    append_code(it, e.code);
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
  std::atomic<const TraceSlots*> slots_{nullptr};
  std::uint32_t processes_pid_ = 0, queues_pid_ = 0;  // set before slots_
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

void trace_flush_program() noexcept;

namespace {

/// The timeline of `path`, created (truncated) the first time this program names it,
/// with one more user. `who` names the caller in errors ("Pool").
std::shared_ptr<TraceFile> join_file(const std::string& path, const char* who) {
  if (path.empty()) throw std::invalid_argument(fmt::format("{}: the trace file name is empty", who));
  const std::string key = file_key(path);
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
          fmt::format("{}: cannot write the trace file {}: {}", who, path, why));
    }
    slot = std::move(file);
  }
  ++slot->users;
  return slot;
}

/// Writes `file`; a failure is reported once on stderr. Never throws.
void flush_file(TraceFile& file) noexcept {
  try {
    std::string why;
    if (file.write(why)) return;
    std::lock_guard lock(registry_mutex);
    if (file.warned) return;
    file.warned = true;
    std::fprintf(stderr, "mproc: cannot write the trace file %s: %s\n", file.path().c_str(),
                 why.c_str());
  } catch (...) {
  }
}

// trace_to()'s timeline: set once, never released (it lasts as long as the program).
std::mutex program_mutex;
std::shared_ptr<TraceFile>* program_file = nullptr;  // under program_mutex
std::string* program_key = nullptr;
pid_t program_owner = 0;

void flush_at_exit() {
  if (::getpid() == program_owner) trace_flush_program();
}

}  // namespace

void trace_flush_program() noexcept {
  std::shared_ptr<TraceFile> file;
  {
    std::lock_guard lock(program_mutex);
    if (program_file == nullptr) return;
    file = *program_file;
  }
  flush_file(*file);
}

std::string trace_path_for(const std::string& option) {
  if (!option.empty()) return option;
  std::lock_guard lock(program_mutex);
  if (program_file == nullptr || ::getpid() != program_owner) return {};
  return (*program_file)->path();
}

Tracer::Tracer(const std::string& path, const char* backend, unsigned workers, bool bytes)
    : file_(join_file(path, "Pool")) {
  pool_ = file_->add_pool(backend, workers, bytes);
}

Tracer::~Tracer() {
  flush();
  std::lock_guard lock(registry_mutex);
  --file_->users;
}

void Tracer::record(const TraceEvent& event) { file_->record(pool_, event); }

void Tracer::flush() noexcept { flush_file(*file_); }

std::shared_ptr<SubmitTracer> SubmitTracer::open(const std::string& option, const char* backend) {
  const std::string path = trace_path_for(option);
  if (path.empty()) return nullptr;
  auto file = join_file(path, "Pool");
  const std::uint32_t section = file->add_submits(backend);
  return std::make_shared<SubmitTracer>(std::move(file), section);
}

SubmitTracer::SubmitTracer(std::shared_ptr<TraceFile> file, std::uint32_t section)
    : file_(std::move(file)), section_(section) {}

SubmitTracer::~SubmitTracer() {
  flush_file(*file_);
  std::lock_guard lock(registry_mutex);
  --file_->users;
}

SubmitTracer::Token SubmitTracer::begin(const TraceCode& code) {
  static std::atomic<std::uint64_t> jobs{0};
  Token t;
  t.job = jobs.fetch_add(1, std::memory_order_relaxed) + 1;
  t.code = code;
  t.lane = file_->take_lane(section_);
  t.start_ns = trace_clock_ns();
  return t;
}

void SubmitTracer::watch(const std::shared_ptr<SubmitTracer>& self, const Token& token,
                         FutureStateBase& done) {
  const FutureStateBase* state = &done;
  // The callback is owned by the state, so the state outlives it.
  done.add_done_callback([self, token, state] { self->finish(token, *state); });
}

void SubmitTracer::abandon(const Token& token) noexcept {
  try {
    file_->free_lane(section_, token.lane);
  } catch (...) {
  }
}

void SubmitTracer::finish(const Token& token, const FutureStateBase& done) noexcept {
  try {
    const char* status = "ok";
    std::string error;
    if (done.cancelled()) {
      status = "cancelled";
    } else if (done.failed()) {
      status = "error";
      try {
        std::rethrow_exception(done.exception());
      } catch (const RemoteError& e) {
        // As a chunk's error: what the task threw, not how it came back.
        error = e.type_name() + ": " + e.message();
      } catch (...) {
        error = current_error_label();
      }
    }
    file_->record_submit(section_, token, status, error);
  } catch (...) {
    abandon(token);
  }
}

// ---- the shared slots ----------------------------------------------------------------

namespace {

/// Copies `s` into `out` (NUL-terminated, cut at a character boundary of UTF-8).
template <std::size_t N>
void copy_text(char (&out)[N], std::string_view s) noexcept {
  std::size_t n = std::min(s.size(), N - 1);
  if (n < s.size())
    while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xc0) == 0x80) --n;
  std::memcpy(out, s.data(), n);
  out[n] = '\0';
}

/// The next free slot, marked as being written; null (and counted) when none is left.
TraceSlot* claim_slot(TraceSlots& slots) noexcept {
  const std::uint64_t i = slots.next.fetch_add(1, std::memory_order_relaxed);
  if (i >= kTraceSlots) {
    slots.dropped.fetch_add(1, std::memory_order_relaxed);
    return nullptr;
  }
  TraceSlot& slot = slots.slots[i];
  slot.state.store(1, std::memory_order_relaxed);
  return &slot;
}

// The pid for which this thread has named its lane: a forked child's thread inherits the
// value of the thread that forked, and must name its own.
thread_local pid_t tls_lane_pid = 0;

}  // namespace

std::uint32_t trace_process_start(pid_t pid, std::string_view name) noexcept {
  TraceSlots* slots = trace_slots();
  if (slots == nullptr) return 0;
  TraceSlot* s = claim_slot(*slots);
  if (s == nullptr) return 0;
  s->kind = TraceSlotKind::process;
  s->status = 0;
  s->pid = ::getpid();
  s->tid = pid;
  s->code = 0;
  s->start_ns = trace_clock_ns();
  s->end_ns = 0;
  copy_text(s->name, name);
  s->text[0] = '\0';
  s->state.store(3, std::memory_order_release);
  return static_cast<std::uint32_t>(s - slots->slots) + 1;
}

void trace_process_exit(std::uint32_t slot, int status) noexcept {
  TraceSlot& s = trace_slots()->slots[slot - 1];
  s.end_ns = trace_clock_ns();
  s.code = status;
  s.status = status == 0 ? 0 : status > 0 ? 1 : 2;
  if (status > 0) {
    fmt::format_to_n(s.text, sizeof s.text - 1, "exited with code {}", status).out[0] = '\0';
  } else if (status < 0) {
    const char* abbrev = ::sigabbrev_np(-status);
    auto r = abbrev != nullptr
                 ? fmt::format_to_n(s.text, sizeof s.text - 1, "killed by signal {} (SIG{})", -status, abbrev)
                 : fmt::format_to_n(s.text, sizeof s.text - 1, "killed by signal {}", -status);
    *r.out = '\0';
  } else {
    s.text[0] = '\0';
  }
  s.state.store(2, std::memory_order_release);
}

void trace_queue_op(std::uint8_t op, std::uint64_t object, const char* kind,
                    std::uint64_t start_ns, std::uint64_t blocked_ns, std::uint64_t bytes,
                    QueueTraceStatus status) noexcept {
  TraceSlots* slots = trace_slots();
  if (slots == nullptr) return;
  const std::uint64_t end_ns = trace_clock_ns();
  TraceSlot* s = claim_slot(*slots);
  if (s == nullptr) return;
  s->kind = TraceSlotKind::queue;
  s->status = static_cast<std::uint8_t>(status);
  s->op = op;
  s->pid = ::getpid();
  s->tid = static_cast<std::int32_t>(::gettid());
  s->code = 0;
  s->start_ns = start_ns;
  s->end_ns = end_ns;
  s->blocked_ns = blocked_ns;
  s->bytes = bytes;
  s->object = object;
  s->first_of_lane = tls_lane_pid != s->pid ? 1 : 0;
  s->name[0] = '\0';
  if (s->first_of_lane != 0) {
    tls_lane_pid = s->pid;
    try {
      copy_text(s->name, current_process().name);
    } catch (...) {
    }
  }
  copy_text(s->text, kind);
  s->state.store(2, std::memory_order_release);
}

}  // namespace mproc::detail

namespace mproc {

void trace_to(const std::string& path) {
  using namespace detail;
  const std::string key = file_key(path);
  std::lock_guard lock(program_mutex);
  if (program_file != nullptr) {
    if (*program_key == key && ::getpid() == program_owner) return;
    throw std::logic_error(fmt::format("mproc::trace_to: this program already traces to {}",
                                       (*program_file)->path()));
  }
  auto file = join_file(path, "mproc::trace_to");
  void* mem = ::mmap(nullptr, sizeof(TraceSlots), PROT_READ | PROT_WRITE,
                     MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (mem == MAP_FAILED) {
    const int err = errno;
    std::lock_guard registry_lock(registry_mutex);
    --file->users;
    throw std::system_error(err, std::generic_category(), "mmap for mproc::trace_to");
  }
  // Zero pages: every slot free, the counters 0.
  auto* slots = static_cast<TraceSlots*>(mem);
  file->attach_slots(slots);
  program_file = new std::shared_ptr<TraceFile>(std::move(file));
  program_key = new std::string(key);
  program_owner = ::getpid();
  trace_slots_.store(slots, std::memory_order_release);
  static const bool at_exit = [] {
    std::atexit(flush_at_exit);
    return true;
  }();
  (void)at_exit;
}

void trace_flush() noexcept { detail::trace_flush_program(); }

std::string trace_path() {
  std::lock_guard lock(detail::program_mutex);
  return detail::program_file != nullptr ? (*detail::program_file)->path() : std::string();
}

}  // namespace mproc
