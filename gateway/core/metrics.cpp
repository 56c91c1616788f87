// SPDX-License-Identifier: Apache-2.0
#include "gateway/core/metrics.hpp"

#include <charconv>
#include <cmath>
#include <unordered_map>

namespace tollgate::metrics {

std::string escape_label(std::string_view v) {
  std::string s;
  s.reserve(v.size());
  for (char c : v) {
    if (c == '\\') s += "\\\\";
    else if (c == '"') s += "\\\"";
    else if (c == '\n') s += "\\n";
    else s += c;
  }
  return s;
}

std::string format_value(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[64];
  auto [p, ec] = std::to_chars(buf, buf + sizeof buf, v);
  return ec == std::errc{} ? std::string(buf, p) : std::string("0");
}

namespace {
std::atomic<std::uint64_t> next_family_id{1};
}

family::family(std::string name, std::string help, kind k, std::vector<std::string> label_names,
               std::vector<double> bounds)
    : name_(std::move(name)), help_(std::move(help)), kind_(k), label_names_(std::move(label_names)),
      bounds_(std::move(bounds)), id_(next_family_id.fetch_add(1, std::memory_order_relaxed)) {}

family::cell& family::find(label_values values) {
  // Each thread remembers the cells it found, by family id and label values: the common lookup
  // takes no lock and compares no ordered keys (a hot path finds several cells per request).
  // Cells live as long as their family, and ids are never reused, so an entry of a family that is
  // gone (tests make many registries) is never hit.
  thread_local std::string key;  // reused: no allocation per lookup once warm
  thread_local std::unordered_map<std::string, cell*> seen;
  key.clear();
  key.append(reinterpret_cast<const char*>(&id_), sizeof id_);
  // Each value after its length: joined with a separator, two tuples that differ only in where
  // the separator falls inside a value (team names are the admin API's to choose) shared a cell.
  for (auto& v : values) {
    const auto n = static_cast<std::uint32_t>(v.size());
    key.append(reinterpret_cast<const char*>(&n), sizeof n).append(v);
  }
  if (auto it = seen.find(key); it != seen.end()) return *it->second;
  const std::string_view own = std::string_view(key).substr(sizeof id_);
  cell* found = nullptr;
  {
    std::shared_lock lock(mu_);
    if (auto it = cells_.find(own); it != cells_.end()) found = it->second.get();
  }
  if (found == nullptr) {
    std::unique_lock lock(mu_);
    auto& slot = cells_[std::string(own)];
    if (!slot) {
      slot = std::make_unique<cell>();
      slot->values.assign(values.begin(), values.end());
      slot->values.resize(label_names_.size());
      if (kind_ == kind::counter) slot->c = std::make_unique<counter_cell>();
      if (kind_ == kind::gauge) slot->g = std::make_unique<gauge_cell>();
      if (kind_ == kind::histogram) slot->h = std::make_unique<histogram_cell>(bounds_.size());
    }
    found = slot.get();
  }
  seen.emplace(key, found);
  return *found;
}

counter_cell& family::counter(label_values v) { return *find(v).c; }
gauge_cell& family::gauge(label_values v) { return *find(v).g; }
histogram_cell& family::histogram(label_values v) { return *find(v).h; }

void family::observe(label_values values, double v) { observe(histogram(values), v); }

void family::observe(histogram_cell& h, double v) const {
  for (std::size_t i = 0; i < bounds_.size(); ++i) {
    if (v <= bounds_[i]) {
      h.buckets[i].fetch_add(1, std::memory_order_relaxed);
      break;
    }
  }
  h.count.fetch_add(1, std::memory_order_relaxed);
  h.sum.fetch_add(v, std::memory_order_relaxed);
}

std::string family::label_block(const labels& values, std::string_view extra_name, std::string_view extra) const {
  std::string s;
  for (std::size_t i = 0; i < label_names_.size(); ++i) {
    s += s.empty() ? "{" : ",";
    s.append(label_names_[i]).append("=\"").append(escape_label(values[i])).append("\"");
  }
  if (!extra_name.empty()) {
    s += s.empty() ? "{" : ",";
    s.append(extra_name).append("=\"").append(extra).append("\"");
  }
  if (!s.empty()) s += "}";
  return s;
}

void family::expose(std::string& out) const {
  static constexpr const char* type_names[] = {"counter", "gauge", "histogram"};
  // HELP text escapes backslash and line feed (the exposition format's rule for it).
  out.append("# HELP ").append(name_).append(" ");
  for (char ch : help_) {
    if (ch == '\\') out += "\\\\";
    else if (ch == '\n') out += "\\n";
    else out += ch;
  }
  out += '\n';
  out.append("# TYPE ").append(name_).append(" ").append(type_names[int(kind_)]).append("\n");
  std::shared_lock lock(mu_);
  for (auto& [key, c] : cells_) {
    if (c->c) out.append(name_).append(label_block(c->values)).append(" ").append(format_value(c->c->value.load())).append("\n");
    if (c->g) out.append(name_).append(label_block(c->values)).append(" ").append(format_value(c->g->value.load())).append("\n");
    if (c->h) {
      // Read count first: buckets are bumped before count, so cumulative buckets never exceed it
      // by more than in-flight observations; clamp so the exposition stays self-consistent.
      std::uint64_t count = c->h->count.load();
      std::uint64_t cum = 0;
      for (std::size_t i = 0; i < bounds_.size(); ++i) {
        cum += c->h->buckets[i].load();
        if (cum > count) cum = count;
        out.append(name_).append("_bucket").append(label_block(c->values, "le", format_value(bounds_[i])))
            .append(" ").append(std::to_string(cum)).append("\n");
      }
      out.append(name_).append("_bucket").append(label_block(c->values, "le", "+Inf")).append(" ")
          .append(std::to_string(count)).append("\n");
      out.append(name_).append("_sum").append(label_block(c->values)).append(" ").append(format_value(c->h->sum.load())).append("\n");
      out.append(name_).append("_count").append(label_block(c->values)).append(" ").append(std::to_string(count)).append("\n");
    }
  }
}

family& registry::add(std::string name, std::string help, kind k, std::vector<std::string> label_names,
                      std::vector<double> bounds) {
  std::lock_guard lock(mu_);
  families_.push_back(std::make_unique<family>(std::move(name), std::move(help), k, std::move(label_names), std::move(bounds)));
  return *families_.back();
}

std::string registry::expose() const {
  std::string out;
  std::lock_guard lock(mu_);
  for (auto& f : families_) f->expose(out);
  return out;
}

}  // namespace tollgate::metrics
