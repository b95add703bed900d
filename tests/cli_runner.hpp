// Runs the mproc binary (MPROC_BINARY) as a real program for the command-line tests and
// captures its exit code, stdout and stderr.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace cli_test {

struct Result {
  int code;
  std::string out, err;
};

/// Runs `mproc args...` through the shell with each argument single-quoted (arguments
/// must not contain a single quote); 128 + N when a signal N ended it. With
/// `kill_after_seconds`, a watchdog (coreutils' timeout) kills it with SIGKILL if it
/// still runs then: code 137.
inline Result mproc(const std::vector<std::string>& args, int kill_after_seconds = 0) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("mproc-cli-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::string out = (dir / "out").string(), err = (dir / "err").string();
  std::string cmd = std::string("'") + MPROC_BINARY + "'";
  if (kill_after_seconds > 0)
    cmd = "timeout -s KILL " + std::to_string(kill_after_seconds) + " " + cmd;
  for (auto& a : args) cmd += " '" + a + "'";
  cmd += " >'" + out + "' 2>'" + err + "'";
  const int status = std::system(cmd.c_str());
  auto slurp = [](const std::string& p) {
    std::ifstream f(p);
    return std::string((std::istreambuf_iterator<char>(f)), {});
  };
  Result r{WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), slurp(out), slurp(err)};
  fs::remove_all(dir);
  return r;
}

inline std::size_t lines(const std::string& s) {
  return static_cast<std::size_t>(std::count(s.begin(), s.end(), '\n'));
}

}  // namespace cli_test
