// What the compute subcommands (wordcount, countlines, pi, dot, rangecount) share: the
// options that choose and size the pool (--backend, -j, --chunksize), how results are
// shown (--json, --progress, --quiet, --trace), the Pool built from them, the object
// that --json prints, and the mapping of errors to exit codes.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "text.hpp"
#include <mproc/pool.hpp>

namespace mproc::cli {

/// The options every compute subcommand takes.
struct ComputeOptions {
  std::string backend = "process";  ///< thread | process | mpi (mpi: not built)
  unsigned workers = 0;             ///< 0: cpu_count()
  std::size_t chunksize = 0;        ///< 0: adaptive
  bool json = false;                ///< one JSON object on stdout instead of text
  bool progress = false;            ///< progress bar on stderr
  bool quiet = false;               ///< no summary line on stderr
  std::string trace;                ///< Chrome trace-event file ("" = none)

  /// The worker count a pool built from these options has: `workers`, or cpu_count().
  unsigned resolved_workers() const;
  /// MapOptions carrying --chunksize and --progress (a bar labelled `label`, counting
  /// `unit`).
  MapOptions map_options(std::string label = "map", std::string unit = "items") const;
};

/// A validator for a decimal integer in [min, max] (digits only: no sign, no "0x", no
/// octal), for counts that CLI11's own conversion would take from "-1" as 2^64 - 1.
CLI::Validator integer_in(std::uint64_t min, std::uint64_t max);

/// A size in bytes as options take it: digits, then K, M or G (KiB, MiB, GiB) or nothing,
/// e.g. 4096, 50M, 1G. Throws CLI::ValidationError, naming `option`, unless it is one of
/// these and between 1 and `max` bytes.
std::uint64_t parse_size(std::string_view option, const std::string& text, std::uint64_t max);

/// Adds --backend, -j/--workers, --chunksize, --json, --progress, --quiet and --trace to
/// `cmd`, bound to `o` (which must outlive the parse).
void add_compute_options(CLI::App& cmd, ComputeOptions& o);

/// Refuses what the parser accepts but this build cannot do (--backend mpi): throws
/// CLI::ValidationError. Call first thing in a subcommand's callback.
void check_compute_options(const ComputeOptions& o);

/// PoolOptions from the options. Call check_compute_options() first.
PoolOptions pool_options(const ComputeOptions& o);

/// A Pool built from the options (not movable: `Pool pool = make_pool(o);`).
inline Pool make_pool(const ComputeOptions& o) { return Pool(pool_options(o)); }

/// Bad input found after parsing (a missing file, an empty input): exit code 2.
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Expands PATH arguments into files, in argument order: "-" (standard input) and a path
/// that is not a directory are passed to `file` as given; a directory's regular files are found recursively and
/// passed in sorted order. A missing path or an unreadable directory is reported to
/// `problem` (which throws, or warns and returns to skip it).
void walk_paths(const std::vector<std::string>& paths,
                const std::function<void(const std::string&)>& problem,
                const std::function<void(const std::filesystem::path&)>& file);

/// True when `path` must be read as a stream rather than mapped or sized: "-" (standard
/// input), and anything that is not a regular file (a FIFO, /dev/stdin on a pipe, a
/// process substitution), and a regular file whose st_size says 0 (as /proc files do).
bool is_stream(const std::string& path);

/// Reads `path` ("-": standard input) to its end with read(), handing each piece to
/// `chunk`: the one reader of every subcommand that takes paths, right for regular files
/// and streams alike (it never trusts st_size). Returns "" or the error, as one line
/// naming the path.
std::string read_input(const std::string& path, const std::function<void(std::string_view)>& chunk);

/// Runs a subcommand's body and stores its exit code in *exit_code. The body returns the
/// exit code. A CLI::Error propagates to main (which prints "mproc: ..." and exits 2);
/// UsageError and std::invalid_argument print "mproc <name>: ..." and give 2; a failed
/// task (any other exception) prints one line and gives 1. Never lets a stack dump out.
void run_command(std::string_view name, int* exit_code, const std::function<int()>& body);

/// Seconds since `start`, on the steady clock.
double seconds_since(std::chrono::steady_clock::time_point start);

/// One JSON object, keys in insertion order: an nlohmann::ordered_json.
class JsonObject {
 public:
  /// Adds the member `key`: a string, a number (NaN and infinities come out as null, JSON
  /// having neither) or a bool.
  template <class T>
  JsonObject& add(std::string_view key, const T& value) {
    json_[std::string(key)] = value;
    return *this;
  }
  /// Adds the member `key`: an array of the objects.
  JsonObject& add(std::string_view key, std::vector<JsonObject> objects);
  /// The pool settings every compute command reports: workers, backend, chunksize.
  JsonObject& add_pool(const ComputeOptions& o, unsigned workers);
  /// The object as one line of JSON text, as every command's --json prints it. Bytes that
  /// are not UTF-8 (a path, a file name, a word may hold any) come out as U+FFFD, so that
  /// the line is valid JSON whatever the input.
  std::string str() const;

 private:
  nlohmann::ordered_json json_ = nlohmann::ordered_json::object();
};

/// Writes `text` to stdout and flushes.
void write_stdout(std::string_view text);

/// Writes `text` to the file `path`, replacing it. Throws UsageError naming the path when
/// it cannot be written (and removes what was partly written).
void write_file(const std::string& path, std::string_view text);

}  // namespace mproc::cli
