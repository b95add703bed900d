// cpu_count(): affinity, cgroup v2 quotas and the environment override.
#include <mproc/cpu_count.hpp>

#include <gtest/gtest.h>

#include <sched.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <thread>

namespace {

namespace fs = std::filesystem;

struct EnvGuard {
  explicit EnvGuard(const char* value) {
    if (value)
      ::setenv("MPROC_CPU_COUNT", value, 1);
    else
      ::unsetenv("MPROC_CPU_COUNT");
  }
  ~EnvGuard() { ::unsetenv("MPROC_CPU_COUNT"); }
};

TEST(CpuCount, AtLeastOneAndAtMostTheHardware) {
  EnvGuard env(nullptr);
  const auto info = mproc::cpu_count_info();
  EXPECT_GE(mproc::cpu_count(), 1u);
  EXPECT_LE(mproc::cpu_count(), std::max(1u, std::thread::hardware_concurrency()));
  EXPECT_EQ(info.result, mproc::cpu_count());
  EXPECT_LE(info.result, info.affinity);
}

TEST(CpuCount, RestrictedAffinityMaskGivesOne) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(0, &one);
    if (::sched_setaffinity(0, sizeof one, &one) != 0) ::_exit(100);
    ::_exit(static_cast<int>(mproc::cpu_count()));
  }
  int ws = 0;
  ::waitpid(pid, &ws, 0);
  ASSERT_TRUE(WIFEXITED(ws));
  EXPECT_EQ(WEXITSTATUS(ws), 1);
}

TEST(CpuCount, EnvironmentOverride) {
  {
    EnvGuard env("1");
    EXPECT_EQ(mproc::cpu_count(), 1u);
    EXPECT_EQ(mproc::cpu_count_info().env_override, 1u);
  }
  {
    EnvGuard env("100000");  // capped by the real limits
    EXPECT_EQ(mproc::cpu_count(), std::min(mproc::cpu_count_info().affinity,
                                           mproc::cpu_count_info().hardware));
  }
  for (const char* bad : {"abc", "0", "-3", "", "2x"}) {
    EnvGuard env(bad);
    const auto info = mproc::cpu_count_info();
    EXPECT_FALSE(info.env_override.has_value()) << bad;
    EXPECT_FALSE(info.env_error.empty()) << bad;
    EXPECT_GE(info.result, 1u);
  }
}

class FakeCgroup : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("mproc-cgroup-" + std::to_string(::getpid()));
    fs::create_directories(root_ / "a" / "b");
  }
  void TearDown() override { fs::remove_all(root_); }
  void write(const fs::path& rel, const std::string& text) {
    std::ofstream(root_ / rel / "cpu.max") << text;
  }
  mproc::detail::CgroupLimit limit(const std::string& proc) {
    return mproc::detail::cgroup_cpu_limit(proc, root_.string());
  }
  fs::path root_;
};

TEST_F(FakeCgroup, MaxMeansNoLimit) {
  write("a/b", "max 100000\n");
  EXPECT_FALSE(limit("0::/a/b\n").quota.has_value());
}

TEST_F(FakeCgroup, QuotaOverPeriod) {
  write("a/b", "150000 100000\n");
  auto l = limit("0::/a/b\n");
  ASSERT_TRUE(l.quota.has_value());
  EXPECT_DOUBLE_EQ(*l.quota, 1.5);  // cpu_count rounds this up to 2
}

TEST_F(FakeCgroup, TighterParentWins) {
  write("a/b", "400000 100000\n");
  write("a", "100000 100000\n");
  auto l = limit("0::/a/b\n");
  ASSERT_TRUE(l.quota.has_value());
  EXPECT_DOUBLE_EQ(*l.quota, 1.0);
  EXPECT_EQ(fs::path(l.path), root_ / "a");
}

TEST_F(FakeCgroup, MissingFilesAndV1LinesMeanNoLimit) {
  EXPECT_FALSE(limit("0::/a/b\n").quota.has_value());
  EXPECT_FALSE(limit("4:cpu,cpuacct:/x\n").quota.has_value());
  EXPECT_FALSE(limit("").quota.has_value());
  write("a/b", "garbage\n");
  EXPECT_FALSE(limit("0::/a/b\n").quota.has_value());
}

}  // namespace
