// SPDX-License-Identifier: Apache-2.0
#include "providers/registry.hpp"

#include <functional>
#include <stdexcept>

#include "providers/azure/azure_openai_adapter.hpp"
#include "providers/bedrock/bedrock_adapter.hpp"
#include "providers/vertex/vertex_adapter.hpp"
#include "providers/mock/mock_adapter.hpp"
#include "providers/openai/openai_compatible_adapter.hpp"

namespace tollgate::providers {
namespace {

using factory = std::function<std::unique_ptr<provider_adapter>(const config::provider_config&)>;

const std::vector<std::pair<std::string_view, factory>>& table() {
  static const std::vector<std::pair<std::string_view, factory>> t = {
      {"openai_compatible", [](auto& c) { return std::make_unique<openai_compatible_adapter>(c); }},
      {"azure_openai", [](auto& c) { return std::make_unique<azure_openai_adapter>(c); }},
      {"bedrock", [](auto& c) { return std::make_unique<bedrock_adapter>(c); }},
      {"vertex", [](auto& c) { return std::make_unique<vertex_adapter>(c); }},
      {"mock", [](auto& c) { return std::make_unique<mock_adapter>(c); }},
  };
  return t;
}

}  // namespace

std::shared_ptr<snapshot> build_snapshot(std::shared_ptr<const config::gateway_config> cfg, std::string& error) {
  auto snap = std::make_shared<snapshot>();
  snap->cfg = cfg;
  std::unordered_map<std::string, const provider_adapter*> by_name;
  for (std::size_t i = 0; i < cfg->providers.size(); ++i) {
    const auto& pc = cfg->providers[i];
    const factory* f = nullptr;
    for (auto& [type, fn] : table())
      if (type == pc.type) f = &fn;
    if (!f) {
      error = "providers[" + std::to_string(i) + "].type: unknown provider type '" + pc.type + "'";
      return nullptr;
    }
    try {
      snap->providers.push_back((*f)(pc));
    } catch (const std::exception& e) {
      error = "providers[" + std::to_string(i) + "]: " + e.what();
      return nullptr;
    }
    by_name[pc.name] = snap->providers.back().get();
  }
  for (const auto& m : cfg->models) {
    model_route r;
    r.name = m.name;
    // Priced once here, not per call: a fallback serving another model by that model's own entry
    // (an exact name: a catch-all glob would undercut the public model's price), else as the
    // public model.
    const config::price_config* public_price = cfg->find_price(m.name);
    r.targets.push_back({by_name.at(m.primary.provider), m.primary.upstream_model, public_price});
    for (auto& fb : m.fallbacks) {
      const config::price_config* own = fb.upstream_model != m.name ? cfg->find_exact_price(fb.upstream_model) : nullptr;
      r.targets.push_back({by_name.at(fb.provider), fb.upstream_model, own ? own : public_price});
    }
    snap->models.emplace(m.name, std::move(r));
  }
  for (const auto& m : cfg->models) snap->model_order.push_back(&snap->models.at(m.name));
  return snap;
}

}  // namespace tollgate::providers
