// Options shared by the compute subcommands, the Pool built from them, JSON output and
// the exit-code policy (see compute.hpp).
#include "compute.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <cstdio>
#include <exception>
#include <new>
#include <string>
#include <utility>

#include <fmt/core.h>

#include <mproc/cpu_count.hpp>

namespace mproc::cli {

unsigned ComputeOptions::resolved_workers() const { return workers != 0 ? workers : cpu_count(); }

MapOptions ComputeOptions::map_options(std::string label, std::string unit) const {
  return MapOptions{.chunksize = chunksize,
                    .progress = progress ? ProgressOption::bar(std::move(label), std::move(unit))
                                         : ProgressOption()};
}

CLI::Validator integer_in(std::uint64_t min, std::uint64_t max) {
  return CLI::Validator(
      [min, max](std::string& s) -> std::string {
        const bool digits = !s.empty() && s.size() <= 20 &&
                            s.find_first_not_of("0123456789") == std::string::npos;
        std::uint64_t v = 0;
        if (digits) {
          try {
            v = std::stoull(s);
          } catch (const std::out_of_range&) {
            return fmt::format("'{}' is out of range ({}..{})", s, min, max);
          }
        }
        if (!digits) return fmt::format("'{}' is not a whole number ({}..{})", s, min, max);
        if (v < min || v > max) return fmt::format("'{}' is out of range ({}..{})", s, min, max);
        return {};
      },
      "");
}

std::uint64_t parse_size(std::string_view option, const std::string& text, std::uint64_t max) {
  const std::string name(option);
  const auto not_a_size = [&] {
    return CLI::ValidationError(name, "not a size: '" + text + "' (e.g. 50M, 1G, 4096)");
  };
  std::size_t pos = 0;
  unsigned long long n = 0;
  // stoull takes "-5" as 2^64 - 5, and leading blanks.
  if (text.empty() || text.find_first_not_of("0123456789KkMGiB") != std::string::npos)
    throw not_a_size();
  try {
    n = std::stoull(text, &pos);
  } catch (const std::exception&) {
    throw not_a_size();
  }
  const std::string unit = text.substr(pos);
  std::uint64_t mult = 1;
  if (unit == "K" || unit == "k" || unit == "KiB")
    mult = std::uint64_t{1} << 10;
  else if (unit == "M" || unit == "MiB")
    mult = std::uint64_t{1} << 20;
  else if (unit == "G" || unit == "GiB")
    mult = std::uint64_t{1} << 30;
  else if (!unit.empty())
    throw not_a_size();
  if (n == 0 || n > max / mult) {
    const std::string most = max % (std::uint64_t{1} << 30) == 0   ? fmt::format("{}G", max >> 30)
                             : max % (std::uint64_t{1} << 20) == 0 ? fmt::format("{}M", max >> 20)
                                                                   : fmt::format("{}", max);
    throw CLI::ValidationError(name, "must be between 1 byte and " + most + ": '" + text + "'");
  }
  return n * mult;
}

void add_compute_options(CLI::App& cmd, ComputeOptions& o) {
  cmd.add_option("--backend", o.backend, "Where workers run: process, thread or mpi")
      ->check(CLI::IsMember({"process", "thread", "mpi"}))
      ->capture_default_str();
  // 4096 is the thread pool's limit; a bigger count is a typo, not a machine.
  cmd.add_option("-j,--jobs,--workers", o.workers, "Workers, at most 4096 (0: cpu_count())")
      ->option_text("N")
      ->check(integer_in(0, 4096))
      ->capture_default_str();
  cmd.add_option("--chunksize", o.chunksize, "Items per chunk (0: adaptive)")
      ->option_text("N")
      ->check(integer_in(0, std::uint64_t{1} << 32))
      ->capture_default_str();
  cmd.add_flag("--json", o.json, "Print one JSON object instead of text");
  cmd.add_flag("--progress", o.progress, "Progress bars on stderr (if a terminal)");
  cmd.add_flag("--quiet", o.quiet, "No summary line on stderr");
  cmd.add_option("--trace", o.trace, "Write a timeline of every chunk (see trace-view)")
      ->option_text("FILE");
}

void check_compute_options(const ComputeOptions& o) {
#if !defined(MPROC_HAS_MPI)
  // Accepted by the parser so that scripts written for builds that have it get a reason,
  // not "unknown option".
  if (o.backend == "mpi")
    throw CLI::ValidationError("the mpi backend is not built (it comes with MPI support)");
#else
  (void)o;
#endif
}

PoolOptions pool_options(const ComputeOptions& o) {
  return PoolOptions{.workers = o.workers,
                     .backend = o.backend == "thread" ? Backend::thread
                                : o.backend == "mpi"  ? Backend::mpi
                                                      : Backend::process,
                     .chunksize = o.chunksize,
                     .progress = o.progress,
                     .trace = o.trace};
}

namespace {

/// The first line of an error message: a RemoteError carries the worker's context on
/// later lines, and the tool promises one line.
std::string first_line(const char* what) {
  std::string_view s(what);
  return std::string(s.substr(0, s.find('\n')));
}

}  // namespace

void run_command(std::string_view name, int* exit_code, const std::function<int()>& body) {
  try {
    *exit_code = body();
  } catch (const CLI::Error&) {
    throw;
  } catch (const UsageError& e) {
    fmt::print(stderr, "mproc {}: {}\n", name, first_line(e.what()));
    *exit_code = usage_error;
  } catch (const std::invalid_argument& e) {
    fmt::print(stderr, "mproc {}: {}\n", name, first_line(e.what()));
    *exit_code = usage_error;
  } catch (const std::bad_alloc&) {
    fmt::print(stderr, "mproc {}: out of memory\n", name);
    *exit_code = task_failures;
  } catch (const std::exception& e) {
    fmt::print(stderr, "mproc {}: {}\n", name, first_line(e.what()));
    *exit_code = task_failures;
  }
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

JsonObject& JsonObject::add(std::string_view key, std::vector<JsonObject> objects) {
  nlohmann::ordered_json& list = json_[std::string(key)] = nlohmann::ordered_json::array();
  for (JsonObject& o : objects) list.push_back(std::move(o.json_));
  return *this;
}

JsonObject& JsonObject::add_pool(const ComputeOptions& o, unsigned workers) {
  add("workers", workers);
  add("backend", o.backend);
  add("chunksize", static_cast<std::uint64_t>(o.chunksize));
  return *this;
}

std::string JsonObject::str() const {
  // The default handler (strict) would throw on a byte that is not UTF-8.
  return json_.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

void write_stdout(std::string_view text) {
  std::fwrite(text.data(), 1, text.size(), stdout);
  std::fflush(stdout);
}

void write_file(const std::string& path, std::string_view text) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr)
    throw UsageError(fmt::format("cannot write '{}': {}", path, std::strerror(errno)));
  int error = std::fwrite(text.data(), 1, text.size(), f) == text.size() ? 0 : errno;
  if (std::fclose(f) != 0 && error == 0) error = errno;
  if (error != 0) {
    std::remove(path.c_str());
    throw UsageError(fmt::format("cannot write '{}': {}", path, std::strerror(error)));
  }
}

bool is_stream(const std::string& path) {
  if (path == "-") return true;
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || S_ISDIR(st.st_mode)) return false;
  // A regular file of size 0 may be a /proc or /sys file, which has bytes all the same;
  // reading a really empty one costs nothing.
  return !S_ISREG(st.st_mode) || st.st_size == 0;
}

std::string read_input(const std::string& path, const std::function<void(std::string_view)>& chunk) {
  const bool stdin_input = path == "-";
  const int fd = stdin_input ? STDIN_FILENO : ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return fmt::format("cannot open '{}': {}", path, std::strerror(errno));
  std::string error;
  std::vector<char> buf(std::size_t{1} << 20);
  for (;;) {
    const ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      error = fmt::format("cannot read '{}': {}", stdin_input ? "standard input" : path,
                          std::strerror(errno));
      break;
    }
    if (n == 0) break;
    chunk(std::string_view(buf.data(), static_cast<std::size_t>(n)));
  }
  if (!stdin_input) ::close(fd);
  return error;
}

void walk_paths(const std::vector<std::string>& paths,
                const std::function<void(const std::string&)>& problem,
                const std::function<void(const std::filesystem::path&)>& file) {
  namespace fs = std::filesystem;
  for (const std::string& arg : paths) {
    if (arg == "-") {
      file(fs::path(arg));
      continue;
    }
    std::error_code ec;
    const fs::path p(arg);
    const auto st = fs::status(p, ec);
    if (ec || !fs::exists(st)) {
      problem(fmt::format("cannot open '{}': {}", arg,
                          ec ? ec.message() : std::string("No such file or directory")));
      continue;
    }
    if (!fs::is_directory(st)) {
      file(p);
      continue;
    }
    std::vector<fs::path> files;
    fs::recursive_directory_iterator it(p, ec), end;
    if (ec) {
      problem(fmt::format("cannot read directory '{}': {}", arg, ec.message()));
      continue;
    }
    for (; it != end; it.increment(ec)) {
      if (ec) {
        problem(fmt::format("cannot read directory '{}': {}", it->path().string(), ec.message()));
        break;
      }
      std::error_code fe;
      if (it->is_directory(fe)) {
        if (::access(it->path().c_str(), R_OK | X_OK) != 0) {
          problem(fmt::format("cannot read directory '{}': {}", it->path().string(),
                              std::strerror(errno)));
          it.disable_recursion_pending();
        }
        continue;
      }
      if (it->is_regular_file(fe)) files.push_back(it->path());
    }
    std::sort(files.begin(), files.end());
    for (const auto& f : files) file(f);
  }
}

}  // namespace mproc::cli
