// `difftrain classifier`: trains the image classifier whose feature space `eval` measures in.
#include <chrono>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli/command.h"
#include "difftrain/eval/classifier.h"

namespace difftrain::cli {

namespace {

int cmd_classifier(const ClassifierOptions& options, const std::string& out) {
  const auto start = std::chrono::steady_clock::now();
  require_writable_classifier_path(out);
  const auto trained = train_classifier(options, [](const EpochReport& e) {
    fmt::print(stderr, "classifier: epoch {}/{}: loss {:.4f}, {:.0f} s\n", e.epoch, e.epochs, e.loss, e.seconds);
  });
  save_classifier(out, trained);
  nlohmann::ordered_json j;
  j["test_accuracy"] = trained.test_accuracy;
  j["epochs"] = trained.epochs;
  j["seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  j["out"] = out;
  fmt::print("{}\n", j.dump());
  return 0;
}

}  // namespace

Command add_classifier(CLI::App& app) {
  auto co = std::make_shared<ClassifierOptions>();
  auto out = std::make_shared<std::string>();
  auto* classifier = app.add_subcommand(
      "classifier", "Train the image classifier whose feature space `eval` measures quality in");
  classifier->add_option("--data", co->train, "Training images with labels y (directory of shards, file or glob)")
      ->required();
  classifier->add_option("--test", co->test, "Test images with labels y, for the accuracy")->required();
  classifier->add_option("--out", *out, "Classifier file to write (.pt)")->required();
  classifier->add_option("--epochs", co->epochs, "Passes over the training images (3: 0.92 on Fashion-MNIST)")
      ->check(integer_in(1))
      ->capture_default_str();
  classifier->add_option("--seed", co->seed, "Seed of the initial weights and the shuffling, in [0, 2^63-1]")
      ->check(integer_in(0))
      ->capture_default_str();
  classifier->add_option("--batch", co->batch_size, "Images per Adam step")->check(integer_in(1))->capture_default_str();
  classifier->footer(
      "\nPrints one JSON line: {\"test_accuracy\", \"epochs\", \"seconds\", \"out\"}; each epoch's loss goes to stderr.\n"
      "By default `difftrain eval` looks for it as classifier.pt beside the training data's directory.");
  return {classifier, [co, out] { return cmd_classifier(*co, *out); }};
}

}  // namespace difftrain::cli
