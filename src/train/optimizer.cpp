#include "difftrain/train/optimizer.h"

#include "difftrain/error.h"

namespace difftrain {

std::unique_ptr<torch::optim::Optimizer> make_optimizer(std::vector<torch::Tensor> params, const TrainConfig& c) {
  const std::tuple<double, double> betas{c.betas.at(0), c.betas.at(1)};
  const double wd = c.weight_decay.value_or(c.optimizer == "adamw" ? 0.01 : 0.0);
  if (c.optimizer == "adamw")
    return std::make_unique<torch::optim::AdamW>(
        params, torch::optim::AdamWOptions(c.lr).betas(betas).eps(c.adam_eps).weight_decay(wd));
  if (c.optimizer == "adam")
    return std::make_unique<torch::optim::Adam>(
        params, torch::optim::AdamOptions(c.lr).betas(betas).eps(c.adam_eps).weight_decay(wd));
  fail("config: key 'train.optimizer': unknown optimizer '{}'", c.optimizer);
}

double learning_rate(const TrainConfig& c, int64_t step) {
  if (c.warmup_steps <= 0 || step >= c.warmup_steps) return c.lr;
  return c.lr * static_cast<double>(std::max<int64_t>(step, 1)) / static_cast<double>(c.warmup_steps);
}

void set_learning_rate(torch::optim::Optimizer& optimizer, double lr) {
  for (auto& group : optimizer.param_groups()) group.options().set_lr(lr);
}

namespace {

c10::impl::GenericDict string_dict() { return c10::impl::GenericDict(c10::StringType::get(), c10::AnyType::get()); }

std::string key_of(const torch::Tensor& p) { return c10::guts::to_string(p.unsafeGetTensorImpl()); }

// Adam and AdamW keep the same per-parameter state under different types.
template <typename State>
State* state_of(torch::optim::Optimizer& optimizer, const torch::Tensor& p) {
  auto it = optimizer.state().find(key_of(p));
  return it == optimizer.state().end() ? nullptr : static_cast<State*>(it->second.get());
}

template <typename State>
void collect(torch::optim::Optimizer& optimizer, c10::impl::GenericDict& out) {
  int64_t index = 0;
  for (const auto& p : optimizer.param_groups().at(0).params()) {
    if (auto* s = state_of<State>(optimizer, p)) {
      auto entry = string_dict();
      entry.insert("step", s->step());
      entry.insert("exp_avg", s->exp_avg());
      entry.insert("exp_avg_sq", s->exp_avg_sq());
      out.insert(index, entry);
    }
    ++index;
  }
}

template <typename State>
void restore(torch::optim::Optimizer& optimizer, const c10::impl::GenericDict& state) {
  int64_t index = 0;
  for (const auto& p : optimizer.param_groups().at(0).params()) {
    auto found = state.find(c10::IValue(index));
    ++index;
    if (found == state.end()) continue;
    auto entry = found->value().toGenericDict();
    auto exp_avg = entry.at("exp_avg").toTensor(), exp_avg_sq = entry.at("exp_avg_sq").toTensor();
    if (exp_avg.sizes() != p.sizes() || exp_avg_sq.sizes() != p.sizes())
      fail("checkpoint: optimizer state of parameter {} has shape {}, the model's is {}", index - 1,
           exp_avg.sizes(), p.sizes());
    auto s = std::make_unique<State>();
    s->step(entry.at("step").toInt());
    s->exp_avg(exp_avg.to(p.device()).clone());
    s->exp_avg_sq(exp_avg_sq.to(p.device()).clone());
    optimizer.state()[key_of(p)] = std::move(s);
  }
}

bool is_adamw(torch::optim::Optimizer& optimizer) {
  return dynamic_cast<torch::optim::AdamW*>(&optimizer) != nullptr;
}

template <typename State>
void broadcast_state(torch::optim::Optimizer& optimizer, Communicator& comm) {
  const auto& params = optimizer.param_groups().at(0).params();
  auto has_state = torch::tensor({static_cast<int64_t>(!optimizer.state().empty())});
  comm.broadcast(has_state, 0);
  if (has_state.item<int64_t>() == 0) return;
  auto steps = torch::zeros({static_cast<int64_t>(params.size())}, torch::kInt64);
  for (std::size_t i = 0; i < params.size(); ++i) {
    auto* s = state_of<State>(optimizer, params[i]);
    if (!s) {  // a parameter rank 0 never stepped, or any parameter on the other ranks
      auto fresh = std::make_unique<State>();
      fresh->exp_avg(torch::zeros_like(params[i]));
      fresh->exp_avg_sq(torch::zeros_like(params[i]));
      s = fresh.get();
      optimizer.state()[key_of(params[i])] = std::move(fresh);
    }
    steps[i] = s->step();
  }
  comm.broadcast(steps, 0);
  for (std::size_t i = 0; i < params.size(); ++i) {
    auto* s = state_of<State>(optimizer, params[i]);
    s->step(steps[i].item<int64_t>());
    auto exp_avg = s->exp_avg().contiguous(), exp_avg_sq = s->exp_avg_sq().contiguous();
    comm.broadcast(exp_avg, 0);
    comm.broadcast(exp_avg_sq, 0);
    s->exp_avg(exp_avg);
    s->exp_avg_sq(exp_avg_sq);
  }
}

}  // namespace

c10::IValue optimizer_state(torch::optim::Optimizer& optimizer) {
  c10::impl::GenericDict state(c10::IntType::get(), c10::AnyType::get());
  const auto& group = optimizer.param_groups().at(0);
  auto options = string_dict();
  options.insert("lr", group.options().get_lr());
  if (is_adamw(optimizer)) {
    collect<torch::optim::AdamWParamState>(optimizer, state);
    const auto& o = static_cast<const torch::optim::AdamWOptions&>(group.options());
    options.insert("betas", c10::ivalue::Tuple::create({std::get<0>(o.betas()), std::get<1>(o.betas())}));
    options.insert("eps", o.eps());
    options.insert("weight_decay", o.weight_decay());
  } else {
    collect<torch::optim::AdamParamState>(optimizer, state);
    const auto& o = static_cast<const torch::optim::AdamOptions&>(group.options());
    options.insert("betas", c10::ivalue::Tuple::create({std::get<0>(o.betas()), std::get<1>(o.betas())}));
    options.insert("eps", o.eps());
    options.insert("weight_decay", o.weight_decay());
  }
  c10::List<int64_t> indices;
  for (int64_t i = 0; i < static_cast<int64_t>(group.params().size()); ++i) indices.push_back(i);
  options.insert("params", indices);
  auto out = string_dict();
  out.insert("state", state);
  c10::impl::GenericList groups(c10::AnyType::get());
  groups.push_back(options);
  out.insert("param_groups", groups);
  return out;
}

void load_optimizer_state(torch::optim::Optimizer& optimizer, const c10::IValue& value) {
  auto dict = value.toGenericDict();
  auto state = dict.at("state").toGenericDict();
  if (is_adamw(optimizer)) restore<torch::optim::AdamWParamState>(optimizer, state);
  else restore<torch::optim::AdamParamState>(optimizer, state);
}

}  // namespace difftrain

namespace difftrain {

void broadcast_optimizer_state(torch::optim::Optimizer& optimizer, Communicator& comm) {
  if (is_adamw(optimizer)) broadcast_state<torch::optim::AdamWParamState>(optimizer, comm);
  else broadcast_state<torch::optim::AdamParamState>(optimizer, comm);
}

}  // namespace difftrain
