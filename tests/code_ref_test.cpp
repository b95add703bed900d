// detail::code_ref / code_address: addresses as (module key, offset) that survive a trip
// to another process whose executable and libraries were loaded at other addresses.
#include "pool/code_ref.hpp"

#include <mproc/cpu_count.hpp>
#include <mproc/error.hpp>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <dlfcn.h>
#include <link.h>
#include <sys/auxv.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace {

using mproc::detail::code_address;
using mproc::detail::code_ref;
using mproc::detail::CodeRef;
using mproc::detail::executable_identity;
using mproc::detail::executable_key;
using ::testing::HasSubstr;

constexpr const char* kRefsVariable = "MPROC_CODE_REF_TEST_REFS";

// The function and the string that the child process finds through the refs alone.
[[gnu::noinline]] int magic(int x) { return x * 3 + 1000; }
const char kGreeting[] = "static data found again";

[[gnu::noinline]] int other_function(int x) { return x - 7; }
int zero_initialised[64];  // in .bss: inside p_memsz but not p_filesz

template <class T>
struct Registry {
  static inline T value{};
};

std::uintptr_t addr(const void* p) { return reinterpret_cast<std::uintptr_t>(p); }

template <class F>
const void* fn(F* f) {
  return reinterpret_cast<const void*>(f);
}

std::string hex(std::uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016" PRIx64, v);
  return buf;
}

/// The dynamic linker's own view of the object containing `p` (dladdr1), as an oracle
/// independent of code_ref: its link_map, whose l_addr is the load base.
const link_map* linkmap_of(const void* p) {
  Dl_info info{};
  link_map* lm = nullptr;
  if (::dladdr1(p, &info, reinterpret_cast<void**>(&lm), RTLD_DL_LINKMAP) == 0) return nullptr;
  return lm;
}

/// The end of the executable's highest PT_LOAD segment, relative to its load base, from
/// its program headers (dl_iterate_phdr lists the executable first).
std::uint64_t executable_end_offset() {
  std::uint64_t end = 0;
  ::dl_iterate_phdr(
      [](dl_phdr_info* info, std::size_t, void* data) -> int {
        auto& e = *static_cast<std::uint64_t*>(data);
        for (int i = 0; i < info->dlpi_phnum; ++i) {
          const auto& ph = info->dlpi_phdr[i];
          if (ph.p_type == PT_LOAD) e = std::max<std::uint64_t>(e, ph.p_vaddr + ph.p_memsz);
        }
        return 1;
      },
      &end);
  return end;
}

std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

/// Runs `command` through the shell and returns its stdout.
std::string run(const std::string& command) {
  std::string out;
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) return out;
  char buf[4096];
  for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, pipe)) > 0;) out.append(buf, n);
  ::pclose(pipe);
  return out;
}

TEST(CodeRef, RoundTripsCodeAndDataOfEveryKindOfModule) {
  struct Case {
    const char* what;
    const void* p;
  };
  const Case cases[] = {
      {"function of the executable", fn(&magic)},
      {"const data of the executable", kGreeting},
      {".bss data of the executable", &zero_initialised[63]},
      {"static member of a class template", &Registry<int>::value},
      {"function of libmproc", fn(&mproc::cpu_count)},
      {"function of libc", fn(&::getpid)},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    const CodeRef ref = code_ref(c.p);
    EXPECT_EQ(code_address(ref), c.p);
    // The offset is the one the dynamic linker would compute.
    const link_map* lm = linkmap_of(c.p);
    ASSERT_NE(lm, nullptr);
    EXPECT_EQ(ref.offset, addr(c.p) - lm->l_addr);
    EXPECT_NE(ref.module, 0u);
  }

  const std::uint64_t exe = executable_key();
  EXPECT_EQ(code_ref(fn(&magic)).module, exe);
  EXPECT_EQ(code_ref(kGreeting).module, exe);
  EXPECT_EQ(code_ref(&zero_initialised[0]).module, exe);
  EXPECT_EQ(code_ref(&Registry<int>::value).module, exe);
  EXPECT_EQ(code_ref(&Registry<double>::value).module, exe);
#ifndef MPROC_STATIC
  const std::uint64_t lib = code_ref(fn(&mproc::cpu_count)).module;
  EXPECT_NE(lib, exe);
  // Everything in one module shares its key.
  EXPECT_EQ(code_ref(fn(&mproc::cpu_count_info)).module, lib);
#endif
  // Whatever object the linker resolved getpid to, two addresses get the same key
  // exactly when the dynamic linker places them in the same object.
  const bool getpid_in_exe = linkmap_of(fn(&::getpid)) == linkmap_of(fn(&magic));
  EXPECT_EQ(code_ref(fn(&::getpid)).module == exe, getpid_in_exe);
}

TEST(CodeRef, RoundTripsTheVdso) {
  const auto vdso = reinterpret_cast<const void*>(::getauxval(AT_SYSINFO_EHDR));
  if (vdso == nullptr) GTEST_SKIP() << "no vDSO in this process";
  const CodeRef ref = code_ref(vdso);
  EXPECT_EQ(code_address(ref), vdso);
  EXPECT_NE(ref.module, executable_key());
}

TEST(CodeRef, OffsetIsRelativeToTheModule) {
  const CodeRef a = code_ref(fn(&magic));
  const CodeRef b = code_ref(fn(&other_function));
  EXPECT_EQ(a.module, b.module);
  EXPECT_EQ(a.offset - b.offset, addr(fn(&magic)) - addr(fn(&other_function)));
  const CodeRef first = code_ref(&zero_initialised[0]);
  const CodeRef last = code_ref(&zero_initialised[63]);
  EXPECT_EQ(last.offset - first.offset, 63 * sizeof(int));
  // Relative, not absolute: a position-independent executable's load base is not 0.
  const link_map* lm = linkmap_of(fn(&magic));
  ASSERT_NE(lm, nullptr);
  if (lm->l_addr != 0) {
    EXPECT_NE(a.offset, addr(fn(&magic)));
  }
}

// Run only as the child of AcrossProcessesWithDifferentLoadAddresses: resolves the refs
// that the parent put in the environment and reports what it found on stdout.
TEST(CodeRefChild, ResolvesRefsFromTheEnvironment) {
  const char* refs = std::getenv(kRefsVariable);
  if (refs == nullptr) GTEST_SKIP() << "runs only as a child of the cross-process test";
  CodeRef f, s;
  ASSERT_EQ(std::sscanf(refs, "%" SCNx64 ":%" SCNx64 " %" SCNx64 ":%" SCNx64, &f.module,
                        &f.offset, &s.module, &s.offset),
            4)
      << refs;
  const auto function = reinterpret_cast<int (*)(int)>(code_address(f));
  const auto text = static_cast<const char*>(code_address(s));
  std::printf("RESULT %d %s %" PRIxPTR " %" PRIxPTR " %s\n", function(21),
              hex(executable_key()).c_str(), addr(fn(function)), addr(text), text);
  std::fflush(stdout);
}

TEST(CodeRef, AcrossProcessesWithDifferentLoadAddresses) {
  const std::string exe = std::filesystem::canonical("/proc/self/exe").string();
  const CodeRef f = code_ref(fn(&magic));
  const CodeRef s = code_ref(kGreeting);
  const std::string refs =
      hex(f.module) + ":" + hex(f.offset) + " " + hex(s.module) + ":" + hex(s.offset);
  // Sharding and XML output settings of this run must not reach the child.
  const std::string command = "env -u GTEST_TOTAL_SHARDS -u GTEST_SHARD_INDEX -u GTEST_OUTPUT " +
                              std::string(kRefsVariable) + "=" + shell_quote(refs) + " " +
                              shell_quote(exe) +
                              " --gtest_filter=CodeRefChild.ResolvesRefsFromTheEnvironment";

  bool addresses_differed = false;
  for (int run_index = 0; run_index < 4 && !addresses_differed; ++run_index) {
    SCOPED_TRACE(run_index);
    const std::string out = run(command);
    const auto at = out.find("RESULT ");
    ASSERT_NE(at, std::string::npos) << out;
    int result = 0;
    char key[17] = {};
    std::uintptr_t child_function = 0, child_text = 0;
    int consumed = 0;
    ASSERT_EQ(std::sscanf(out.c_str() + at, "RESULT %d %16s %" SCNxPTR " %" SCNxPTR " %n",
                          &result, key, &child_function, &child_text, &consumed),
              4)
        << out;
    const std::string rest = out.substr(at + static_cast<std::size_t>(consumed));
    EXPECT_EQ(result, magic(21));
    EXPECT_EQ(rest.substr(0, rest.find('\n')), kGreeting);
    // The start-up check of a multi-process job: the same executable gives the same key.
    EXPECT_EQ(std::string(key), hex(executable_key()));
    // ASLR (randomize_va_space = 2) loads each process's executable at its own base. An
    // address that differs from ours while the call and the string above came out right
    // shows that the ref, not the raw address, carried the meaning. With ASLR off
    // (setarch -R) the addresses coincide in every run; that is not a failure.
    if (child_function != addr(fn(&magic)) && child_text != addr(kGreeting))
      addresses_differed = true;
  }
  if (!addresses_differed)
    std::printf("note: the child loaded the executable where the parent did (ASLR off?)\n");
}

TEST(CodeRef, AddressesOutsideEveryModuleAreRejected) {
  const auto heap = std::make_unique<int>(42);
  EXPECT_THROW(code_ref(heap.get()), std::invalid_argument);
  const std::vector<char> big(8 << 20);  // large enough for malloc to mmap it
  EXPECT_THROW(code_ref(big.data() + 4096), std::invalid_argument);
  int on_stack = 0;
  EXPECT_THROW(code_ref(&on_stack), std::invalid_argument);
  EXPECT_THROW(code_ref(nullptr), std::invalid_argument);
}

TEST(CodeRef, UnknownKeyOrOffsetIsASerializationError) {
  const std::uint64_t unknown = 0x0123456789abcdefull;
  try {
    code_address(CodeRef{unknown, 0x1000});
    ADD_FAILURE() << "no exception for an unknown module key";
  } catch (const mproc::SerializationError& e) {
    EXPECT_THAT(e.what(), HasSubstr("0123456789abcdef"));
  }
  EXPECT_THROW(code_address(CodeRef{}), mproc::SerializationError);

  const std::uint64_t exe = executable_key();
  for (const std::uint64_t offset : {std::uint64_t{1} << 40, ~std::uint64_t{0}}) {
    try {
      code_address(CodeRef{exe, offset});
      ADD_FAILURE() << "no exception for offset " << hex(offset);
    } catch (const mproc::SerializationError& e) {
      EXPECT_THAT(e.what(), HasSubstr(hex(exe)));
    }
  }
  // The boundary: the last byte of the executable's highest segment resolves, the byte
  // after it does not.
  const std::uint64_t end = executable_end_offset();
  ASSERT_GT(end, 0u);
  EXPECT_EQ(addr(code_address(CodeRef{exe, end - 1})), linkmap_of(fn(&magic))->l_addr + end - 1);
  EXPECT_THROW(code_address(CodeRef{exe, end}), mproc::SerializationError);
}

TEST(CodeRef, ExecutableIdentityNamesPathAndBuildId) {
  const std::string identity = executable_identity();
  const std::string exe = std::filesystem::canonical("/proc/self/exe").string();
  EXPECT_THAT(identity, HasSubstr(exe + " ("));

  if (std::system("command -v readelf >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "readelf not installed: the build-id is not checked";
  const std::string notes = run("readelf -n " + shell_quote(exe) + " 2>/dev/null");
  const auto at = notes.find("Build ID: ");
  if (at == std::string::npos) {
    EXPECT_THAT(identity, HasSubstr("(no build-id; key " + hex(executable_key()) + ")"));
    return;
  }
  const std::string build_id = notes.substr(at + 10, notes.find_first_of(" \n", at + 10) - at - 10);
  ASSERT_GE(build_id.size(), 8u) << notes;
  EXPECT_THAT(identity, HasSubstr("(build-id " + build_id + ")"));
}

TEST(CodeRef, FindsLibrariesOpenedLaterAndForgetsClosedOnes) {
  const CodeRef before = code_ref(fn(&magic));  // the module table is now cached
  const char* candidates[] = {"libz.so.1", "libutil.so.1", "librt.so.1", "libanl.so.1"};
  void* handle = nullptr;
  const char* name = nullptr;
  for (const char* c : candidates) {
    if (void* loaded = ::dlopen(c, RTLD_NOW | RTLD_NOLOAD)) {
      ::dlclose(loaded);
      continue;
    }
    if ((handle = ::dlopen(c, RTLD_NOW | RTLD_LOCAL)) != nullptr) {
      name = c;
      break;
    }
  }
  if (handle == nullptr) GTEST_SKIP() << "no library to dlopen that is not loaded already";
  SCOPED_TRACE(name);
  link_map* lm = nullptr;
  ASSERT_EQ(::dlinfo(handle, RTLD_DI_LINKMAP, &lm), 0);
  // Its dynamic section lies in a loaded segment of the new library.
  const void* inside = lm->l_ld;
  const CodeRef ref = code_ref(inside);
  EXPECT_NE(ref.module, before.module);
  EXPECT_EQ(ref.offset, addr(inside) - lm->l_addr);
  EXPECT_EQ(code_address(ref), inside);

  ::dlclose(handle);
  if (void* still = ::dlopen(name, RTLD_NOW | RTLD_NOLOAD)) {
    ::dlclose(still);
    return;  // not unloaded (marked nodelete): nothing more to check
  }
  EXPECT_THROW(code_address(ref), mproc::SerializationError);
  EXPECT_EQ(code_address(before), fn(&magic));
}

TEST(CodeRef, ConcurrentRoundTrips) {
  const void* pointers[] = {fn(&magic), kGreeting, &Registry<int>::value,
                            fn(&mproc::cpu_count), fn(&::getpid)};
  std::vector<CodeRef> expected;
  for (const void* p : pointers) expected.push_back(code_ref(p));
  std::atomic<int> wrong{0};
  std::atomic<int> done{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      try {
        for (int i = 0; i < 10000; ++i) {
          const std::size_t k = static_cast<std::size_t>(i + t) % std::size(pointers);
          const CodeRef ref = code_ref(pointers[k]);
          if (!(ref == expected[k]) || code_address(ref) != pointers[k]) ++wrong;
          ++done;
        }
      } catch (...) {
        ++wrong;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_EQ(done.load(), 40000);
}

}  // namespace
