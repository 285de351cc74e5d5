#include "difftrain/plot/line_chart.h"

#include <stb_truetype.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>

#include <fmt/format.h>

#include "difftrain/error.h"
#include "difftrain/plot/png.h"

namespace difftrain {

std::string chart_font_path() {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (const char* chosen = std::getenv("DIFFTRAIN_FONT"); chosen && *chosen) {
    if (!fs::is_regular_file(chosen, ec)) fail("DIFFTRAIN_FONT={}: no such font file", abbreviate(chosen));
    return chosen;
  }
  static const char* const known[] = {
      "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",    // Debian, Ubuntu (fonts-dejavu-core)
      "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",  // Fedora
      "/usr/share/fonts/TTF/DejaVuSans.ttf",                // Arch
  };
  for (const char* path : known)
    if (fs::is_regular_file(path, ec)) return path;
  fail("no font for the chart text: {} is missing; install Debian's fonts-dejavu-core, or set DIFFTRAIN_FONT to a .ttf file",
       known[0]);
}

namespace {

using Rgb = std::array<uint8_t, 3>;
constexpr Rgb kText{30, 30, 30}, kFrame{110, 110, 110}, kGrid{228, 228, 228};
constexpr double kTitlePx = 19, kAxisTitlePx = 15, kTickPx = 13, kLegendPx = 14;

// Loaded once per process; stbtt_fontinfo points into `bytes`, so the object never moves.
struct Font {
  std::vector<unsigned char> bytes;
  stbtt_fontinfo info{};
  explicit Font(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) fail("{}: cannot read the chart font", path);
    bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    const int offset = bytes.size() < 12 ? -1 : stbtt_GetFontOffsetForIndex(bytes.data(), 0);
    if (offset < 0 || !stbtt_InitFont(&info, bytes.data(), offset)) fail("{}: not a TrueType font", path);
  }
};

const stbtt_fontinfo& font() {
  static const Font loaded(chart_font_path());
  return loaded.info;
}

// Malformed UTF-8 shows as U+FFFD rather than as stray glyphs.
std::vector<int> codepoints(const std::string& text) {
  std::vector<int> out;
  for (std::size_t i = 0; i < text.size();) {
    const auto lead = static_cast<unsigned char>(text[i]);
    const std::size_t n = lead < 0x80 ? 1 : (lead >> 5) == 6 ? 2 : (lead >> 4) == 14 ? 3 : (lead >> 3) == 30 ? 4 : 0;
    int cp = n == 1 ? lead : lead & (0x7F >> n);
    bool ok = n > 0 && i + n <= text.size();
    for (std::size_t k = 1; ok && k < n; ++k) {
      ok = (static_cast<unsigned char>(text[i + k]) & 0xC0) == 0x80;
      cp = (cp << 6) | (text[i + k] & 0x3F);
    }
    out.push_back(ok ? cp : 0xFFFD);
    i += ok ? n : 1;
  }
  return out;
}

// One line of text as coverage 0..255, as wide and tall as the font's ascent+descent.
struct TextMask {
  int width = 0, height = 0;
  std::vector<uint8_t> alpha;
};

TextMask render_text(const std::string& text, double pixel_height) {
  const stbtt_fontinfo& f = font();
  const float scale = stbtt_ScaleForPixelHeight(&f, static_cast<float>(pixel_height));
  int ascent = 0, descent = 0, gap = 0;
  stbtt_GetFontVMetrics(&f, &ascent, &descent, &gap);
  const auto cps = codepoints(text);
  std::vector<float> pen(cps.size());
  float x = 1;  // a pixel of room for a glyph that reaches left of its origin
  for (std::size_t i = 0; i < cps.size(); ++i) {
    pen[i] = x;
    int advance = 0, bearing = 0;
    stbtt_GetCodepointHMetrics(&f, cps[i], &advance, &bearing);
    x += scale * static_cast<float>(advance + (i + 1 < cps.size() ? stbtt_GetCodepointKernAdvance(&f, cps[i], cps[i + 1]) : 0));
  }
  TextMask m;
  const int baseline = static_cast<int>(std::ceil(scale * ascent));
  m.width = static_cast<int>(std::ceil(x)) + 2;
  m.height = baseline + static_cast<int>(std::ceil(-scale * descent)) + 1;
  m.alpha.assign(static_cast<std::size_t>(m.width) * m.height, 0);
  for (std::size_t i = 0; i < cps.size(); ++i) {
    const float origin = std::floor(pen[i]);
    int w = 0, h = 0, x0 = 0, y0 = 0;
    unsigned char* glyph = stbtt_GetCodepointBitmapSubpixel(&f, scale, scale, pen[i] - origin, 0, cps[i], &w, &h, &x0, &y0);
    for (int r = 0; r < h; ++r)
      for (int c = 0; c < w; ++c) {
        const int u = static_cast<int>(origin) + x0 + c, v = baseline + y0 + r;
        if (u < 0 || v < 0 || u >= m.width || v >= m.height) continue;
        auto& a = m.alpha[static_cast<std::size_t>(v) * m.width + u];
        a = std::max(a, glyph[r * w + c]);
      }
    stbtt_FreeBitmap(glyph, nullptr);
  }
  return m;
}

// Turned a quarter counter-clockwise, to read upwards beside the y axis.
TextMask turned(const TextMask& m) {
  TextMask t;
  t.width = m.height, t.height = m.width;
  t.alpha.resize(m.alpha.size());
  for (int r = 0; r < m.height; ++r)
    for (int c = 0; c < m.width; ++c)
      t.alpha[static_cast<std::size_t>(m.width - 1 - c) * t.width + r] = m.alpha[static_cast<std::size_t>(r) * m.width + c];
  return t;
}

struct Canvas {
  int width, height;
  std::vector<uint8_t> rgb;
  Canvas(int w, int h) : width(w), height(h), rgb(static_cast<std::size_t>(w) * h * 3, 255) {}

  void blend(int x, int y, Rgb color, double amount) {
    if (x < 0 || y < 0 || x >= width || y >= height || amount <= 0) return;
    amount = std::min(amount, 1.0);
    uint8_t* p = &rgb[(static_cast<std::size_t>(y) * width + x) * 3];
    for (int k = 0; k < 3; ++k) p[k] = static_cast<uint8_t>(std::lround(p[k] + (color[k] - p[k]) * amount));
  }
  void fill(int x0, int y0, int x1, int y1, Rgb color) {  // [x0, x1) x [y0, y1)
    for (int y = y0; y < y1; ++y)
      for (int x = x0; x < x1; ++x) blend(x, y, color, 1);
  }
  // (x, y) is where the point (ax, ay) of the text's box lands, in fractions of its size.
  void text(const TextMask& m, double x, double y, double ax, double ay, Rgb color) {
    const int left = static_cast<int>(std::lround(x - ax * m.width)), top = static_cast<int>(std::lround(y - ay * m.height));
    for (int r = 0; r < m.height; ++r)
      for (int c = 0; c < m.width; ++c) blend(left + c, top + r, color, m.alpha[static_cast<std::size_t>(r) * m.width + c] / 255.0);
  }
};

// How much of each pixel one series covers, so that its segments overlap at the joints
// without darkening there; blended onto the canvas in one go.
struct Coverage {
  int left, top, right, bottom;  // drawing is clipped to [left, right) x [top, bottom)
  int width;
  std::vector<float> amount;
  Coverage(int l, int t, int r, int b, int canvas_width, int canvas_height)
      : left(l), top(t), right(r), bottom(b), width(canvas_width), amount(static_cast<std::size_t>(canvas_width) * canvas_height, 0) {}

  // Within `radius` of the segment full cover, fading to none over the next pixel.
  void segment(double x0, double y0, double x1, double y1, double radius) {
    const double reach = radius + 1, dx = x1 - x0, dy = y1 - y0, length2 = dx * dx + dy * dy;
    const int xa = std::max(left, static_cast<int>(std::floor(std::min(x0, x1) - reach)));
    const int xb = std::min(right - 1, static_cast<int>(std::ceil(std::max(x0, x1) + reach)));
    const int ya = std::max(top, static_cast<int>(std::floor(std::min(y0, y1) - reach)));
    const int yb = std::min(bottom - 1, static_cast<int>(std::ceil(std::max(y0, y1) + reach)));
    for (int y = ya; y <= yb; ++y)
      for (int x = xa; x <= xb; ++x) {
        const double px = x + 0.5 - x0, py = y + 0.5 - y0;
        const double t = length2 > 0 ? std::clamp((px * dx + py * dy) / length2, 0.0, 1.0) : 0.0;
        const double cover = std::clamp(radius + 0.5 - std::hypot(px - t * dx, py - t * dy), 0.0, 1.0);
        auto& a = amount[static_cast<std::size_t>(y) * width + x];
        a = std::max(a, static_cast<float>(cover));
      }
  }
  void dot(double x, double y, double radius) { segment(x, y, x, y, radius); }

  void paint(Canvas& canvas, Rgb color) const {
    for (int y = top; y < bottom; ++y)
      for (int x = left; x < right; ++x) canvas.blend(x, y, color, amount[static_cast<std::size_t>(y) * width + x]);
  }
};

// Maps data values to [0, 1] along an axis: linear, or in decades on a log axis.
struct Scale {
  AxisScale kind;
  double lo = 0, hi = 1;  // in axis units (decades on a log axis)

  bool placeable(double v) const { return std::isfinite(v) && (kind == AxisScale::linear || v > 0); }
  double unit(double v) const { return kind == AxisScale::log ? std::log10(v) : v; }
  double fraction(double v) const { return (unit(v) - lo) / (hi - lo); }
};

// The data's extent with `pad` of its span on each side; a single value gets a span of
// its own (half its size, or half a decade).
Scale fit_scale(AxisScale kind, double lo, double hi, double pad) {
  Scale s{kind, lo, hi};
  if (!(s.hi - s.lo > 1e-12 * std::max(std::abs(s.lo), std::abs(s.hi)))) {
    const double half = kind == AxisScale::log ? 0.5 : (s.lo != 0 ? std::abs(s.lo) / 2 : 1);
    s.lo -= half, s.hi += half;
  }
  const double span = s.hi - s.lo;
  s.lo -= pad * span, s.hi += pad * span;
  return s;
}

// About six round values (1, 2 or 5 times a power of ten apart) within [lo, hi].
std::vector<double> linear_ticks(double lo, double hi) {
  const double rough = (hi - lo) / 6, magnitude = std::pow(10.0, std::floor(std::log10(rough)));
  double step = 10 * magnitude;
  for (const double m : {1.0, 2.0, 5.0})
    if (m * magnitude >= rough) {
      step = m * magnitude;
      break;
    }
  std::vector<double> ticks;
  for (double k = std::ceil(lo / step); k * step <= hi + 1e-9 * step; ++k) ticks.push_back(k == 0 ? 0.0 : k * step);
  return ticks;
}

// Powers of ten, else 1-2-5 steps, else (a range within a decade or so) linear steps.
std::vector<double> log_ticks(double lo, double hi) {
  for (const auto& mantissas : {std::vector<double>{1}, std::vector<double>{1, 2, 5}}) {
    std::vector<double> ticks;
    const int first = static_cast<int>(std::floor(lo)), last = static_cast<int>(std::ceil(hi));
    const int stride = mantissas.size() == 1 ? std::max(1, (last - first) / 8) : 1;
    for (int k = first; k <= last; ++k)
      for (const double m : mantissas) {
        const double v = m * std::pow(10.0, k);
        if (k % stride == 0 && std::log10(v) >= lo - 1e-9 && std::log10(v) <= hi + 1e-9) ticks.push_back(v);
      }
    if (ticks.size() >= 3) return ticks;
  }
  return linear_ticks(std::pow(10.0, lo), std::pow(10.0, hi));
}

std::vector<double> ticks_of(const Scale& s) {
  return s.kind == AxisScale::log ? log_ticks(s.lo, s.hi) : linear_ticks(s.lo, s.hi);
}

std::string tick_label(double v) { return fmt::format("{:.6g}", v); }


}  // namespace

std::vector<char> line_chart_png(const LineChart& chart) {
  Scale sx{chart.x.scale}, sy{chart.y.scale};
  double x_lo = INFINITY, x_hi = -INFINITY, y_lo = INFINITY, y_hi = -INFINITY;
  for (const auto& s : chart.series)
    for (std::size_t i = 0; i < std::min(s.x.size(), s.y.size()); ++i)
      if (sx.placeable(s.x[i]) && sy.placeable(s.y[i])) {
        x_lo = std::min(x_lo, sx.unit(s.x[i])), x_hi = std::max(x_hi, sx.unit(s.x[i]));
        y_lo = std::min(y_lo, sy.unit(s.y[i])), y_hi = std::max(y_hi, sy.unit(s.y[i]));
      }
  if (!(x_lo <= x_hi)) fail("chart '{}': no point to draw", chart.title);
  sx = fit_scale(sx.kind, x_lo, x_hi, 0.02), sy = fit_scale(sy.kind, y_lo, y_hi, 0.06);

  // Everything around the plot area is measured before the area is placed.
  const TextMask title = render_text(chart.title, kTitlePx);
  const TextMask x_title = render_text(chart.x.title, kAxisTitlePx);
  const TextMask y_title = turned(render_text(chart.y.title, kAxisTitlePx));
  const auto x_ticks = ticks_of(sx), y_ticks = ticks_of(sy);
  std::vector<TextMask> x_labels, y_labels;
  int y_label_width = 0;
  for (const double v : x_ticks) x_labels.push_back(render_text(tick_label(v), kTickPx));
  for (const double v : y_ticks) {
    y_labels.push_back(render_text(tick_label(v), kTickPx));
    y_label_width = std::max(y_label_width, y_labels.back().width);
  }
  const int tick_height = render_text("0", kTickPx).height, tick_length = 5;
  const int left = 12 + y_title.width + 10 + y_label_width + tick_length + 4;
  const int right = chart.width - 28;
  const int bottom = chart.height - (10 + x_title.height + 6 + tick_height + tick_length + 4);

  // The legend: rows of (swatch, label) above the plot area, each row centred over it.
  struct Entry {
    const ChartSeries* series;
    TextMask label;
  };
  const int swatch = 26, entry_gap = 22;
  std::vector<std::vector<Entry>> rows;
  int row_width = 0;
  for (const auto& s : chart.series) {
    if (s.label.empty()) continue;
    TextMask label = render_text(s.label, kLegendPx);
    const int w = swatch + 6 + label.width;
    if (rows.empty() || row_width + entry_gap + w > right - left) rows.emplace_back(), row_width = -entry_gap;
    row_width += entry_gap + w;
    rows.back().push_back({&s, std::move(label)});
  }
  const int legend_row = rows.empty() ? 0 : rows.front().front().label.height + 2;
  const int top = 10 + title.height + 6 + static_cast<int>(rows.size()) * legend_row + (rows.empty() ? 0 : 6);
  if (right - left < 100 || bottom - top < 100) fail("chart '{}': {}x{} leaves no room to plot", chart.title, chart.width, chart.height);

  Canvas canvas(chart.width, chart.height);
  const auto px = [&](double v) { return left + sx.fraction(v) * (right - left); };
  const auto py = [&](double v) { return bottom - sy.fraction(v) * (bottom - top); };
  for (const double v : x_ticks) canvas.fill(static_cast<int>(px(v)), top, static_cast<int>(px(v)) + 1, bottom, kGrid);
  for (const double v : y_ticks) canvas.fill(left, static_cast<int>(py(v)), right, static_cast<int>(py(v)) + 1, kGrid);

  for (const auto& s : chart.series) {
    Coverage cover(left, top, right, bottom, chart.width, chart.height);
    const std::size_t n = std::min(s.x.size(), s.y.size());
    const auto placed = [&](std::size_t i) { return i < n && sx.placeable(s.x[i]) && sy.placeable(s.y[i]); };
    for (std::size_t i = 0; i < n; ++i) {
      if (!placed(i)) continue;
      if (placed(i + 1)) cover.segment(px(s.x[i]), py(s.y[i]), px(s.x[i + 1]), py(s.y[i + 1]), s.line_width / 2);
      const bool alone = !placed(i + 1) && (i == 0 || !placed(i - 1));
      if (s.marker_radius > 0 || alone) cover.dot(px(s.x[i]), py(s.y[i]), std::max(s.marker_radius, s.line_width));
    }
    cover.paint(canvas, s.color);
  }

  // Frame, ticks and their labels; a label that would touch the previous one is left out.
  canvas.fill(left - 1, top - 1, right + 1, top, kFrame), canvas.fill(left - 1, bottom, right + 1, bottom + 1, kFrame);
  canvas.fill(left - 1, top - 1, left, bottom + 1, kFrame), canvas.fill(right, top - 1, right + 1, bottom + 1, kFrame);
  int last_label_end = -1000;
  for (std::size_t i = 0; i < x_ticks.size(); ++i) {
    const int x = static_cast<int>(px(x_ticks[i]));
    canvas.fill(x, bottom + 1, x + 1, bottom + 1 + tick_length, kFrame);
    if (x - x_labels[i].width / 2 < last_label_end + 8) continue;
    canvas.text(x_labels[i], x + 0.5, bottom + tick_length + 3, 0.5, 0, kText);
    last_label_end = x + x_labels[i].width / 2;
  }
  int last_label_top = chart.height + 1000;
  for (std::size_t i = 0; i < y_ticks.size(); ++i) {
    const int y = static_cast<int>(py(y_ticks[i]));
    canvas.fill(left - 1 - tick_length, y, left - 1, y + 1, kFrame);
    if (y + y_labels[i].height / 2 > last_label_top - 2) continue;
    canvas.text(y_labels[i], left - tick_length - 4, y + 0.5, 1, 0.5, kText);
    last_label_top = y - y_labels[i].height / 2;
  }
  canvas.text(title, (left + right) / 2.0, 10, 0.5, 0, kText);
  canvas.text(x_title, (left + right) / 2.0, chart.height - 8, 0.5, 1, kText);
  canvas.text(y_title, 12, (top + bottom) / 2.0, 0, 0.5, kText);

  int row_top = 10 + title.height + 6;
  for (const auto& row : rows) {
    int width = -entry_gap;
    for (const auto& e : row) width += entry_gap + swatch + 6 + e.label.width;
    double x = (left + right - width) / 2.0;
    for (const auto& e : row) {
      Coverage cover(0, 0, chart.width, chart.height, chart.width, chart.height);
      const double mid = row_top + legend_row / 2.0;
      cover.segment(x + 2, mid, x + swatch - 2, mid, e.series->line_width / 2);
      if (e.series->marker_radius > 0) cover.dot(x + swatch / 2.0, mid, e.series->marker_radius);
      cover.paint(canvas, e.series->color);
      canvas.text(e.label, x + swatch + 6, mid, 0, 0.5, kText);
      x += swatch + 6 + e.label.width + entry_gap;
    }
    row_top += legend_row;
  }
  return encode_png(canvas.width, canvas.height, 3, canvas.rgb.data());
}

}  // namespace difftrain
