#pragma once
// The `model` section of the config. Which keys apply, and their defaults, depend on
// `type`: the registry (models/registry.h) fills them in and refuses the others, so that
// adding a model touches only this folder.
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "difftrain/names.h"

namespace difftrain {

// What the network is trained to output: eps (the noise), x0 (the clean data) or
// v = sqrt(alpha) eps - sqrt(1 - alpha) x0 with alpha = 1 / (1 + sigma^2).
enum class Parameterization { eps, x0, v };
constexpr std::array<Named<Parameterization>, 3> names_of(Parameterization) {
  return {{{Parameterization::eps, "eps"}, {Parameterization::x0, "x0"}, {Parameterization::v, "v"}}};
}

struct ModelConfig {
  std::string type = "mlp";              // mlp | dit | unet
  Parameterization parameterization = Parameterization::eps;
  int64_t num_classes = 0;               // class-conditional when > 0 (label num_classes = "no label")

  std::optional<std::vector<int64_t>> hidden_dims;  // mlp

  std::optional<int64_t> patch, depth, head_dim, num_heads;  // dit
  std::optional<double> mlp_ratio;                            // dit

  std::optional<int64_t> ch, num_res_blocks;             // unet
  std::optional<std::vector<int64_t>> ch_mult, attn_res;  // unet
  std::optional<double> dropout;                          // unet
  std::optional<bool> scaled_input;                       // unet, dit: input times 1/sqrt(1 + sigma^2)
};

// Every key of the section in schema order, as (name, member): the config reader and
// writer iterate over this, so a new key needs no change outside this folder.
template <typename Visit>
void visit_model_keys(ModelConfig& m, Visit&& visit) {
  visit("type", m.type);
  visit("hidden_dims", m.hidden_dims);
  visit("patch", m.patch);
  visit("depth", m.depth);
  visit("head_dim", m.head_dim);
  visit("num_heads", m.num_heads);
  visit("mlp_ratio", m.mlp_ratio);
  visit("ch", m.ch);
  visit("ch_mult", m.ch_mult);
  visit("attn_res", m.attn_res);
  visit("num_res_blocks", m.num_res_blocks);
  visit("dropout", m.dropout);
  visit("scaled_input", m.scaled_input);
  visit("num_classes", m.num_classes);
  visit("parameterization", m.parameterization);
}

// Fills the type's defaults and checks every value; an error names the key (and refuses
// a key that does not apply to the type).
void resolve_model_config(ModelConfig& m);

}  // namespace difftrain
