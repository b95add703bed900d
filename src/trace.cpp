// Chrome trace-event JSON for pool timelines (see mproc/detail/trace.hpp).
#include "mproc/detail/trace.hpp"

#include <cxxabi.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
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

/// Everything recorded for one file by the pools of this program that named it.
class TraceFile {
 public:
  explicit TraceFile(std::string path) : path_(std::move(path)), origin_ns_(trace_clock_ns()) {}

  std::uint32_t add_pool(const char* backend, unsigned workers, bool bytes) {
    std::lock_guard lock(mutex_);
    pools_.push_back(Pool{backend, workers, bytes, false});
    ++version_;
    return static_cast<std::uint32_t>(pools_.size());
  }

  void record(std::uint32_t pool, const TraceEvent& e) {
    std::lock_guard lock(mutex_);
    if (events_.size() >= max_events) {
      ++dropped_;
      return;
    }
    events_.push_back(Entry{pool, e});
    ++version_;
    if (e.lane == kCallerLane) pools_[pool - 1].caller = true;
  }

  std::string render() {
    std::lock_guard lock(mutex_);
    fmt::memory_buffer out;
    auto it = std::back_inserter(out);
    fmt::format_to(it, "{{\"traceEvents\":[\n");
    bool first = true;
    auto sep = [&] {
      if (!first) fmt::format_to(it, ",\n");
      first = false;
    };
    for (std::size_t p = 0; p < pools_.size(); ++p) {
      const Pool& pool = pools_[p];
      const std::size_t pid = p + 1;
      sep();
      fmt::format_to(it,
                     "{{\"ph\":\"M\",\"name\":\"process_name\",\"pid\":{},\"tid\":0,"
                     "\"args\":{{\"name\":\"Pool {}: {} backend, {} worker{}\"}}}}",
                     pid, pid, pool.backend, pool.workers, pool.workers == 1 ? "" : "s");
      sep();
      fmt::format_to(it,
                     "{{\"ph\":\"M\",\"name\":\"process_sort_index\",\"pid\":{},\"tid\":0,"
                     "\"args\":{{\"sort_index\":{}}}}}",
                     pid, pid);
      for (unsigned w = 0; w < pool.workers; ++w) {
        sep();
        fmt::format_to(it,
                       "{{\"ph\":\"M\",\"name\":\"thread_name\",\"pid\":{},\"tid\":{},"
                       "\"args\":{{\"name\":\"worker {}\"}}}}",
                       pid, w, w);
      }
      if (pool.caller) {
        sep();
        fmt::format_to(it,
                       "{{\"ph\":\"M\",\"name\":\"thread_name\",\"pid\":{},\"tid\":{},"
                       "\"args\":{{\"name\":\"calling thread\"}}}}",
                       pid, pool.workers);
      }
    }
    for (const Entry& entry : events_) {
      const TraceEvent& e = entry.event;
      const Pool& pool = pools_[entry.pool - 1];
      const std::uint32_t tid = e.lane == kCallerLane ? pool.workers : e.lane;
      // Microseconds with nanosecond digits; an end before the origin cannot happen, but a
      // negative duration would make viewers drop the event, so clamp.
      const double ts = (static_cast<double>(e.start_ns) - static_cast<double>(origin_ns_)) / 1e3;
      const double dur =
          e.end_ns > e.start_ns ? static_cast<double>(e.end_ns - e.start_ns) / 1e3 : 0.0;
      sep();
      fmt::format_to(it,
                     "{{\"ph\":\"X\",\"name\":\"{}\",\"cat\":\"chunk\",\"pid\":{},\"tid\":{},"
                     "\"ts\":{:.3f},\"dur\":{:.3f},\"args\":{{\"job\":{},\"first\":{},"
                     "\"items\":{}",
                     json_escape(e.method), entry.pool, tid, ts, dur, e.job, e.first, e.items);
      if (pool.bytes)
        fmt::format_to(it, ",\"bytes_in\":{},\"bytes_out\":{}", e.bytes_in, e.bytes_out);
      fmt::format_to(it, ",\"errors\":{},\"status\":\"{}\"", e.errors, status_name(e.status));
      if (e.status == TraceStatus::crashed || e.status == TraceStatus::timeout ||
          e.status == TraceStatus::cancelled)
        fmt::format_to(it, ",\"failed_index\":{}", e.failed_index);
      if (e.worker_pid != 0) fmt::format_to(it, ",\"worker_pid\":{}", e.worker_pid);
      const std::string& function = code_name(e.code);
      if (e.code.label != nullptr || !function.empty())
        fmt::format_to(it, ",\"label\":\"{}\"",
                       json_escape(e.code.label != nullptr ? e.code.label : function));
      if (!function.empty()) fmt::format_to(it, ",\"function\":\"{}\"", json_escape(function));
      if (!e.error.empty()) fmt::format_to(it, ",\"error\":\"{}\"", json_escape(e.error));
      fmt::format_to(it, "}}}}");
    }
    fmt::format_to(it,
                   "\n],\n\"displayTimeUnit\":\"ms\",\n\"otherData\":{{\"producer\":\"mproc {}\","
                   "\"clock\":\"CLOCK_MONOTONIC\",\"origin_ns\":{},\"dropped_events\":{}}}}}\n",
                   version_string, origin_ns_, dropped_);
    return fmt::to_string(out);
  }

  /// Writes the timeline unless nothing changed since the last write; false with the
  /// reason in `why` if it cannot.
  bool write(std::string& why) {
    std::lock_guard lock(write_mutex_);
    std::uint64_t version;
    {
      std::lock_guard data(mutex_);
      version = version_;
    }
    if (version == written_) return true;
    if (!write_file(path_, render(), why, file_id_)) return false;
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
  struct Entry {
    std::uint32_t pool;
    TraceEvent event;
  };

  /// trace_code_name, once per function (under mutex_).
  const std::string& code_name(const TraceCode& code) {
    auto [it, added] = names_.try_emplace({code.address, code.type});
    if (added) it->second = trace_code_name(code);
    return it->second;
  }

  const std::string path_;
  const std::uint64_t origin_ns_;
  std::mutex mutex_;
  std::vector<Pool> pools_;
  std::vector<Entry> events_;
  std::map<std::pair<const void*, const std::type_info*>, std::string> names_;
  std::uint64_t dropped_ = 0;
  std::uint64_t version_ = 1;  // bumped by every change; the empty file is version 1
  std::mutex write_mutex_;      // one writer at a time
  std::uint64_t written_ = 0;   // under write_mutex_
  std::pair<dev_t, ino_t> file_id_{};  // under write_mutex_
};

namespace {

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
