// SPDX-License-Identifier: Apache-2.0
// tollgatectl audit export|verify: local verbs that read the audit segments directly.
#include "gateway/admin/ctl_audit.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value_from.hpp>
#include <boost/json/value.hpp>

#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <iostream>
#include <optional>
#include <string>

#include "gateway/admin/ctl_table.hpp"
#include "gateway/audit/audit_reader.hpp"
#include "gateway/core/time.hpp"

namespace tollgate::ctl {
namespace json = boost::json;
namespace {

constexpr int exit_ok = 0, exit_usage = 2, exit_not_found = 4, exit_broken = 6, exit_failed = 1;

constexpr const char* audit_help =
    "usage: tollgatectl audit <verb> [options]\n"
    "\n"
    "Local verbs: they read the segment files directly (no gateway needed).\n"
    "  verify   check the hash chain of every instance in the directory\n"
    "  export   write records in a time range as JSON Lines or CSV\n"
    "\n"
    "Run 'tollgatectl audit <verb> --help' for its options.\n";

constexpr const char* verify_help =
    "usage: tollgatectl audit verify [--dir DIR] [--json]\n"
    "\n"
    "Checks every record's seq and its prev hash against the record before it, segment\n"
    "boundaries, torn or cut last lines, and the chain head in each instance's checkpoint.\n"
    "Names the first bad record and why: edited, deleted, reordered, truncated or torn.\n"
    "\n"
    "  --dir DIR   audit directory (default: $TOLLGATE_AUDIT_DIR, else ./audit)\n"
    "  --json      print the report as JSON\n"
    "\n"
    "Exit codes: 0 the chain is intact, 6 it is broken, 4 no such directory, 2 usage error.\n";

constexpr const char* export_help =
    "usage: tollgatectl audit export [--dir DIR] [--from TIME] [--to TIME] [--team TEAM]\n"
    "                                [--format jsonl|csv] [--output FILE] [--no-progress]\n"
    "\n"
    "Streams the records whose start time is in [from, to) to stdout (or FILE), segment by\n"
    "segment, never holding more than one buffer in memory. Progress goes to stderr when it is a\n"
    "terminal.\n"
    "\n"
    "  --dir DIR         audit directory (default: $TOLLGATE_AUDIT_DIR, else ./audit)\n"
    "  --from, --to      RFC 3339 (2026-11-26T08:00:00Z, 2026-11-26) or unix seconds\n"
    "  --team TEAM       only calls of this team\n"
    "  --format FORMAT   jsonl (default: the records as written) or csv (one row per record)\n"
    "  --output FILE     write to FILE instead of stdout\n"
    "\n"
    "Exit codes: 0 ok, 4 no such directory, 1 read or write error, 2 usage error.\n";

int usage_error(const std::string& msg, const char* verb) {
  std::cerr << "tollgatectl: " << msg << " (see tollgatectl audit " << verb << " --help)\n";
  return exit_usage;
}

std::string default_dir() {
  const char* d = std::getenv("TOLLGATE_AUDIT_DIR");
  return d && *d ? d : "audit";
}

std::string human_bytes(std::uint64_t n) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = double(n);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u ? "%.1f %s" : "%.0f %s", v, units[u]);
  return buf;
}

/// A progress line on stderr, at most every 200 ms, only when stderr is a terminal.
class progress {
 public:
  progress(std::string what, std::uint64_t total, bool enabled)
      : what_(std::move(what)), total_(total), on_(enabled && ::isatty(2)) {}
  void add(std::uint64_t bytes, std::uint64_t records) {
    done_ += bytes;
    records_ = records;
    if (!on_) return;
    const auto now = std::chrono::steady_clock::now();
    if (now - last_ < std::chrono::milliseconds(200)) return;
    last_ = now;
    show();
  }
  void finish() {
    if (!on_) return;
    show();
    std::fputc('\n', stderr);
  }

 private:
  void show() {
    const int pct = total_ ? int(100.0 * double(done_) / double(total_)) : 100;
    std::fprintf(stderr, "\r%s: %3d%% (%s of %s), %llu records   ", what_.c_str(), pct, human_bytes(done_).c_str(),
                 human_bytes(total_).c_str(), static_cast<unsigned long long>(records_));
    std::fflush(stderr);
  }
  std::string what_;
  std::uint64_t total_, done_ = 0, records_ = 0;
  bool on_;
  std::chrono::steady_clock::time_point last_{};
};

/// `--name=value` as `--name` and its value, as every other command takes options.
std::pair<std::string, std::optional<std::string>> split_inline(const std::string& a) {
  const auto eq = a.find('=');
  if (!a.starts_with("--") || eq == std::string::npos) return {a, std::nullopt};
  return {a.substr(0, eq), a.substr(eq + 1)};
}

int run_verify(int argc, char** argv, bool as_json) {
  std::string dir = default_dir();
  for (int i = 2; i < argc; ++i) {
    auto [a, inline_value] = split_inline(argv[i]);
    if (a == "--help" || a == "-h") {
      std::cout << verify_help;
      return exit_ok;
    }
    if (a == "--json" && !inline_value) as_json = true;
    else if (a == "--dir" && inline_value) dir = *inline_value;
    else if (a == "--dir" && i + 1 < argc) dir = argv[++i];
    else return usage_error("audit verify: unknown or incomplete option '" + std::string(argv[i]) + "'", "verify");
  }
  if (::access(dir.c_str(), F_OK) != 0) {
    if (as_json)
      std::cout << json::serialize(json::object{{"ok", false}, {"error", "audit directory '" + dir + "' not found"}}) << "\n";
    std::cerr << "tollgatectl: audit directory '" << dir << "' not found\n";
    return exit_not_found;
  }
  std::string error;
  std::uint64_t total = 0;
  for (auto& s : audit::list_segments(dir, error)) total += s.size;
  progress prog("verifying", total, !as_json);
  auto report = audit::verify(dir, [&](std::uint64_t n) { prog.add(n, 0); });
  prog.finish();
  // Nothing to verify is no failure (a gateway that has not written yet), but a directory that
  // is not an audit trail must not pass for an intact one.
  if (report.ok() && report.instances.empty())
    report.notes.push_back("no audit trail in '" + dir +
                           "': no segment of any instance (a gateway that has not written yet, or the wrong --dir)");
  if (as_json) {
    json::object o{{"ok", report.ok()},
                   {"records", report.records},
                   {"segments", report.segments},
                   {"bytes", report.bytes},
                   {"instances", json::value_from(report.instances)},
                   {"notes", json::value_from(report.notes)}};
    if (report.problem) {
      auto& p = *report.problem;
      o["problem"] = json::object{{"kind", p.kind}, {"segment", p.segment}, {"line", p.line}, {"seq", p.seq}, {"message", p.message}};
    }
    std::cout << json::serialize(o) << "\n";
  } else if (report.ok()) {
    std::cout << "audit verify: OK: " << report.instances.size() << " instance(s), " << report.segments << " segment(s), "
              << report.records << " records (" << human_bytes(report.bytes) << ")\n";
    for (auto& n : report.notes) std::cout << "  note: " << n << "\n";
  } else {
    auto& p = *report.problem;
    std::cout << "audit verify: FAILED: " << p.kind << " at " << p.segment;
    if (p.line) std::cout << ":" << p.line;
    if (p.seq) std::cout << " (seq " << p.seq << ")";
    std::cout << "\n  " << p.message << "\n";
  }
  if (report.problem && report.problem->kind == "unreadable") return exit_failed;
  return report.ok() ? exit_ok : exit_broken;
}

/// A CSV field. A text a spreadsheet would take for a formula (a caller's User-Agent, a model
/// name: `=HYPERLINK(...)`) is kept as text: a leading `'`, quoted (OWASP's CSV injection advice).
std::string csv_field(std::string_view v) {
  const bool formula = !v.empty() && std::string_view("=+-@\t\r").find(v.front()) != std::string_view::npos;
  if (!formula && v.find_first_of(",\"\r\n") == std::string_view::npos) return std::string(v);
  std::string out = formula ? "\"'" : "\"";
  for (char c : v) {
    if (c == '"') out += '"';
    out += c;
  }
  out += '"';
  return out;
}

std::string csv_value(const json::object& o, std::string_view name) {
  auto* v = o.if_contains(name);
  if (!v || v->is_null()) return {};
  if (v->is_string()) return csv_field(v->get_string());
  if (v->is_bool()) return v->get_bool() ? "true" : "false";
  return json::serialize(*v);
}

constexpr const char* csv_columns[] = {"seq", "type", "id", "time", "team", "key_id", "subject", "client", "user_agent",
                                       "method", "path", "model", "provider", "upstream_model", "status", "error_code",
                                       "stream", "prompt_tokens", "cached_tokens", "cache_write_tokens", "completion_tokens", "cost_usd",
                                       "latency_us", "ttft_us", "retries", "admin", "action", "target"};

/// A record's integer field (int_of); nullopt when absent or not an integer a 64-bit count holds.
std::optional<std::int64_t> int_field(const json::object& o, std::string_view name) {
  const auto* v = o.if_contains(name);
  return v ? int_of(*v) : std::nullopt;
}

/// cost_usd from the exact nano-USD integer: no binary floating point in an export.
std::string usd(const json::object& o) {
  const auto cost = int_field(o, "cost_nano");
  if (!cost) return {};
  const std::int64_t n = *cost;
  char buf[48];
  std::snprintf(buf, sizeof buf, "%lld.%09lld", static_cast<long long>(n / 1'000'000'000),
                static_cast<long long>(n % 1'000'000'000));
  return buf;
}

int run_export(int argc, char** argv) {
  std::string dir = default_dir(), format = "jsonl", team, output;
  std::optional<std::int64_t> from, to;
  bool show_progress = true;
  for (int i = 2; i < argc; ++i) {
    auto [a, inline_value] = split_inline(argv[i]);
    auto value = [&, inline_value = inline_value](std::string& out) {
      if (inline_value) {
        out = *inline_value;
        return true;
      }
      if (i + 1 >= argc) return false;
      out = argv[++i];
      return true;
    };
    std::string v;
    if (a == "--help" || a == "-h") {
      std::cout << export_help;
      return exit_ok;
    } else if (a == "--dir") {
      if (!value(dir)) return usage_error("--dir needs a directory", "export");
    } else if (a == "--format") {
      if (!value(format) || (format != "jsonl" && format != "csv")) return usage_error("--format must be jsonl or csv", "export");
    } else if (a == "--team") {
      if (!value(team)) return usage_error("--team needs a team name", "export");
    } else if (a == "--output" || a == "-o") {
      if (!value(output)) return usage_error("--output needs a file", "export");
    } else if (a == "--from" || a == "--to") {
      if (!value(v)) return usage_error(a + " needs a time", "export");
      auto t = parse_time_ms(v);
      if (!t) return usage_error(a + ": '" + v + "' is not RFC 3339 (2026-11-26T08:00:00Z), a date or unix seconds", "export");
      (a == "--from" ? from : to) = t;
    } else if (a == "--no-progress") {
      show_progress = false;
    } else {
      return usage_error("audit export: unknown option '" + a + "'", "export");
    }
  }
  if (from && to && *to <= *from) return usage_error("--to must be after --from", "export");
  if (::access(dir.c_str(), F_OK) != 0) {
    std::cerr << "tollgatectl: audit directory '" << dir << "' not found\n";
    return exit_not_found;
  }
  std::string error;
  auto segs = audit::list_segments(dir, error);
  if (!error.empty()) {
    std::cerr << "tollgatectl: " << error << "\n";
    return exit_failed;
  }
  std::vector<std::string> torn_segments;
  std::FILE* out = stdout;
  if (!output.empty()) {
    // Owner-only, as the segments it copies are (captured prompts may be in them).
    const int fd = ::open(output.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    out = fd < 0 ? nullptr : ::fdopen(fd, "wb");
    if (!out) {
      std::cerr << "tollgatectl: cannot write '" << output << "': " << std::strerror(errno) << "\n";
      return exit_failed;
    }
  }
  static char outbuf[1 << 20];
  std::setvbuf(out, outbuf, _IOFBF, sizeof outbuf);
  std::uint64_t total = 0;
  for (auto& s : segs) total += s.size;
  progress prog("exporting", total, show_progress);
  std::uint64_t written = 0, bad = 0;
  std::string row;
  if (format == "csv") {
    row = "instance";
    for (auto* c : csv_columns) (row += ',') += c;
    row += '\n';
    std::fwrite(row.data(), 1, row.size(), out);
  }
  for (auto& seg : segs) {
    auto on_line = [&](std::string_view line, std::uint64_t) {
      boost::system::error_code ec;
      auto v = json::parse(line, ec);
      if (ec || !v.is_object()) {
        ++bad;  // audit verify names it; an export skips it
        return true;
      }
      const auto& o = v.get_object();
      const char* time_field = o.contains("start_ms") ? "start_ms" : o.contains("time_ms") ? "time_ms" : nullptr;
      const auto when = time_field ? int_field(o, time_field) : std::optional<std::int64_t>(0);
      if (!when) {
        ++bad;  // a time that is no integer: not a record the writer made
        return true;
      }
      const std::int64_t t = *when;
      if ((from && t < *from) || (to && t >= *to)) return true;
      if (!team.empty()) {
        auto* tm = o.if_contains("team");
        if (!tm || !tm->is_string() || tm->get_string() != team) return true;
      }
      if (format == "jsonl") {
        std::fwrite(line.data(), 1, line.size(), out);
        std::fputc('\n', out);
      } else {
        row = csv_field(seg.instance);
        for (auto* c : csv_columns) {
          row += ',';
          row += std::string_view(c) == "cost_usd" ? usd(o) : csv_value(o, c);
        }
        row += '\n';
        std::fwrite(row.data(), 1, row.size(), out);
      }
      ++written;
      return true;
    };
    auto torn = audit::for_each_line(seg, on_line, [&](std::uint64_t n) { prog.add(n, written); }, error);
    if (!torn) {
      prog.finish();
      std::cerr << "tollgatectl: " << error << "\n";
      return exit_failed;
    }
    if (*torn > 0) torn_segments.push_back(seg.name + " (" + std::to_string(*torn) + " bytes)");
    if (std::ferror(out)) break;  // (a full disk, a closed pipe: said below, without reading the rest)
  }
  prog.finish();
  const bool write_failed = std::fflush(out) != 0 || std::ferror(out);
  if (out != stdout) std::fclose(out);
  if (write_failed) {
    std::cerr << "tollgatectl: writing the export failed: " << std::strerror(errno) << "\n";
    return exit_failed;
  }
  if (bad)
    std::cerr << "tollgatectl: skipped " << bad
              << " line(s) that are not audit records (not JSON, or a time that is no integer); run tollgatectl audit verify\n";
  // A last line cut short is not exported; say so (a running gateway's line being written is one).
  for (const auto& t : torn_segments)
    std::cerr << "tollgatectl: skipped a partial last line in " << t
              << " (a record being written, or a cut trail: run tollgatectl audit verify)\n";
  if (::isatty(2) && show_progress) std::cerr << "exported " << written << " records\n";
  return exit_ok;
}

}  // namespace

int run_audit(int argc, char** argv, bool as_json) {
  if (argc < 2) {
    std::cerr << audit_help;
    return exit_usage;
  }
  const std::string verb = argv[1];
  if (verb == "--help" || verb == "-h" || verb == "help") {
    std::cout << audit_help;
    return exit_ok;
  }
  if (verb == "verify") return run_verify(argc, argv, as_json);
  if (verb == "export") return run_export(argc, argv);
  std::cerr << "tollgatectl: unknown audit verb '" << verb << "' (see tollgatectl audit --help)\n";
  return exit_usage;
}

}  // namespace tollgate::ctl
