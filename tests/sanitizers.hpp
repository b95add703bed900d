// How a deliberate segfault ends under the sanitizers the build may use
// (MPROC_SANITIZE=address,undefined or thread). AddressSanitizer's runtime catches SIGSEGV
// (and UndefinedBehaviorSanitizer a store through null), prints its report and exits with
// code 1, so the process is not killed by the signal; the crash tests expect that then.
// ThreadSanitizer runs the tests with handle_segv=0 (MPROC_TEST_ENV in CMakeLists.txt):
// its report takes longer than the tests' task timeouts, and the signal kills as it does
// without sanitizers.
#pragma once

#include <csignal>

#if defined(__SANITIZE_ADDRESS__)
inline constexpr bool kSanitizerCatchesSegv = true;
#else
inline constexpr bool kSanitizerCatchesSegv = false;
#endif

/// Built with a sanitizer: its shadow memory and allocator add tens of MB to every process,
/// so absolute memory bounds do not apply (relative ones do).
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
inline constexpr bool kSanitized = true;
#else
inline constexpr bool kSanitized = false;
#endif

/// The signal and the exit code of a process that segfaulted.
inline constexpr int kSegvSignal = kSanitizerCatchesSegv ? 0 : SIGSEGV;
inline constexpr int kSegvExitCode = kSanitizerCatchesSegv ? 1 : 0;
