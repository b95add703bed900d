// `mproc run`'s command line and its jobs: the GNU-parallel-style options, the input
// sources (`:::`, `:::+`, `::::`, `-a`, stdin) and how they combine, and the replacement
// strings ({} {.} {/} {//} {/.} {#} {%} {##} {N} {N.} ...) that turn a command template
// and one job's arguments into an argv (or a /bin/sh line with --shell).
//
// Everything here is pure text work, done before the first job starts, except `render`,
// which the runner calls as each job starts because {%} is the job slot it gets.
#pragma once

#include <cstddef>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace mproc::cli::run_detail {

/// A usage or input error: one line on stderr, exit code 255 (GNU parallel's).
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// --halt WHEN,WHY=N[%]: when to stop running jobs early.
struct Halt {
  enum class When { never, soon, now } when = When::never;
  enum class Why { fail, success, done } why = Why::fail;
  double count = 0;  // jobs, or a percentage when `percent`
  bool percent = false;
};

/// How a job's stdout and stderr reach the runner's.
enum class OutputMode { group, line_buffer, ungroup };

enum class Progress { none, bar, eta, progress };

/// One input source: the words after `:::` / lines of a `::::` file, linked (`:::+`) to the
/// source before it or combined with the others (every combination).
struct Source {
  std::vector<std::string> values;
  bool linked = false;
};

struct Options {
  std::vector<std::string> command;  // the template, before the first source
  std::vector<Source> sources;       // empty: stdin
  std::vector<std::string> arg_files;  // -a FILE, in order: sources before the ::: ones
  std::string jobs = "100%";
  double timeout = 0;  // seconds; 0: none
  double delay = 0;    // seconds between job starts
  int retries = 0;
  std::string joblog;
  std::string trace;           // --trace FILE: a timeline of the jobs (see trace-view)
  bool joblog_append = false;  // --joblog +FILE
  std::string results;         // --results DIR
  bool shell = false;
  bool keep_order = false;
  bool dry_run = false;
  bool tag = false;
  bool null_sep = false;       // -0: input items end with NUL, not newline
  std::size_t max_args = 0;    // -N: records per job; 0: one
  enum class Multi { none, context, plain } multi = Multi::none;  // -X, -m
  std::optional<std::string> colsep;
  OutputMode output = OutputMode::group;
  Progress progress = Progress::none;
  Halt halt;
  bool help = false;
};

/// Parses `mproc run`'s arguments (everything after `run`) the way GNU parallel does:
/// options up to the first word that is not one (or `--`), then the command, then the
/// input sources. An option mproc does not know fails naming it. Reads `::::` and `-a`
/// files. Throws UsageError.
Options parse_options(const std::vector<std::string>& args);

/// The jobs' count for -j N, N%, +N, -N, 0 (as many as can run: `unlimited`).
unsigned parse_jobs(const std::string& s, unsigned cpus, unsigned unlimited);

/// One job before it runs: its input (one value per positional replacement string).
struct JobInput {
  std::size_t seq = 0;            // 1-based, {#}
  std::vector<std::string> args;  // {1} {2} ...; {} is all of them
};

/// Reads the sources (stdin when there are none), splits them with --colsep, combines
/// them and groups them by -N / -X / -m; `slots` is the number of jobs at a time (-X and
/// -m spread the arguments evenly over them). Throws UsageError.
std::vector<JobInput> make_inputs(Options& o, unsigned slots);

/// What a job runs: the argv for execvp and the command line as GNU parallel shows it
/// (--dry-run, the joblog, --tag-less summaries): the template's text verbatim and each
/// replaced value shell-quoted.
struct Rendered {
  std::vector<std::string> argv;
  std::string line;
};

/// Fills the template of `o` with `in`'s arguments for job slot `slot` out of `total`
/// jobs. Without --shell every template word becomes one argv word (or several, when {}
/// stands for several arguments); with --shell the words are joined with spaces and the
/// line goes to /bin/sh -c, every replaced value quoted so that it is never executed.
Rendered render(const Options& o, const JobInput& in, std::size_t slot, std::size_t total);

/// `s` quoted for /bin/sh the way GNU parallel quotes it ('...' unless it is made only
/// of letters, digits and _+-./).
std::string shell_quote(std::string_view s);

/// The --tag prefix of a job: its arguments joined with spaces.
std::string tag_of(const JobInput& in);

/// The --results directory of a job: DIR/1/VALUE1/2/VALUE2..., '/' in a value as "\_".
std::string results_dir(const std::string& base, const JobInput& in);

}  // namespace mproc::cli::run_detail
