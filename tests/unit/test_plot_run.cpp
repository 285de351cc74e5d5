// `difftrain plot`: metrics.jsonl -> loss.png and loss_by_sigma.png. The pictures are
// decoded and read back: their size, that the curves are drawn, that they rise and fall
// as the data does, that a null loss leaves a gap; and each kind of bad metrics file.
#include <gtest/gtest.h>
#include <stb_image.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "difftrain/plot/line_chart.h"
#include "difftrain/plot/plot_run.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;
using difftrain::test::error_of;
using difftrain::test::TempDir;

struct Picture {
  int width = 0, height = 0;
  std::vector<uint8_t> rgb;

  // Curves are drawn in colour; text, frame and grid in greys.
  bool coloured(int x, int y) const {
    const uint8_t* p = &rgb[(static_cast<std::size_t>(y) * width + x) * 3];
    return std::max({p[0], p[1], p[2]}) - std::min({p[0], p[1], p[2]}) > 50;
  }
  bool dark(int x, int y) const {
    const uint8_t* p = &rgb[(static_cast<std::size_t>(y) * width + x) * 3];
    return std::max({p[0], p[1], p[2]}) < 100;
  }
  int coloured_count() const {
    int n = 0;
    for (int y = 0; y < height; ++y)
      for (int x = 0; x < width; ++x) n += coloured(x, y);
    return n;
  }
  // The lowest row (largest y) holding a curve's colour in column x, -1 if none. The legend
  // sits above the plot area, so in a column the curve crosses this is the curve.
  int lowest_coloured(int x) const {
    for (int y = height - 1; y >= 0; --y)
      if (coloured(x, y)) return y;
    return -1;
  }
};

Picture decode(const std::string& path) {
  Picture p;
  int channels = 0;
  unsigned char* data = stbi_load(path.c_str(), &p.width, &p.height, &channels, 3);
  if (!data) {
    ADD_FAILURE() << path << ": does not decode as an image";
    return p;
  }
  p.rgb.assign(data, data + static_cast<std::size_t>(p.width) * p.height * 3);
  stbi_image_free(data);
  return p;
}

void write_text(const std::string& path, const std::string& text) { std::ofstream(path, std::ios::binary) << text; }

// K bins of log(sigma) over [log 0.005, log 10]; `loss_at(k)` per bin (NaN: empty, null).
template <typename F>
std::string loss_by_sigma_json(int bins, F loss_at) {
  std::vector<std::string> edges, losses, counts;
  for (int k = 0; k <= bins; ++k) edges.push_back(fmt::format("{}", std::log(0.005) + k * (std::log(10.0) - std::log(0.005)) / bins));
  for (int k = 0; k < bins; ++k) {
    const double v = loss_at(k);
    losses.push_back(std::isfinite(v) ? fmt::format("{}", v) : "null");
    counts.push_back(std::isfinite(v) ? "12" : "0");
  }
  return fmt::format(R"({{"log_sigma_edges": [{}], "loss": [{}], "count": [{}]}})", fmt::join(edges, ", "),
                     fmt::join(losses, ", "), fmt::join(counts, ", "));
}

// `n` loss records every 10 steps, loss falling (or rising) over a decade; the binned loss
// falls (or rises) with sigma. A resume event sits in the middle, as the trainer writes it.
std::string metrics(int n, bool falling, bool with_bins = true) {
  std::string text;
  for (int i = 0; i < n; ++i) {
    const double t = static_cast<double>(i) / (n - 1), loss = std::pow(10.0, falling ? -t : t - 1);
    const auto bins = loss_by_sigma_json(8, [&](int k) { return (falling ? 2.0 / (1 + k) : 0.2 * (1 + k)) * (1 - 0.3 * t); });
    text += fmt::format(R"({{"step": {}, "loss": {}, "grad_norm": 1.0, "lr": 0.001{}}})", 10 * (i + 1), loss,
                        with_bins ? ", \"loss_by_sigma\": " + bins : "") + "\n";
    if (i == n / 2) text += fmt::format(R"({{"step": {}, "event": "resume", "checkpoint": "x.pt", "changed": {{}}}})", 10 * (i + 1)) + "\n";
  }
  return text;
}

std::vector<std::string> plot(const TempDir& dir, std::vector<std::string>& notes) {
  return difftrain::plot_run(dir.path(), dir.path(), notes);
}

TEST(PlotRun, BothChartsDrawTheirCurvesFallingAndRisingAsTheDataDoes) {
  for (const bool falling : {true, false}) {
    SCOPED_TRACE(falling ? "falling" : "rising");
    TempDir dir;
    write_text(dir / "metrics.jsonl", metrics(60, falling));
    std::vector<std::string> notes;
    const auto written = plot(dir, notes);
    ASSERT_EQ(written, (std::vector<std::string>{dir / "loss.png", dir / "loss_by_sigma.png"}));
    EXPECT_TRUE(notes.empty()) << notes.front();
    for (const auto& path : written) {
      SCOPED_TRACE(path);
      const Picture p = decode(path);
      ASSERT_EQ(p.width, 900);
      ASSERT_EQ(p.height, 540);
      EXPECT_GT(p.coloured_count(), 1000);
      // Rows grow downwards: a falling curve is higher (a smaller row) on the left.
      const int left = p.lowest_coloured(p.width / 4), right = p.lowest_coloured(3 * p.width / 4);
      ASSERT_GT(left, 0);
      ASSERT_GT(right, 0);
      if (falling) EXPECT_LT(left + 50, right);
      else EXPECT_GT(left, right + 50);
    }
  }
}

TEST(PlotRun, ChartsHaveTextBesideAndBelowThePlotArea) {
  TempDir dir;
  write_text(dir / "metrics.jsonl", metrics(30, true));
  std::vector<std::string> notes;
  const Picture p = decode(plot(dir, notes).at(0));
  ASSERT_EQ(p.width, 900);
  // The y axis title runs up the leftmost columns, the x axis title along the bottom rows,
  // the title along the top: each leaves dark (text) pixels where no curve or frame goes.
  const auto dark_in = [&](int x0, int y0, int x1, int y1) {
    int n = 0;
    for (int y = y0; y < y1; ++y)
      for (int x = x0; x < x1; ++x) n += p.dark(x, y);
    return n;
  };
  EXPECT_GT(dark_in(0, 0, 30, p.height), 50);
  EXPECT_GT(dark_in(0, p.height - 25, p.width, p.height), 50);
  EXPECT_GT(dark_in(0, 0, p.width, 30), 50);
}

TEST(PlotRun, NullLossesAreLeftOutAsAGapWithANote) {
  TempDir dir;
  std::string text;
  // 100 windows; 41..60 were all non-finite (null). The rest fall steadily.
  for (int i = 1; i <= 100; ++i)
    text += fmt::format(R"({{"step": {}, "loss": {}}})", i, i > 40 && i <= 60 ? "null" : fmt::format("{}", 1.0 / i)) + "\n";
  write_text(dir / "metrics.jsonl", text);
  std::vector<std::string> notes;
  const Picture p = decode(plot(dir, notes).at(0));
  ASSERT_EQ(notes.size(), 2u);  // the nulls, and no loss_by_sigma
  EXPECT_MENTIONS(notes[0], "20 of 100 loss records are null");
  // Steps 41..60 are the middle fifth of the x axis: no curve there below the legend.
  ASSERT_EQ(p.width, 900);
  EXPECT_GT(p.lowest_coloured(p.width / 4), 100);
  EXPECT_GT(p.lowest_coloured(3 * p.width / 4), 100);
  EXPECT_LT(p.lowest_coloured(p.width / 2), 80);
}

TEST(PlotRun, WithoutLossBySigmaOnlyTheLossCurveIsWrittenWithANote) {
  TempDir dir;
  write_text(dir / "metrics.jsonl", metrics(10, true, /*with_bins=*/false));
  std::vector<std::string> notes;
  EXPECT_EQ(plot(dir, notes), std::vector<std::string>{dir / "loss.png"});
  ASSERT_EQ(notes.size(), 1u);
  EXPECT_MENTIONS(notes[0], "loss_by_sigma.png not written");
  EXPECT_FALSE(fs::exists(dir / "loss_by_sigma.png"));
  EXPECT_GT(decode(dir / "loss.png").coloured_count(), 300);
}

TEST(PlotRun, ATornLastLineIsSkippedWithANote) {
  TempDir dir;
  write_text(dir / "metrics.jsonl", metrics(5, true) + R"({"step": 60, "loss": 0.0)");
  std::vector<std::string> notes;
  EXPECT_EQ(plot(dir, notes).size(), 2u);
  ASSERT_EQ(notes.size(), 1u);
  EXPECT_MENTIONS(notes[0], "metrics.jsonl line 7: skipped, cut off");
}

// Steps logged again (a resume from an earlier checkpoint, a file written twice): the later
// records replace the earlier ones from that step on, with a note saying what was found.
TEST(PlotRun, StepsLoggedAgainAreDrawnFromTheLaterRecordsWithANote) {
  TempDir dir;
  const auto record = [](int step, double loss) { return fmt::format(R"({{"step": {}, "loss": {}}})", step, loss) + "\n"; };
  write_text(dir / "metrics.jsonl", record(10, 1.0) + record(20, 0.8) + record(30, 0.6) + record(20, 0.7) + record(30, 0.5) +
                                        record(40, 0.4));
  std::vector<std::string> notes;
  const auto records = difftrain::read_loss_records(dir / "metrics.jsonl", notes);
  std::vector<int64_t> steps;
  std::vector<double> losses;
  for (const auto& r : records) steps.push_back(r.step), losses.push_back(r.loss);
  EXPECT_EQ(steps, (std::vector<int64_t>{10, 20, 30, 40}));
  EXPECT_EQ(losses, (std::vector<double>{1.0, 0.7, 0.5, 0.4}));
  ASSERT_EQ(notes.size(), 1u);
  EXPECT_MENTIONS(notes[0], "metrics.jsonl line 4: step 20 follows step 30: the steps from 20 on were logged again");
  EXPECT_EQ(plot(dir, notes).size(), 1u);  // and it draws
}

TEST(PlotRun, BadMetricsFilesAreOneErrorNamingFileAndLine) {
  TempDir dir;
  const std::string file = dir / "metrics.jsonl";
  std::vector<std::string> notes;
  const auto error_for = [&](const std::string& text) {
    write_text(file, text);
    return error_of([&] { plot(dir, notes); });
  };
  const std::string good = R"({"step": 10, "loss": 0.5})" "\n";
  EXPECT_MENTIONS(error_of([&] { difftrain::plot_run(dir / "nowhere", dir.path(), notes); }), "nowhere: no such run directory");
  EXPECT_MENTIONS(error_of([&] { plot(dir, notes); }), file + ": cannot read: No such file or directory");
  fs::create_directory(file);
  EXPECT_MENTIONS(error_of([&] { plot(dir, notes); }), file + ": is a directory, not a metrics file");
  fs::remove(file);
  EXPECT_MENTIONS(error_for(""), file + ": empty");
  EXPECT_MENTIONS(error_for(R"({"step": 0, "event": "resume"})" "\n"), file + ": no loss records");
  // A malformed line that is not the last, or is the last but whole (newline-terminated).
  EXPECT_MENTIONS(error_for(good + "{\"step\": 20, \"lo\n" + good), file + " line 2: not a JSON object");
  EXPECT_MENTIONS(error_for(good + good + "[1, 2]\n"), file + " line 3: not a JSON object");
  EXPECT_MENTIONS(error_for(good + R"({"step": "20", "loss": 0.5})" "\n"), file + " line 2: a loss record needs an integer \"step\"");
  EXPECT_MENTIONS(error_for(good + R"({"step": 20, "loss": "0.5"})" "\n"), file + " line 2: \"loss\" is \"0.5\"");
  EXPECT_MENTIONS(error_for(R"({"step": 10, "loss": null})" "\n"), "no finite loss to plot: all 1 loss records are null");
  const auto with_bins = [&](const std::string& bins) { return error_for(good + R"({"step": 20, "loss": 0.5, "loss_by_sigma": )" + bins + "}\n"); };
  EXPECT_MENTIONS(with_bins(R"({"log_sigma_edges": [0, 1, 1], "loss": [1, 2]})"), file + " line 2: \"loss_by_sigma.log_sigma_edges\" must be finite increasing");
  EXPECT_MENTIONS(with_bins(R"({"log_sigma_edges": [0, 1, 2], "loss": [1]})"), file + " line 2: \"loss_by_sigma\" has 3 edges for 1 bins");
  EXPECT_MENTIONS(with_bins(R"({"log_sigma_edges": [0, 1]})"), file + " line 2: \"loss_by_sigma.loss\" is missing");
  EXPECT_MENTIONS(with_bins(R"({"log_sigma_edges": [0, 1], "loss": ["x"]})"), file + " line 2: \"loss_by_sigma.loss[]\" is \"x\"");
  // None of these wrote a picture.
  EXPECT_FALSE(fs::exists(dir / "loss.png"));
  EXPECT_FALSE(fs::exists(dir / "loss_by_sigma.png"));
}

TEST(PlotRun, TheCommandPrintsWhatItWroteAndFailsInOneLine) {
  TempDir dir;
  write_text(dir / "metrics.jsonl", metrics(10, true));
  const auto ok = difftrain::test::run_command(fmt::format("{} plot {} --out {} 2>&1", DIFFTRAIN_BINARY, dir.path(), dir / "pictures"));
  EXPECT_EQ(ok.status, 0) << ok.output;
  EXPECT_EQ(ok.output, fmt::format("wrote {0}/pictures/loss.png\nwrote {0}/pictures/loss_by_sigma.png\n", dir.path()));
  EXPECT_TRUE(fs::exists(dir / "pictures/loss_by_sigma.png"));
  const auto bad = difftrain::test::run_command(fmt::format("{} plot {} 2>&1", DIFFTRAIN_BINARY, dir / "pictures"));
  EXPECT_NE(bad.status, 0);
  EXPECT_EQ(bad.output, fmt::format("difftrain: error: {}/pictures/metrics.jsonl: cannot read: No such file or directory\n", dir.path()));
}

TEST(LineChart, TheFontIsFoundOrNamedInTheError) {
  const char* before = std::getenv("DIFFTRAIN_FONT");
  const std::string saved = before ? before : "";
  ::setenv("DIFFTRAIN_FONT", "/nonexistent/font.ttf", 1);
  const std::string message = error_of([] { difftrain::chart_font_path(); });
  ::unsetenv("DIFFTRAIN_FONT");
  const std::string found = difftrain::chart_font_path();
  if (before) ::setenv("DIFFTRAIN_FONT", saved.c_str(), 1);
  EXPECT_MENTIONS(message, "DIFFTRAIN_FONT=/nonexistent/font.ttf: no such font file");
  EXPECT_TRUE(fs::is_regular_file(found)) << found;
}

TEST(LineChart, NoPlaceablePointIsAnError) {
  difftrain::LineChart chart;
  chart.title = "empty";
  chart.y.scale = difftrain::AxisScale::log;
  chart.series.push_back({"", {1, 2}, {0, -1}, {255, 0, 0}});  // not positive: no place on a log axis
  EXPECT_MENTIONS(error_of([&] { difftrain::line_chart_png(chart); }), "chart 'empty': no point to draw");
}

}  // namespace
