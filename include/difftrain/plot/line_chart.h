#pragma once
// Line charts as PNG bytes: a framed plot area with grid lines, tick labels on both axes,
// a title, axis titles and a legend. Text is set in DejaVu Sans with stb_truetype, the
// picture encoded with stb_image_write; the caller writes the bytes with the checked
// atomic writer.
#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace difftrain {

enum class AxisScale { linear, log };

struct ChartAxis {
  std::string title;
  AxisScale scale = AxisScale::linear;
};

struct ChartSeries {
  std::string label;  // its legend entry; empty: none
  std::vector<double> x, y;
  std::array<uint8_t, 3> color{0, 0, 0};
  double line_width = 2;
  double marker_radius = 0;  // > 0: also a dot at every point
};

// Points that cannot be placed (non-finite, or not positive on a log axis) are left out and
// break the line there, so a gap in the data shows as a gap.
struct LineChart {
  std::string title;
  ChartAxis x, y;
  std::vector<ChartSeries> series;
  int width = 900, height = 540;
};

// Fails when no series has a point that can be placed.
std::vector<char> line_chart_png(const LineChart& chart);

// The TrueType font chart text is set in: $DIFFTRAIN_FONT when set, else DejaVu Sans where
// Debian's fonts-dejavu-core (or another distribution's package) installs it. Fails with
// what to install when there is none.
std::string chart_font_path();

}  // namespace difftrain
