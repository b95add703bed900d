// The mproc command-line tool. Exit codes: 0 success, 1 some tasks failed,
// 2 usage or input error (one line on stderr, never a stack dump); `mproc run` exits with
// the number of failed jobs, capped at 101.
#include <cstdio>
#include <exception>

#include <CLI/CLI.hpp>
#include <fmt/core.h>

#include "commands.hpp"
#include <mproc/runtime.hpp>
#include <mproc/version.hpp>

int main(int argc, char** argv) {
  // Under mpirun, ranks other than 0 serve the pool's tasks inside the Runtime and never
  // get here; rank 0 parses the command line and runs the subcommand.
  mproc::Runtime runtime(argc, argv);
  CLI::App app{"mproc: Python's multiprocessing, done properly in C++20"};
  app.set_version_flag("--version", mproc::version_string);
  app.require_subcommand(1);
  app.footer(
      "Exit codes: 0 success, 1 some tasks failed, 2 usage or input error "
      "(`mproc run`: the number of failed jobs, at most 101).");

  int exit_code = mproc::cli::ok;
  mproc::cli::add_info(app, &exit_code);
  mproc::cli::add_wordcount(app, &exit_code);
  mproc::cli::add_countlines(app, &exit_code);
  mproc::cli::add_pi(app, &exit_code);
  mproc::cli::add_dot(app, &exit_code);
  mproc::cli::add_rangecount(app, &exit_code);
  mproc::cli::add_run(app, &exit_code);
  mproc::cli::add_trace_view(app, &exit_code);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    fmt::print(stderr, "mproc: {}\n", e.what());
    return mproc::cli::usage_error;
  } catch (const std::exception& e) {
    fmt::print(stderr, "mproc: {}\n", e.what());
    return mproc::cli::usage_error;
  }
  return exit_code;
}
