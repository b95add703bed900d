// Tests of `mproc trace-view` (placeholder).
#include <gtest/gtest.h>
TEST(TraceView, Placeholder) { SUCCEED(); }
