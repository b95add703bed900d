// What the tool's HTML pages (trace-view's timeline, scaling's charts) share.
#pragma once

#include <string>
#include <string_view>

namespace mproc::cli {

/// `s` with the five characters that HTML gives a meaning (& < > " ') as entities, so
/// that any text, a command line or a file name, is shown as it is, in an element or an
/// attribute.
inline std::string html_escape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (const char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

}  // namespace mproc::cli
