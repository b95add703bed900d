// How a deliberate segfault ends under the sanitizers the build may use
// (MPROC_SANITIZE=address,undefined or thread): their runtime catches SIGSEGV (and
// UndefinedBehaviorSanitizer a store through null), prints its report and exits with its
// exit code (1 for AddressSanitizer, 66 for ThreadSanitizer), so the process is not
// killed by the signal. The crash tests expect that then.
#pragma once

#include <csignal>

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
inline constexpr bool kSanitizerCatchesSegv = true;
#else
inline constexpr bool kSanitizerCatchesSegv = false;
#endif

/// Built with a sanitizer: its shadow memory and allocator add tens of MB to every process,
/// so absolute memory bounds do not apply (relative ones do).
inline constexpr bool kSanitized = kSanitizerCatchesSegv;

/// The signal and the exit code of a process that segfaulted.
inline constexpr int kSegvSignal = kSanitizerCatchesSegv ? 0 : SIGSEGV;
#if defined(__SANITIZE_THREAD__)
inline constexpr int kSegvExitCode = 66;
#else
inline constexpr int kSegvExitCode = kSanitizerCatchesSegv ? 1 : 0;
#endif
