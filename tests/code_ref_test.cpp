// Tests of detail::code_ref (placeholder).
#include <gtest/gtest.h>
TEST(CodeRef, Placeholder) { SUCCEED(); }
