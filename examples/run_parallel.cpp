// The tutorial's exercise "run three scripts in parallel": each pool task runs one shell
// command (here each "script" sleeps 0.3 s and prints a line) and returns what it printed,
// so the outputs come back in input order although the scripts run at the same time.
// Mirrors
//   def run_process(script): os.system('python {}'.format(script))
//   with Pool(3) as pool: pool.map(run_process, ('script1.py', 'script2.py', 'script3.py'))
#include <chrono>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <vector>
#include <mproc/mproc.hpp>

std::string run_script(int n) {
  const std::string command = "/bin/sh -c 'sleep 0.3; echo \"script " + std::to_string(n) +
                              " says $((" + std::to_string(n) + " * 111))\"'";
  std::string output;
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) throw std::runtime_error("popen failed");
  char buffer[256];
  while (std::fgets(buffer, sizeof buffer, pipe) != nullptr) output += buffer;
  const int status = pclose(pipe);
  if (!output.empty() && output.back() == '\n') output.pop_back();
  return output + " (exit status " + std::to_string(status) + ")";
}

int main() {
  mproc::Pool pool(3);
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::string> outputs =
      pool.map(run_script, std::vector<int>{1, 2, 3}, {.chunksize = 1});
  const std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - start;
  for (const std::string& out : outputs) std::printf("%s\n", out.c_str());
  std::printf("three 0.3 s scripts took %.2f s\n", elapsed.count());
}
