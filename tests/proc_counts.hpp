// What this process holds, counted from /proc: for the tests that check nothing leaks.
#pragma once

#include <dirent.h>
#include <sys/types.h>

#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>
#include <vector>

namespace proc_counts {

/// Entries of a directory, without "." and "..".
inline int count_dir(const char* path) {
  int n = 0;
  if (DIR* d = ::opendir(path)) {
    while (dirent* e = ::readdir(d))
      if (e->d_name[0] != '.') ++n;
    ::closedir(d);
  }
  return n;
}

/// Threads of this process. ThreadSanitizer starts a background thread of its own at the
/// first thread the program creates; one thread started and joined first makes it exist
/// before anything is counted, so that counts before and after compare.
inline int threads() {
#if defined(__SANITIZE_THREAD__)
  static const bool sanitizer_thread_started = [] {
    std::thread([] {}).join();
    return true;
  }();
  (void)sanitizer_thread_started;
#endif
  return count_dir("/proc/self/task");
}

/// Entries of /dev/shm that mproc could have made (named mproc...). Not the whole
/// directory: the MPI tests that run beside a test make and remove Open MPI's own.
inline int mproc_shm_names() {
  int n = 0;
  if (DIR* d = ::opendir("/dev/shm")) {
    while (dirent* e = ::readdir(d))
      if (std::string(e->d_name).rfind("mproc", 0) == 0) ++n;
    ::closedir(d);
  }
  return n;
}

/// Open file descriptors, not counting the one count_dir itself holds.
inline int open_fds() { return count_dir("/proc/self/fd") - 1; }

/// Mappings of process `pid` ("self": this one) whose line in its maps file holds `name`.
inline int mappings_named(const std::string& pid, const std::string& name) {
  std::ifstream maps("/proc/" + pid + "/maps");
  int n = 0;
  for (std::string line; std::getline(maps, line);)
    if (line.find(name) != std::string::npos) ++n;
  return n;
}

/// mproc's shared memory mappings (memfds named mproc:...).
inline int mproc_mappings() { return mappings_named("self", "memfd:mproc:"); }

/// Processes whose parent is `parent`, zombies included (an unreaped child is a leak too).
inline std::vector<pid_t> children_of(pid_t parent) {
  std::vector<pid_t> out;
  if (DIR* d = ::opendir("/proc")) {
    while (dirent* e = ::readdir(d)) {
      const std::string name = e->d_name;
      if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
      std::ifstream f("/proc/" + name + "/stat");
      const std::string stat((std::istreambuf_iterator<char>(f)), {});
      const auto close = stat.rfind(')');
      if (close == std::string::npos) continue;
      char state = 0;
      int ppid = 0;
      if (std::sscanf(stat.c_str() + close + 2, "%c %d", &state, &ppid) == 2 && ppid == parent)
        out.push_back(std::stoi(name));
    }
    ::closedir(d);
  }
  return out;
}

}  // namespace proc_counts
