// cpu_count(): the affinity mask, cgroup v2 quotas (on fake trees) and MPROC_CPU_COUNT.
#include <mproc/cpu_count.hpp>

#include <gtest/gtest.h>

#include <sched.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <climits>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>

namespace {

namespace fs = std::filesystem;

/// Sets (or unsets, with nullptr) MPROC_CPU_COUNT for one scope, then restores it.
class EnvGuard {
 public:
  explicit EnvGuard(const char* value) {
    if (const char* old = std::getenv("MPROC_CPU_COUNT")) old_ = old;
    if (value)
      ::setenv("MPROC_CPU_COUNT", value, 1);
    else
      ::unsetenv("MPROC_CPU_COUNT");
  }
  EnvGuard(const EnvGuard&) = delete;
  EnvGuard& operator=(const EnvGuard&) = delete;
  ~EnvGuard() {
    if (old_)
      ::setenv("MPROC_CPU_COUNT", old_->c_str(), 1);
    else
      ::unsetenv("MPROC_CPU_COUNT");
  }

 private:
  std::optional<std::string> old_;
};

TEST(CpuCount, AtLeastOneAndWithinTheMachine) {
  EnvGuard env(nullptr);
  const auto info = mproc::cpu_count_info();
  EXPECT_GE(info.result, 1u);
  EXPECT_EQ(info.result, mproc::cpu_count());
  EXPECT_LE(info.result, info.hardware);
  EXPECT_LE(info.result, info.affinity);
  EXPECT_EQ(info.hardware, static_cast<unsigned>(::sysconf(_SC_NPROCESSORS_ONLN)));
  cpu_set_t set;
  ASSERT_EQ(::sched_getaffinity(0, sizeof set, &set), 0);
  EXPECT_EQ(info.affinity, static_cast<unsigned>(CPU_COUNT(&set)));
  EXPECT_FALSE(info.env_override.has_value());
  EXPECT_TRUE(info.env_error.empty());
}

TEST(CpuCount, AChildRestrictedToOneCpuCountsOne) {
  cpu_set_t mine;
  ASSERT_EQ(::sched_getaffinity(0, sizeof mine, &mine), 0);
  int first = 0;
  while (!CPU_ISSET(first, &mine)) ++first;
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::unsetenv("MPROC_CPU_COUNT");
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(first, &one);
    if (::sched_setaffinity(0, sizeof one, &one) != 0) ::_exit(100);
    const auto info = mproc::cpu_count_info();
    ::_exit(info.affinity == 1 && mproc::cpu_count() == 1 ? 0 : 50 + static_cast<int>(info.result));
  }
  int ws = 0;
  ASSERT_EQ(::waitpid(pid, &ws, 0), pid);
  ASSERT_TRUE(WIFEXITED(ws));
  EXPECT_EQ(WEXITSTATUS(ws), 0);
}

TEST(CpuCount, EnvironmentOneGivesOne) {
  EnvGuard env("1");
  EXPECT_EQ(mproc::cpu_count(), 1u);
  const auto info = mproc::cpu_count_info();
  EXPECT_EQ(info.env_override, 1u);
  EXPECT_TRUE(info.env_error.empty());
}

TEST(CpuCount, AHugeEnvironmentValueIsCappedByTheOtherLimits) {
  unsigned unlimited = 0;
  {
    EnvGuard env(nullptr);
    unlimited = mproc::cpu_count();
  }
  for (const char* huge : {"100000", "99999999999999999999999"}) {
    EnvGuard env(huge);
    const auto info = mproc::cpu_count_info();
    ASSERT_TRUE(info.env_override.has_value()) << huge;
    EXPECT_GE(*info.env_override, 100000u);
    EXPECT_EQ(info.result, unlimited) << huge;
  }
}

TEST(CpuCount, InvalidEnvironmentValuesAreIgnoredAndExplained) {
  unsigned unlimited = 0;
  {
    EnvGuard env(nullptr);
    unlimited = mproc::cpu_count();
  }
  for (const char* bad : {"abc", "0", "-3", "", "2x", "+2", " 2", "1.5", "00"}) {
    EnvGuard env(bad);
    const auto info = mproc::cpu_count_info();
    EXPECT_FALSE(info.env_override.has_value()) << '"' << bad << '"';
    EXPECT_NE(info.env_error.find("not a positive integer"), std::string::npos) << bad;
    EXPECT_EQ(info.result, unlimited) << bad;
    EXPECT_EQ(mproc::cpu_count(), unlimited) << bad;
  }
}

TEST(CpuCount, TheFormula) {
  using mproc::detail::combine_cpu_count;
  EXPECT_EQ(combine_cpu_count(8, 8, std::nullopt, std::nullopt), 8u);
  EXPECT_EQ(combine_cpu_count(8, 3, std::nullopt, std::nullopt), 3u);
  EXPECT_EQ(combine_cpu_count(8, 8, 1.5, std::nullopt), 2u);  // a quota rounds up
  EXPECT_EQ(combine_cpu_count(8, 8, 2.0, std::nullopt), 2u);
  EXPECT_EQ(combine_cpu_count(8, 8, 0.2, std::nullopt), 1u);  // never below 1
  EXPECT_EQ(combine_cpu_count(8, 8, 64.0, std::nullopt), 8u);
  EXPECT_EQ(combine_cpu_count(8, 8, std::nullopt, 3u), 3u);
  EXPECT_EQ(combine_cpu_count(8, 8, 1.5, 100000u), 2u);
  EXPECT_EQ(combine_cpu_count(0, 0, std::nullopt, std::nullopt), 1u);
}

class FakeCgroup : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/mproc-cgroup-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    fs::create_directories(root_ / "a" / "b");
  }
  void TearDown() override { fs::remove_all(root_); }
  void write(const fs::path& rel, const std::string& text) {
    std::ofstream(root_ / rel / "cpu.max") << text;
  }
  mproc::detail::CgroupCpuLimit limit(const std::string& proc_self_cgroup) {
    return mproc::detail::cgroup_cpu_limit(proc_self_cgroup, root_);
  }
  fs::path root_;
};

TEST_F(FakeCgroup, MaxMeansNoLimit) {
  write("a/b", "max 100000\n");
  write("a", "max 100000\n");
  const auto l = limit("0::/a/b\n");
  EXPECT_FALSE(l.quota.has_value());
  EXPECT_EQ(fs::path(l.path), root_ / "a" / "b");  // our cgroup, for `mproc info`
}

TEST_F(FakeCgroup, QuotaOverPeriod) {
  write("a/b", "150000 100000\n");
  const auto l = limit("0::/a/b\n");
  ASSERT_TRUE(l.quota.has_value());
  EXPECT_DOUBLE_EQ(*l.quota, 1.5);
  EXPECT_EQ(mproc::detail::combine_cpu_count(64, 64, l.quota, std::nullopt), 2u);
}

TEST_F(FakeCgroup, ASmallerParentLimitWins) {
  write("a/b", "400000 100000\n");
  write("a", "100000 100000\n");
  const auto l = limit("0::/a/b\n");
  ASSERT_TRUE(l.quota.has_value());
  EXPECT_DOUBLE_EQ(*l.quota, 1.0);
  EXPECT_EQ(fs::path(l.path), root_ / "a");
}

TEST_F(FakeCgroup, ASmallerChildLimitWins) {
  write("a/b", "50000 100000\n");
  write("a", "300000 100000\n");
  write(".", "800000 100000\n");
  const auto l = limit("0::/a/b\n");
  ASSERT_TRUE(l.quota.has_value());
  EXPECT_DOUBLE_EQ(*l.quota, 0.5);
  EXPECT_EQ(fs::path(l.path), root_ / "a" / "b");
}

TEST_F(FakeCgroup, MissingOrMalformedFilesMeanNoLimit) {
  EXPECT_FALSE(limit("0::/a/b\n").quota.has_value());
  EXPECT_FALSE(limit("0::/does/not/exist\n").quota.has_value());
  write("a/b", "garbage\n");
  EXPECT_FALSE(limit("0::/a/b\n").quota.has_value());
  write("a/b", "0 100000\n");
  EXPECT_FALSE(limit("0::/a/b\n").quota.has_value());
}

TEST_F(FakeCgroup, OnlyTheV2LineCounts) {
  write("a", "200000 100000\n");
  // Hybrid systems list v1 hierarchies too; their paths name other trees.
  const auto l = limit("12:cpu,cpuacct:/x\n4:memory:/y\n0::/a/b\n");
  ASSERT_TRUE(l.quota.has_value());
  EXPECT_DOUBLE_EQ(*l.quota, 2.0);
  EXPECT_FALSE(limit("4:cpu,cpuacct:/a\n").quota.has_value());
  EXPECT_TRUE(limit("4:cpu,cpuacct:/a\n").path.empty());
  EXPECT_FALSE(limit("").quota.has_value());
}

TEST_F(FakeCgroup, PathsThatLeaveTheRootStopAtTheRoot) {
  write(".", "300000 100000\n");
  write("a", "100000 100000\n");
  const auto l = limit("0::/../../a\n");
  ASSERT_TRUE(l.quota.has_value());
  EXPECT_DOUBLE_EQ(*l.quota, 3.0);  // only the root's file: /a here is not our /a
  const auto r = limit("0::/\n");
  ASSERT_TRUE(r.quota.has_value());
  EXPECT_DOUBLE_EQ(*r.quota, 3.0);
}

}  // namespace
