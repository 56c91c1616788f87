// SPDX-License-Identifier: Apache-2.0
#pragma once
/// A small Prometheus text-exposition registry (format 0.0.4). prometheus-cpp is not packaged
/// for Debian 12, so this is ours; tests check its output with `promtool check metrics`.
/// Thread-safe: families are created at start-up; each thread finds cells in a cache of its own
/// (the first time under a shared lock, created under an exclusive one on first use) and updates
/// them with atomics, so workers never block each other.
#include <atomic>
#include <initializer_list>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <vector>

namespace tollgate::metrics {

using labels = std::vector<std::string>;

struct counter_cell {
  std::atomic<double> value{0};
  void inc(double v = 1) { value.fetch_add(v, std::memory_order_relaxed); }
};

struct gauge_cell {
  std::atomic<double> value{0};
  void add(double v) { value.fetch_add(v, std::memory_order_relaxed); }
  void set(double v) { value.store(v, std::memory_order_relaxed); }
};

struct histogram_cell {
  explicit histogram_cell(std::size_t n) : buckets(n) {}
  std::vector<std::atomic<std::uint64_t>> buckets;  ///< non-cumulative per bucket; +Inf is count
  std::atomic<std::uint64_t> count{0};
  std::atomic<double> sum{0};
};

enum class kind { counter, gauge, histogram };

class family {
 public:
  family(std::string name, std::string help, kind k, std::vector<std::string> label_names,
         std::vector<double> bounds = {});
  const std::string& name() const { return name_; }

  using label_values = std::initializer_list<std::string_view>;
  /// Finds (or creates) the cell for these label values. Allocation-free once the cell exists.
  counter_cell& counter(label_values values);
  gauge_cell& gauge(label_values values);
  histogram_cell& histogram(label_values values);
  void observe(label_values values, double v);
  /// observe() on a cell found before (no lookup: for hot paths).
  void observe(histogram_cell& h, double v) const;

  void expose(std::string& out) const;

 private:
  struct cell {
    labels values;
    std::unique_ptr<counter_cell> c;
    std::unique_ptr<gauge_cell> g;
    std::unique_ptr<histogram_cell> h;
  };
  cell& find(label_values values);
  std::string label_block(const labels& values, std::string_view extra_name = {}, std::string_view extra = {}) const;

  std::string name_, help_;
  kind kind_;
  std::vector<std::string> label_names_;
  std::vector<double> bounds_;
  std::uint64_t id_;  ///< unique in the process (never reused): names the family in per-thread caches
  mutable std::shared_mutex mu_;
  std::map<std::string, std::unique_ptr<cell>, std::less<>> cells_;
};

class registry {
 public:
  family& add(std::string name, std::string help, kind k, std::vector<std::string> label_names = {},
              std::vector<double> bounds = {});
  /// The whole registry in Prometheus text format.
  std::string expose() const;

 private:
  mutable std::mutex mu_;
  std::vector<std::unique_ptr<family>> families_;
};

/// Escapes a label value (backslash, double quote, newline).
std::string escape_label(std::string_view v);
/// Formats a sample value the way Prometheus parses it (+Inf, -Inf, NaN, shortest round-trip).
std::string format_value(double v);

}  // namespace tollgate::metrics
