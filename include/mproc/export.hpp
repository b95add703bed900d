// MPROC_API marks what libmproc exports. The library is built with hidden visibility,
// so only marked functions and classes (exceptions, whose type_info must be unique
// across shared objects for `catch` to match) are visible to users.
#pragma once

#if defined(MPROC_STATIC)
#  define MPROC_API
#elif defined(__GNUC__) || defined(__clang__)
#  define MPROC_API __attribute__((visibility("default")))
#else
#  define MPROC_API
#endif
