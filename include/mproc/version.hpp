// mproc's version. CMake reads it from here; nothing else defines it.
#pragma once

#define MPROC_VERSION_MAJOR 0
#define MPROC_VERSION_MINOR 1
#define MPROC_VERSION_PATCH 0

namespace mproc {

inline constexpr int version_major = MPROC_VERSION_MAJOR;
inline constexpr int version_minor = MPROC_VERSION_MINOR;
inline constexpr int version_patch = MPROC_VERSION_PATCH;

#define MPROC_DETAIL_STR2(x) #x
#define MPROC_DETAIL_STR(x) MPROC_DETAIL_STR2(x)

/// The version as "major.minor.patch".
inline constexpr const char* version_string = MPROC_DETAIL_STR(MPROC_VERSION_MAJOR) "." MPROC_DETAIL_STR(
    MPROC_VERSION_MINOR) "." MPROC_DETAIL_STR(MPROC_VERSION_PATCH);

}  // namespace mproc
