// What the tests that render the tool's HTML pages in a headless browser share: finding
// the browser, and decoding and measuring its PNG screenshots.
#pragma once

#include <unistd.h>
#include <zlib.h>

#include <array>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

namespace cli_test {

// PNG, as Chromium writes its screenshots: 8-bit RGB or RGBA, not interlaced.

struct Image {
  std::uint32_t width = 0, height = 0;
  std::size_t channels = 0;
  std::vector<std::uint8_t> data;  // rows of width * channels bytes, unfiltered

  std::array<int, 3> rgb(std::size_t x, std::size_t y) const {
    const std::uint8_t* p = &data[(y * width + x) * channels];
    return {p[0], p[1], p[2]};
  }
};

inline std::uint32_t big_endian(const std::string& s, std::size_t at) {
  std::uint32_t v = 0;
  for (std::size_t i = 0; i < 4; ++i) v = v << 8 | static_cast<std::uint8_t>(s.at(at + i));
  return v;
}

inline Image decode_png(const std::string& file) {
  if (file.size() < 8 || file.compare(0, 8, "\x89PNG\r\n\x1a\n") != 0)
    throw std::runtime_error("not a PNG file");
  Image img;
  std::string idat;
  for (std::size_t at = 8; at + 12 <= file.size();) {
    const std::uint32_t length = big_endian(file, at);
    const std::string type = file.substr(at + 4, 4);
    if (at + 12 + length > file.size()) throw std::runtime_error("truncated PNG chunk");
    const std::string body = file.substr(at + 8, length);
    if (type == "IHDR") {
      img.width = big_endian(body, 0);
      img.height = big_endian(body, 4);
      const int depth = static_cast<std::uint8_t>(body.at(8)),
                colour = static_cast<std::uint8_t>(body.at(9));
      if (depth != 8 || (colour != 2 && colour != 6) || body.at(12) != 0)
        throw std::runtime_error("not an 8-bit RGB(A) non-interlaced PNG");
      img.channels = colour == 2 ? 3 : 4;
    } else if (type == "IDAT") {
      idat += body;
    } else if (type == "IEND") {
      break;
    }
    at += 12 + length;
  }
  if (img.channels == 0) throw std::runtime_error("PNG without IHDR");
  const std::size_t stride = img.width * img.channels;
  std::vector<std::uint8_t> raw(img.height * (stride + 1));
  uLongf size = raw.size();
  if (::uncompress(raw.data(), &size, reinterpret_cast<const Bytef*>(idat.data()), idat.size()) !=
          Z_OK ||
      size != raw.size())
    throw std::runtime_error("PNG image data does not inflate to the image size");

  img.data.assign(img.height * stride, 0);
  const std::size_t bpp = img.channels;
  for (std::size_t y = 0; y < img.height; ++y) {
    const std::uint8_t filter = raw[y * (stride + 1)];
    const std::uint8_t* in = &raw[y * (stride + 1) + 1];
    std::uint8_t* out = &img.data[y * stride];
    const std::uint8_t* up = y > 0 ? &img.data[(y - 1) * stride] : nullptr;
    for (std::size_t i = 0; i < stride; ++i) {
      const int a = i >= bpp ? out[i - bpp] : 0;
      const int b = up ? up[i] : 0;
      const int c = up && i >= bpp ? up[i - bpp] : 0;
      int predictor = 0;
      switch (filter) {
        case 0: predictor = 0; break;
        case 1: predictor = a; break;
        case 2: predictor = b; break;
        case 3: predictor = (a + b) / 2; break;
        case 4: {
          const int p = a + b - c, pa = std::abs(p - a), pb = std::abs(p - b), pc = std::abs(p - c);
          predictor = pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
          break;
        }
        default: throw std::runtime_error("bad PNG filter type");
      }
      out[i] = static_cast<std::uint8_t>(in[i] + predictor);
    }
  }
  return img;
}

inline bool near(const std::array<int, 3>& p, const std::array<int, 3>& q, int tolerance) {
  for (int i = 0; i < 3; ++i)
    if (std::abs(p[i] - q[i]) > tolerance) return false;
  return true;
}

/// The fraction of pixels that differ from the top-left one (the page background).
inline double non_background_fraction(const Image& img) {
  const auto background = img.rgb(0, 0);
  std::size_t n = 0;
  for (std::size_t y = 0; y < img.height; ++y)
    for (std::size_t x = 0; x < img.width; ++x) n += near(img.rgb(x, y), background, 8) ? 0 : 1;
  return static_cast<double>(n) / (static_cast<double>(img.width) * img.height);
}

inline std::size_t pixels_near(const Image& img, const std::array<int, 3>& colour) {
  std::size_t n = 0;
  for (std::size_t y = 0; y < img.height; ++y)
    for (std::size_t x = 0; x < img.width; ++x) n += near(img.rgb(x, y), colour, 10) ? 1 : 0;
  return n;
}

/// $MPROC_CHROMIUM; else the browser CMake found (MPROC_TEST_CHROMIUM) if it is still
/// there; else chromium-headless-shell or chromium on PATH; "" when there is none.
inline std::string find_chromium() {
  if (const char* env = std::getenv("MPROC_CHROMIUM"); env != nullptr && *env != '\0') return env;
#if defined(MPROC_TEST_CHROMIUM)
  if (::access(MPROC_TEST_CHROMIUM, X_OK) == 0) return MPROC_TEST_CHROMIUM;
#endif
  const char* path = std::getenv("PATH");
  const std::string dirs = path != nullptr ? path : "";
  for (const char* name : {"chromium-headless-shell", "chromium"}) {
    for (std::size_t from = 0; from <= dirs.size();) {
      std::size_t to = dirs.find(':', from);
      if (to == std::string::npos) to = dirs.size();
      const std::filesystem::path candidate = std::filesystem::path(dirs.substr(from, to - from)) / name;
      if (to > from && ::access(candidate.c_str(), X_OK) == 0) return candidate.string();
      from = to + 1;
    }
  }
  return "";
}

}  // namespace cli_test
