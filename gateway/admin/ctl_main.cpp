// SPDX-License-Identifier: Apache-2.0
// tollgatectl: the admin CLI, a client of the gateway's admin API (docs/admin-api.md), plus the local
// audit verbs (ctl_audit.cpp). Every failure ends in one of the documented exit codes; nothing
// throws out of main.
#include <boost/beast/http/verb.hpp>
#include <boost/json/object.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fstream>
#include <initializer_list>
#include <iostream>
#include <limits>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include <sys/stat.h>

#include "gateway/admin/ctl_audit.hpp"
#include "gateway/admin/ctl_http.hpp"
#include "gateway/admin/ctl_table.hpp"
#include "config/secrets.hpp"
#include "policy/keys.hpp"

namespace tollgate::ctl {
namespace {
namespace json = boost::json;
namespace http = boost::beast::http;
using std::string;
using std::string_view;

/// The process exit codes (documented in --help and docs/tollgatectl.md; scripts rely on them).
enum exit_code : int {
  exit_ok = 0,
  exit_failure = 1,      ///< 5xx, an answer that is not what the API promises, anything else
  exit_usage = 2,        ///< bad command line, or a request the gateway rejects as invalid (400/422)
  exit_auth = 3,         ///< no admin token, or the gateway refused it (401/403)
  exit_not_found = 4,    ///< 404, including commands the gateway does not support yet
  exit_unreachable = 5,  ///< name resolution, connection refused, connect or read timeout
  exit_unknown = 7,      ///< a change was sent but its answer did not arrive: it may have been made
};

constexpr string_view version = "0.1.0";
constexpr string_view default_url = "http://127.0.0.1:9090";

constexpr string_view top_help =
    "usage: tollgatectl [global options] <command> [options]\n"
    "\n"
    "Admin client for a Tollgate gateway: talks to the admin API on the admin listener\n"
    "(server.admin_listen). Admin token from $TOLLGATE_ADMIN_TOKEN or --token-file.\n"
    "\n"
    "Global options (before or after the command):\n"
    "  --url URL          admin API base URL (default $TOLLGATE_ADMIN_URL, else http://127.0.0.1:9090)\n"
    "  --token-file PATH  read the admin token from PATH (instead of $TOLLGATE_ADMIN_TOKEN)\n"
    "  --json             print the gateway's JSON answer unchanged, on one line (for scripts)\n"
    "  -h, --help         show this help; after a command, that command's help\n"
    "  --version          show the version\n"
    "\n"
    "Commands:\n"
    "  key create --team T [options]    create an API key; prints its secret once\n"
    "  key list [--team T] [--limit N]  list keys\n"
    "  key digest [--pepper-file F]     the digest of a key read on stdin, for the config file\n"
    "  key show ID                      show a key (never its secret)\n"
    "  key revoke ID                    revoke a key on every replica\n"
    "  key rotate ID [--overlap-seconds N]  give a key a new secret\n"
    "  team create NAME [options]       create a team\n"
    "  team list                        list teams\n"
    "  team show NAME                   show a team\n"
    "  team delete NAME                 delete a team\n"
    "  quota show --team T [--key ID]   budget spent, reserved and limit in the current period\n"
    "  quota set --team T [--key ID] [limits]  set rate limits and budget\n"
    "  usage [--team T] [--key ID] [--model M] [--from TIME] [--to TIME]  usage report\n"
    "\n"
    "Local commands (read audit segment files; no gateway needed):\n"
    "  audit export|verify              see 'tollgatectl audit --help'\n"
    "\n"
    "A gateway that does not support a command yet answers 404; tollgatectl says so and exits 4.\n"
    "\n"
    "Environment:\n"
    "  TOLLGATE_ADMIN_URL    admin API base URL (overridden by --url)\n"
    "  TOLLGATE_ADMIN_TOKEN  admin token, sent as 'Authorization: Bearer <token>'\n"
    "\n"
    "Exit codes:\n"
    "  0  success\n"
    "  1  server error (5xx), an unexpected answer, or another failure\n"
    "  2  usage error: unknown command, missing or invalid option (also a request the gateway\n"
    "     rejects as invalid, 400)\n"
    "  3  authentication: no admin token set, or the gateway refused it (401, 403)\n"
    "  4  not found (404), including commands the gateway does not support yet\n"
    "  5  gateway unreachable: name resolution, connection refused, connect or read timeout (5 s)\n"
    "  6  audit verify: the audit chain is broken (a record edited, deleted, reordered or cut)\n"
    "  7  a change (create, rotate, revoke, delete, set) was sent but its answer did not arrive:\n"
    "     it may have been made; the message says how to check\n"
    "\n"
    "Run 'tollgatectl <command> --help' for a command's options.\n";

constexpr string_view global_footer =
    "\nGlobal options: --url URL, --token-file PATH, --json (see 'tollgatectl --help').\n";

constexpr string_view limit_options =
    "  --rpm N            requests per minute (0: no limit)\n"
    "  --tpm N            tokens per minute (0: no limit)\n"
    "  --concurrency N    requests in flight (0: no limit)\n"
    "  --budget-usd X     budget in USD per period (0 to 9000000)\n"
    "  --period P         budget period: daily, monthly or total (default: monthly)\n"
    "  --soft F           fraction of the budget that raises the soft-threshold alert (0 to 1)\n";

// ---------------------------------------------------------------------------------------------
// Command table

struct globals {
  string url;         ///< --url; empty: $TOLLGATE_ADMIN_URL or the default
  string token_file;  ///< --token-file; empty: $TOLLGATE_ADMIN_TOKEN
  bool json = false;
};

/// A verb's options and positional arguments after parsing (values not yet validated).
struct arguments {
  std::map<string, string, std::less<>> opts;
  std::vector<string> positional;

  const string* get(string_view name) const {
    auto it = opts.find(name);
    return it == opts.end() ? nullptr : &it->second;
  }
};

struct command;

/// What a verb handler sees. Valid for the duration of the handler.
struct context {
  const command& cmd;
  const globals& g;
  const arguments& a;
};

struct command {
  string_view noun;                      ///< team, key, quota, usage
  string_view verb;                      ///< empty for `usage`
  string_view synopsis;                  ///< after "tollgatectl "
  string_view summary;                   ///< one sentence
  string_view details;                   ///< option lines, may be empty
  std::vector<string_view> value_opts;   ///< options taking a value, without "--"
  std::vector<string_view> positionals;  ///< names of the required positional arguments
  int (*run)(const context&);

  string name() const { return verb.empty() ? string(noun) : string(noun) + " " + string(verb); }
};

int usage_error(const string& msg, string_view help_of) {
  std::cerr << "tollgatectl: " << msg << "\n"
            << "Run 'tollgatectl " << help_of << (help_of.empty() ? "" : " ") << "--help' for usage.\n";
  return exit_usage;
}

int usage_error(const context& c, const string& msg) { return usage_error(msg, c.cmd.name()); }

// ---------------------------------------------------------------------------------------------
// Option values

bool parse_uint(string_view s, std::uint64_t& out) {
  if (s.empty()) return false;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc{} && p == s.data() + s.size();
}

bool parse_number(string_view s, double& out) {
  if (s.empty()) return false;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc{} && p == s.data() + s.size() && std::isfinite(out);
}

bool two_digits(string_view s, std::size_t at, int lo, int hi) {
  if (at + 2 > s.size() || !std::isdigit(static_cast<unsigned char>(s[at])) ||
      !std::isdigit(static_cast<unsigned char>(s[at + 1])))
    return false;
  const int v = (s[at] - '0') * 10 + (s[at + 1] - '0');
  return v >= lo && v <= hi;
}

/// Unix seconds, or an RFC 3339 date-time (2025-01-31T00:00:00Z, with optional fraction and offset).
bool valid_time(string_view s) {
  if (std::uint64_t n; parse_uint(s, n)) return true;
  // YYYY-MM-DDTHH:MM:SS
  if (s.size() < 20) return false;
  for (std::size_t i = 0; i < 4; ++i)
    if (!std::isdigit(static_cast<unsigned char>(s[i]))) return false;
  if (s[4] != '-' || !two_digits(s, 5, 1, 12) || s[7] != '-' || !two_digits(s, 8, 1, 31)) return false;
  if ((s[10] != 'T' && s[10] != 't') || !two_digits(s, 11, 0, 23) || s[13] != ':' || !two_digits(s, 14, 0, 59) ||
      s[16] != ':' || !two_digits(s, 17, 0, 60))
    return false;
  std::size_t i = 19;
  if (s[i] == '.') {
    const std::size_t start = ++i;
    while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i;
    if (i == start) return false;
  }
  if (i < s.size() && (s[i] == 'Z' || s[i] == 'z')) return i + 1 == s.size();
  if (i < s.size() && (s[i] == '+' || s[i] == '-'))
    return i + 6 == s.size() && two_digits(s, i + 1, 0, 23) && s[i + 3] == ':' && two_digits(s, i + 4, 0, 59);
  return false;
}

/// Reads optional option `name` as a non-negative integer into `o[field]`; a message on error.
string read_uint(const arguments& a, string_view name, json::object& o, string_view field) {
  const string* v = a.get(name);
  if (!v) return {};
  std::uint64_t n = 0;
  if (!parse_uint(*v, n)) return "--" + string(name) + " must be a non-negative integer, not '" + *v + "'";
  o[field] = n;
  return {};
}

/// --rpm/--tpm/--concurrency into `limits`, --budget-usd/--period/--soft into `budget`.
/// `budget_needs_usd`: --period and --soft alone are an error (creating; not when updating).
string read_limits(const arguments& a, json::object& limits, json::object& budget, bool budget_needs_usd) {
  for (string_view n : {"rpm", "tpm", "concurrency"})
    if (auto err = read_uint(a, n, limits, n); !err.empty()) return err;
  if (const string* usd = a.get("budget-usd")) {
    double x = 0;
    if (!parse_number(*usd, x) || x < 0 || x > 9e6) return "--budget-usd must be a number from 0 to 9000000, not '" + *usd + "'";
    budget["usd"] = x;
  }
  if (const string* p = a.get("period")) {
    if (*p != "daily" && *p != "monthly" && *p != "total") return "--period must be daily, monthly or total, not '" + *p + "'";
    budget["period"] = *p;
  }
  if (const string* s = a.get("soft")) {
    double x = 0;
    if (!parse_number(*s, x) || x < 0 || x > 1) return "--soft must be a fraction from 0 to 1, not '" + *s + "'";
    budget["soft"] = x;
  }
  if (budget_needs_usd && !budget.empty() && !budget.contains("usd")) return "--period and --soft need --budget-usd";
  return {};
}

/// Comma-separated model names or globs.
string read_models(const arguments& a, json::object& o) {
  const string* v = a.get("models");
  if (!v) return {};
  json::array models;
  std::string_view rest = *v;
  for (;;) {
    const auto comma = rest.find(',');
    string_view item = rest.substr(0, comma);
    while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
    while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
    if (item.empty()) return "--models takes a comma-separated list of model names or globs, not '" + *v + "'";
    models.emplace_back(item);
    if (comma == string_view::npos) break;
    rest.remove_prefix(comma + 1);
  }
  o["models"] = std::move(models);
  return {};
}

const string* required(const context& c, string_view name, string& err) {
  const string* v = c.a.get(name);
  if (!v || v->empty()) err = "'" + c.cmd.name() + "' needs --" + string(name);
  return v;
}

// ---------------------------------------------------------------------------------------------
// Calling the gateway

/// One admin API answer: `code` is exit_ok for 2xx (then `body` is the parsed JSON), otherwise
/// the exit code, with the message already printed.
struct answer {
  int code = exit_failure;
  string raw;
  json::value body;
};

string trim_space(string s) {
  const auto b = s.find_first_not_of(" \t\r\n");
  if (b == string::npos) return {};
  const auto e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

/// The admin token, or the exit code after printing why there is none.
boost::system::result<string, int> admin_token(const globals& g) {
  string token;
  if (!g.token_file.empty()) {
    // A regular file of a few KiB: /dev/zero was read for ever, and a directory was "empty". A
    // token others can read is used, with a warning (container secret mounts are often 0644).
    struct stat st {};
    if (::stat(g.token_file.c_str(), &st) != 0)
      return usage_error("cannot read token file '" + g.token_file + "': " + std::strerror(errno), "");
    if (!S_ISREG(st.st_mode)) return usage_error("token file '" + g.token_file + "' is not a regular file", "");
    if (st.st_size > 4096) return usage_error("token file '" + g.token_file + "' is larger than 4 KiB: not a token", "");
    if ((st.st_mode & 077) != 0)
      std::cerr << "tollgatectl: warning: token file '" << g.token_file << "' can be read by others (mode "
                << std::oct << (st.st_mode & 0777) << std::dec << "); chmod 600 it\n";
    std::ifstream f(g.token_file, std::ios::binary);
    if (!f) return usage_error("cannot read token file '" + g.token_file + "': " + std::strerror(errno), "");
    std::ostringstream ss;
    ss << f.rdbuf();
    token = trim_space(ss.str());
    if (token.empty()) {
      std::cerr << "tollgatectl: token file '" << g.token_file << "' is empty\n";
      return exit_auth;
    }
  } else {
    const char* env = std::getenv("TOLLGATE_ADMIN_TOKEN");
    token = trim_space(env ? env : "");
    if (token.empty()) {
      std::cerr << "tollgatectl: no admin token: set TOLLGATE_ADMIN_TOKEN (or pass --token-file PATH)\n";
      return exit_auth;
    }
  }
  // A token goes into a header field: refuse what could not be sent as one (RFC 6750 b64token is
  // stricter; anything visible is let through for the gateway to judge).
  for (char ch : token)
    if (static_cast<unsigned char>(ch) <= 0x20 || static_cast<unsigned char>(ch) >= 0x7f) {
      std::cerr << "tollgatectl: the admin token contains spaces or control characters\n";
      return exit_auth;
    }
  return token;
}

string admin_url(const globals& g) {
  if (!g.url.empty()) return g.url;
  const char* env = std::getenv("TOLLGATE_ADMIN_URL");
  if (env && *env) return env;
  return string(default_url);
}

/// Sends one request and classifies the answer. Prints every failure. `if_sent`: for a change,
/// what to do when the request went out but no answer came back (the change may have been made).
answer call(const context& c, http::verb method, const string& target, const json::object* body = nullptr,
            string_view if_sent = {}) {
  answer out;
  const string url = admin_url(c.g);
  auto where = parse_admin_url(url);
  if (!where) {
    out.code = usage_error(where.error(), "");
    return out;
  }
  auto token = admin_token(c.g);
  if (!token) {
    out.code = token.error();
    return out;
  }
  options opt{std::move(*where), std::move(*token)};
  auto r = request(opt, method, target, body ? json::serialize(*body) : string());
  if (!r) {
    const auto& e = r.error();
    if (e.sent && method != http::verb::get) {
      std::cerr << "tollgatectl: the request reached " << url << " but its answer did not arrive (" << e.message
                << "): the change may have been made. " << (if_sent.empty() ? "Check before you repeat it." : if_sent)
                << "\n";
      out.code = exit_unknown;
    } else if (e.what == transport_error::kind::bad_answer) {
      std::cerr << "tollgatectl: bad answer from " << url << ": " << e.message << "\n";
      out.code = exit_failure;
    } else {
      std::cerr << "tollgatectl: cannot reach the gateway at " << url << ": " << e.message << "\n";
      out.code = exit_unreachable;
    }
    return out;
  }

  out.raw = std::move(r->body);
  const unsigned status = r->status;
  boost::system::error_code ec;
  json::value parsed = json::parse(out.raw, ec);
  if (status / 100 == 2) {
    if (ec && !(out.raw.empty() && status == 204)) {
      std::cerr << "tollgatectl: the gateway at " << url << " answered " << status << " with a body that is not JSON\n";
      return out;
    }
    out.body = std::move(parsed);
    out.code = exit_ok;
    return out;
  }

  // An OpenAI-shaped error: {"error":{"message","type","param","code"}}.
  string message, code;
  if (!ec && parsed.is_object()) {
    if (auto* err = parsed.get_object().if_contains("error"); err && err->is_object()) {
      const auto& eo = err->get_object();
      if (auto* m = eo.if_contains("message"); m && m->is_string()) message = printable(m->get_string());
      if (auto* k = eo.if_contains("code"); k && k->is_string()) code = printable(k->get_string());
      else if (auto* t = eo.if_contains("type"); t && t->is_string()) code = string(t->get_string());
    }
  }
  const string request_line = string(http::to_string(method)) + " " + printable(target);
  if (status == 405 || (status == 404 && message.starts_with("Unknown admin URL"))) {
    std::cerr << "tollgatectl: the gateway at " << url << " does not support '" << c.cmd.name() << "' yet\n";
    out.code = exit_not_found;
    return out;
  }
  if (status == 404 && message.starts_with("Unknown request URL")) {
    // The caller listener answers every /admin/ path this way.
    std::cerr << "tollgatectl: " << url << " is not an admin listener (it answered: " << message
              << "); use the gateway's server.admin_listen address\n";
    out.code = exit_not_found;
    return out;
  }
  if (message.empty())
    std::cerr << "tollgatectl: the gateway at " << url << " answered " << status << " to " << request_line
              << (status == 404 ? " (is it a Tollgate admin listener?)" : "") << "\n";
  else
    std::cerr << "tollgatectl: " << message << (code.empty() ? "" : " (" + code + ")") << "\n";

  switch (status) {
    case 400:
    case 422:
      std::cerr << "Run 'tollgatectl " << c.cmd.name() << " --help' for usage.\n";
      out.code = exit_usage;
      break;
    case 401:
    case 403: out.code = exit_auth; break;
    case 404: out.code = exit_not_found; break;
    default: out.code = exit_failure; break;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Output

/// --json: the answer as the gateway sent it.
void print_raw(const answer& r) {
  std::cout << r.raw;
  if (!r.raw.ends_with('\n')) std::cout << '\n';
}

void print_record(const json::value& v) {
  if (!v.is_object()) {
    std::cout << json::serialize(v) << '\n';
    return;
  }
  std::vector<field_row> rows;
  flatten(v.get_object(), "", rows);
  print_fields(std::cout, rows);
}

/// A record that carries a new secret in `key`: the record, the secret last, a warning on stderr.
int print_with_secret(const context& c, const answer& r) {
  const json::value* key = r.body.is_object() ? r.body.get_object().if_contains("key") : nullptr;
  if (c.g.json) print_raw(r);
  else {
    std::vector<field_row> rows;
    if (r.body.is_object()) {
      json::object rest = r.body.get_object();
      rest.erase("key");
      flatten(rest, "", rows);
    }
    if (key) rows.emplace_back("key", format_value("key", *key));
    print_fields(std::cout, rows);
  }
  if (!key || !key->is_string()) {
    std::cerr << "tollgatectl: the gateway's answer has no key secret\n";
    return exit_failure;
  }
  // The secret exists nowhere else: output that could not be written (a full disk, a closed
  // pipe) is a failure, not a success with the key lost.
  std::cout.flush();
  if (!std::cout) {
    const json::value* id = r.body.get_object().if_contains("id");
    std::cerr << "tollgatectl: could not write the new secret to standard output; it is lost: revoke key "
              << (id && id->is_string() ? string(id->get_string()) : string("(unknown id)")) << " and create another\n";
    return exit_failure;
  }
  std::cerr << "tollgatectl: save the key now: its secret is shown only this once and cannot be retrieved again\n";
  return exit_ok;
}

int print_record_answer(const context& c, const answer& r) {
  if (c.g.json) print_raw(r);
  else print_record(r.body);
  return exit_ok;
}

/// A list answer as a table, then any other members (totals) as fields.
int print_list_answer(const context& c, const answer& r) {
  if (c.g.json) {
    print_raw(r);
    return exit_ok;
  }
  const json::array* list = find_list(r.body);
  if (!list) {
    print_record(r.body);
    return exit_ok;
  }
  print_table(std::cout, *list);
  if (r.body.is_object()) {
    // Other members (a usage answer's totals) follow as fields; a list's own framing does not.
    json::object rest;
    for (const auto& [k, v] : r.body.get_object())
      if (!(v.is_array() && &v.get_array() == list) && k != "object" && k != "first_id" && k != "last_id" &&
          k != "has_more")
        rest[k] = v;
    if (!rest.empty()) {
      std::vector<field_row> rows;
      flatten(rest, "", rows);
      std::cout << '\n';
      print_fields(std::cout, rows);
    }
  }
  return exit_ok;
}

// ---------------------------------------------------------------------------------------------
// Verbs

/// A key's URL. A whole key pasted in place of its id (`key revoke tg_<id>_<secret>`, a leaked
/// key) is cut to its id here, so the secret never goes on the wire: pointed at the wrong
/// listener, or through a proxy that logs URLs, nothing would mask it.
string key_path(const string& given) {
  const auto k = policy::parse_key(given);
  return "/admin/v1/keys/" + encode_component(k ? string(k->id) : given);
}
string team_path(const string& name) { return "/admin/v1/teams/" + encode_component(name); }

/// Appends `&name=value` (or `?name=value`) for each option present.
string with_query(string path, const arguments& a, std::initializer_list<std::pair<string_view, string_view>> params) {
  char sep = '?';
  for (auto [opt, param] : params)
    if (const string* v = a.get(opt)) {
      path += sep;
      path += string(param) + "=" + encode_component(*v);
      sep = '&';
    }
  return path;
}

/// Offline: the digest of a key for the configuration file's `keys` (the gateway stores and
/// compares only digests). The key comes on standard input, never on the command line, where
/// the shell's history and `ps` would show it.
int key_digest(const context& c) {
  string pepper;
  if (const string* f = c.a.get("pepper-file")) {
    // Read exactly as the gateway reads `auth.pepper: file:F` (only a trailing newline dropped):
    // any other trimming would print a digest the gateway never computes.
    string why;
    auto p = config::resolve_secret("file:" + *f, why);
    if (!p) return usage_error(c, "cannot read pepper file '" + *f + "'");
    pepper = std::move(*p);
    if (pepper.empty()) return usage_error(c, "pepper file '" + *f + "' is empty");
  }
  string line;
  std::getline(std::cin, line);
  line = trim_space(std::move(line));
  if (line.empty())
    return usage_error(c, "'key digest' reads a key tg_<id>_<secret>, or a secret, on standard input; it got none");
  string id, secret;
  if (line.starts_with("tg_")) {
    const auto k = policy::parse_key(line);
    if (!k)  // (the input is never echoed: it is a secret)
      return usage_error(c, "not a key of the form tg_<id>_<secret>: the id is 1-64 letters and digits, the secret 1-256");
    id = string(k->id);
    secret = string(k->secret);
  } else {
    // A bare secret is checked by the gateway's own parser, under a placeholder id.
    if (!policy::parse_key("tg_x_" + line))
      return usage_error(c, "a key's secret is 1-256 letters and digits (e.g. `openssl rand -hex 32`), and this one is not");
    secret = std::move(line);
  }
  const string digest = policy::digest_secret(secret, pepper);  // (throws, printing nothing, if OpenSSL refuses the pepper)
  if (!id.empty()) std::cout << "id: " << id << "\n";
  std::cout << "digest: " << digest << "\n";
  return exit_ok;
}

int key_create(const context& c) {
  string err;
  const string* team = required(c, "team", err);
  if (!err.empty()) return usage_error(c, err);
  json::object body{{"team", *team}};
  if (const string* n = c.a.get("name")) body["name"] = *n;
  if (err = read_models(c.a, body); !err.empty()) return usage_error(c, err);
  json::object limits, budget;
  if (err = read_limits(c.a, limits, budget, true); !err.empty()) return usage_error(c, err);
  if (!limits.empty()) body["limits"] = std::move(limits);
  if (!budget.empty()) body["budget"] = std::move(budget);
  if (err = read_uint(c.a, "expires-unix", body, "expires_unix"); !err.empty()) return usage_error(c, err);
  const string check = "A key may have been created whose secret nobody was shown: list the team's keys (tollgatectl "
                       "key list --team " + printable(*team) + ") and revoke one you do not know.";
  auto r = call(c, http::verb::post, "/admin/v1/keys", &body, check);
  return r.code ? r.code : print_with_secret(c, r);
}

/// A paged listing (`?limit=&after=`), read page by page into one list: every record, or the
/// first --limit of them (from --after). More left past --limit is said on standard error, with
/// the --after that reads on.
int list_pages(const context& c, const string& path, string_view noun) {
  std::uint64_t wanted = std::numeric_limits<std::uint64_t>::max();
  if (const string* v = c.a.get("limit"); v && (!parse_uint(*v, wanted) || wanted == 0))
    return usage_error(c, "--limit must be a positive integer, not '" + *v + "'");
  string after = c.a.get("after") ? *c.a.get("after") : string();
  if (c.a.get("after") && after.empty()) return usage_error(c, "--after is empty: give the id or name to list after");
  json::array data;
  bool more = false;
  for (;;) {
    const std::uint64_t page = std::min<std::uint64_t>(1000, wanted - data.size());
    string target = path + (path.find('?') == string::npos ? "?" : "&") + "limit=" + std::to_string(page);
    if (!after.empty()) target += "&after=" + encode_component(after);
    auto r = call(c, http::verb::get, target);
    if (r.code) return r.code;
    const json::object* o = r.body.if_object();
    const json::array* d = o ? find_list(r.body) : nullptr;
    if (!d) {  // (a gateway before paging, or not a list: shown as it came)
      return print_list_answer(c, r);
    }
    for (const auto& v : *d) data.push_back(v);
    const json::value* has_more = o->if_contains("has_more");
    const json::value* last = o->if_contains("last_id");
    more = has_more && has_more->is_bool() && has_more->get_bool();
    if (!more) break;
    if (!last || !last->is_string() || last->get_string() == after || d->empty()) {
      std::cerr << "tollgatectl: the gateway said there are more " << noun << " but gave no new last_id; stopping\n";
      return exit_failure;
    }
    after = string(last->get_string());
    if (data.size() >= wanted) break;
  }
  answer all;
  all.code = exit_ok;
  json::object body{{"object", "list"}, {"data", std::move(data)}, {"has_more", more}};
  if (more) body["last_id"] = after;
  all.raw = json::serialize(body);
  all.body = std::move(body);
  const int code = print_list_answer(c, all);
  if (more) std::cerr << "tollgatectl: more " << noun << " follow; list them with --after " << printable(after) << "\n";
  return code;
}

int key_list(const context& c) {
  return list_pages(c, with_query("/admin/v1/keys", c.a, {{"team", "team"}}), "keys");
}

int key_show(const context& c) {
  auto r = call(c, http::verb::get, key_path(c.a.positional[0]));
  return r.code ? r.code : print_record_answer(c, r);
}

int key_revoke(const context& c) {
  auto r = call(c, http::verb::delete_, key_path(c.a.positional[0]), nullptr,
                "Revoking again is safe: tollgatectl key revoke " + printable(c.a.positional[0]) + ".");
  return r.code ? r.code : print_record_answer(c, r);
}

int key_rotate(const context& c) {
  json::object body{{"overlap_seconds", 0}};
  if (auto err = read_uint(c.a, "overlap-seconds", body, "overlap_seconds"); !err.empty()) return usage_error(c, err);
  // (With no overlap, a rotation made has cut the old secret off and shown the new one to nobody.)
  auto r = call(c, http::verb::post, key_path(c.a.positional[0]) + "/rotate", &body,
                "If it was, its new secret was shown to nobody: rotate the key again (tollgatectl key rotate " +
                    printable(c.a.positional[0]) + ") to get one.");
  return r.code ? r.code : print_with_secret(c, r);
}

int team_create(const context& c) {
  json::object body{{"name", c.a.positional[0]}};
  string err;
  if (err = read_models(c.a, body); !err.empty()) return usage_error(c, err);
  json::object limits, budget;
  if (err = read_limits(c.a, limits, budget, true); !err.empty()) return usage_error(c, err);
  if (!limits.empty()) body["limits"] = std::move(limits);
  if (!budget.empty()) body["budget"] = std::move(budget);
  auto r = call(c, http::verb::post, "/admin/v1/teams", &body,
                "Check with tollgatectl team show " + printable(c.a.positional[0]) + ".");
  return r.code ? r.code : print_record_answer(c, r);
}

int team_list(const context& c) { return list_pages(c, "/admin/v1/teams", "teams"); }

int team_show(const context& c) {
  auto r = call(c, http::verb::get, team_path(c.a.positional[0]));
  return r.code ? r.code : print_record_answer(c, r);
}

int team_delete(const context& c) {
  auto r = call(c, http::verb::delete_, team_path(c.a.positional[0]), nullptr,
                "Deleting again is safe: tollgatectl team delete " + printable(c.a.positional[0]) + ".");
  return r.code ? r.code : print_record_answer(c, r);
}

int quota_show(const context& c) {
  string err;
  required(c, "team", err);
  if (!err.empty()) return usage_error(c, err);
  if (const string* k = c.a.get("key"); k && k->empty()) return usage_error(c, "--key needs a key id");
  auto r = call(c, http::verb::get, with_query("/admin/v1/budget", c.a, {{"team", "team"}, {"key", "key"}}));
  if (r.code) return r.code;
  if (c.g.json || !r.body.is_object()) return print_record_answer(c, r);
  const auto& o = r.body.get_object();
  std::vector<field_row> rows;
  if (auto* t = o.if_contains("team")) rows.emplace_back("team", format_value("team", *t));
  if (auto* k = o.if_contains("key_id")) rows.emplace_back("key", format_value("key", *k));
  const auto spent = nano_of(o, "spent"), reserved = nano_of(o, "reserved"), limit = nano_of(o, "limit");
  rows.emplace_back("spent", spent ? format_usd_nano(*spent) : "-");
  rows.emplace_back("reserved", reserved ? format_usd_nano(*reserved) : "-");
  rows.emplace_back("limit", limit ? format_usd_nano(*limit) : "none");
  if (limit) rows.emplace_back("remaining", format_usd_nano(remaining_nano(*limit, spent.value_or(0), reserved.value_or(0))));
  print_fields(std::cout, rows);
  return exit_ok;
}

int quota_set(const context& c) {
  string err;
  const string* team = required(c, "team", err);
  if (!err.empty()) return usage_error(c, err);
  json::object body{{"team", *team}};
  if (const string* k = c.a.get("key")) {
    if (k->empty()) return usage_error(c, "--key needs a key id");
    body["key_id"] = *k;
  }
  json::object limits, budget;
  if (err = read_limits(c.a, limits, budget, false); !err.empty()) return usage_error(c, err);
  if (limits.empty() && budget.empty())
    return usage_error(c, "'quota set' needs at least one of --rpm, --tpm, --concurrency, --budget-usd, --period, --soft");
  for (auto& [k, v] : limits) body[k] = v;
  if (!budget.empty()) body["budget"] = std::move(budget);
  auto r = call(c, http::verb::put, "/admin/v1/quotas", &body, "Setting the same quota again is safe.");
  return r.code ? r.code : print_record_answer(c, r);
}

int usage_report(const context& c) {
  for (string_view t : {"from", "to"})
    if (const string* v = c.a.get(t); v && !valid_time(*v))
      return usage_error(c, "--" + string(t) + " must be unix seconds or an RFC 3339 time (2025-01-31T00:00:00Z), not '" + *v + "'");
  auto r = call(c, http::verb::get,
                with_query("/admin/v1/usage", c.a, {{"team", "team"}, {"key", "key"}, {"model", "model"}, {"from", "from"}, {"to", "to"}}));
  return r.code ? r.code : print_list_answer(c, r);
}

const std::vector<command>& commands() {
  static const std::vector<command> table{
      {"key", "create", "key create --team T [--name N] [--models a,b] [limits] [--expires-unix N]",
       "Creates an API key for team T and prints it with its secret: the only time the secret is shown.",
       "  --team T           the key's team (required; must exist in the configuration)\n"
       "  --name N           a label for people\n"
       "  --models a,b       model names or globs the key may use (default: the team's)\n"
       "  --expires-unix N   expiry time in unix seconds (default 0: never)\n",
       {"team", "name", "models", "rpm", "tpm", "concurrency", "budget-usd", "period", "soft", "expires-unix"},
       {},
       key_create},
      {"key", "digest", "key digest [--pepper-file F] < key",
       "Prints the digest of the key (tg_<id>_<secret>) or secret read on standard input, for a key\n"
       "declared in the configuration file (keys: {id, team, digest}). Offline: no gateway is called.\n"
       "The secret is 1-256 letters and digits; e.g. printf 'tg_ci1_%s' \"$(openssl rand -hex 32)\".",
       "  --pepper-file F    a file holding the gateway's auth.pepper, read as the gateway reads\n"
       "                     auth.pepper: file:F (a trailing newline dropped): the digest is then\n"
       "                     hmac-sha256:<hex>\n",
       {"pepper-file"}, {}, key_digest},
      {"key", "list", "key list [--team T] [--limit N] [--after ID]",
       "Lists keys, of team T or all, in id order (revoked ones included).",
       "  --team T           only keys of team T\n"
       "  --limit N          at most N keys (default: all)\n"
       "  --after ID         only keys after id ID (where a --limit listing stopped)\n",
       {"team", "limit", "after"}, {}, key_list},
      {"key", "show", "key show ID", "Shows key ID (never its secret).", "", {}, {"ID"}, key_show},
      {"key", "revoke", "key revoke ID",
       "Revokes key ID: every replica refuses it within auth.key_cache_ms. Keys from the configuration\n"
       "file cannot be revoked here.",
       "", {}, {"ID"}, key_revoke},
      {"key", "rotate", "key rotate ID [--overlap-seconds N]",
       "Gives key ID a new secret and prints it (shown only this once).",
       "  --overlap-seconds N  how long the old secret keeps working (default 0: it stops at once)\n",
       {"overlap-seconds"}, {"ID"}, key_rotate},
      {"team", "create", "team create NAME [--models a,b] [limits]", "Creates team NAME.",
       "  --models a,b       model names or globs the team's keys may use\n",
       {"models", "rpm", "tpm", "concurrency", "budget-usd", "period", "soft"},
       {"NAME"},
       team_create},
      {"team", "list", "team list [--limit N] [--after NAME]", "Lists teams, in name order.",
       "  --limit N          at most N teams (default: all)\n"
       "  --after NAME       only teams after NAME (where a --limit listing stopped)\n",
       {"limit", "after"}, {}, team_list},
      {"team", "show", "team show NAME", "Shows team NAME.", "", {}, {"NAME"}, team_show},
      {"team", "delete", "team delete NAME", "Deletes team NAME.", "", {}, {"NAME"}, team_delete},
      {"quota", "show", "quota show --team T [--key ID]",
       "Shows the budget of team T (or of its key ID) in the current period: spent, reserved by\n"
       "requests in flight, limit and what remains.",
       "  --team T           the team (required)\n"
       "  --key ID           one of the team's keys instead of the whole team\n",
       {"team", "key"}, {}, quota_show},
      {"quota", "set", "quota set --team T [--key ID] [limits]",
       "Sets the rate limits and budget of team T, or of its key ID. Options left out are unchanged.",
       "  --team T           the team (required)\n"
       "  --key ID           one of the team's keys instead of the whole team\n",
       {"team", "key", "rpm", "tpm", "concurrency", "budget-usd", "period", "soft"}, {}, quota_set},
      {"usage", "", "usage [--team T] [--key ID] [--model M] [--from TIME] [--to TIME]",
       "Reports requests, tokens and cost, filtered by team, key, model and time range.",
       "  --team T           only team T\n"
       "  --key ID           only key ID\n"
       "  --model M          only model M\n"
       "  --from TIME        from TIME (unix seconds or RFC 3339, e.g. 2025-01-31T00:00:00Z)\n"
       "  --to TIME          until TIME (same forms)\n",
       {"team", "key", "model", "from", "to"}, {}, usage_report},
  };
  return table;
}

bool takes_limits(const command& c) {
  return std::find(c.value_opts.begin(), c.value_opts.end(), "budget-usd") != c.value_opts.end();
}

void print_command_help(const command& c) {
  std::cout << "usage: tollgatectl " << c.synopsis << "\n\n" << c.summary << "\n";
  if (!c.details.empty() || takes_limits(c)) {
    std::cout << "\nOptions:\n" << c.details;
    if (takes_limits(c)) std::cout << limit_options;
  }
  std::cout << global_footer;
}

void print_noun_help(string_view noun) {
  std::cout << "usage: tollgatectl " << noun << " <";
  bool first = true;
  for (const auto& c : commands())
    if (c.noun == noun) {
      std::cout << (first ? "" : "|") << c.verb;
      first = false;
    }
  std::cout << "> [options]\n\nCommands:\n";
  for (const auto& c : commands())
    if (c.noun == noun) std::cout << "  tollgatectl " << c.synopsis << "\n";
  std::cout << "\nRun 'tollgatectl " << noun << " <command> --help' for a command's options.\n" << global_footer;
}

bool is_noun(string_view s) {
  for (const auto& c : commands())
    if (c.noun == s) return true;
  return false;
}

const command* find_command(string_view noun, string_view verb) {
  for (const auto& c : commands())
    if (c.noun == noun && c.verb == verb) return &c;
  return nullptr;
}

// ---------------------------------------------------------------------------------------------
// Command line

bool is_help(string_view a) { return a == "--help" || a == "-h"; }

/// Splits "--name=value" into name and inline value.
std::pair<string_view, std::optional<string_view>> split_option(string_view a) {
  a.remove_prefix(2);
  const auto eq = a.find('=');
  if (eq == string_view::npos) return {a, std::nullopt};
  return {a.substr(0, eq), a.substr(eq + 1)};
}

/// Reads the value of option `name` at argv[i] (inline or the next argument); advances i.
std::optional<string> option_value(int argc, char** argv, int& i, string_view name, std::optional<string_view> inline_value,
                                   string& err) {
  if (inline_value) return string(*inline_value);
  // A value that looks like an option is almost always a forgotten value (--team --name x).
  if (i + 1 >= argc || string_view(argv[i + 1]).starts_with("--")) {
    err = "option '--" + string(name) + "' needs a value";
    return std::nullopt;
  }
  return string(argv[++i]);
}

/// Handles a global option at argv[i]. Returns false if argv[i] is not one; sets `err` when it is,
/// but is malformed.
bool global_option(int argc, char** argv, int& i, globals& g, string& err) {
  auto [name, inline_value] = split_option(argv[i]);
  if (name == "json") {
    if (inline_value) err = "option '--json' takes no value";
    g.json = true;
    return true;
  }
  if (name == "url" || name == "token-file") {
    auto v = option_value(argc, argv, i, name, inline_value, err);
    if (v && v->empty()) err = "option '--" + string(name) + "' needs a value";
    if (v) (name == "url" ? g.url : g.token_file) = std::move(*v);
    return true;
  }
  return false;
}

int run_command(const command& cmd, int argc, char** argv, int first, globals& g) {
  // --help wins over everything else after the command, so `key create --help` needs no --team.
  // But an option's value is never taken for it: `key create --name -h` names the key "-h" (a
  // value is what follows a value option unless it starts with "--", as option_value reads it).
  for (int i = first; i < argc && string_view(argv[i]) != "--"; ++i) {
    const string_view arg = argv[i];
    if (is_help(arg)) {
      print_command_help(cmd);
      return exit_ok;
    }
    if (!arg.starts_with("--") || arg.find('=') != string_view::npos || i + 1 >= argc ||
        string_view(argv[i + 1]).starts_with("--"))
      continue;
    const string_view name = arg.substr(2);
    if (name == "url" || name == "token-file" ||
        std::find(cmd.value_opts.begin(), cmd.value_opts.end(), name) != cmd.value_opts.end())
      ++i;  // its value
  }
  arguments a;
  bool options_done = false;
  for (int i = first; i < argc; ++i) {
    const string_view arg = argv[i];
    if (options_done || !arg.starts_with("-") || arg == "-") {
      a.positional.emplace_back(arg);
      continue;
    }
    if (arg == "--") {
      options_done = true;
      continue;
    }
    if (!arg.starts_with("--")) return usage_error("unknown option '" + string(arg) + "' for '" + cmd.name() + "'", cmd.name());
    string err;
    if (global_option(argc, argv, i, g, err)) {
      if (!err.empty()) return usage_error(err, cmd.name());
      continue;
    }
    auto [name, inline_value] = split_option(arg);
    if (std::find(cmd.value_opts.begin(), cmd.value_opts.end(), name) == cmd.value_opts.end())
      return usage_error("unknown option '--" + string(name) + "' for '" + cmd.name() + "'", cmd.name());
    auto v = option_value(argc, argv, i, name, inline_value, err);
    if (!v) return usage_error(err, cmd.name());
    // A repeated option was the last one, silently: `--team search --team nosuch`.
    if (a.get(name)) return usage_error("--" + string(name) + " is given more than once", cmd.name());
    // An empty team (an unset $TEAM) would list or change every team's keys.
    if (name == "team" && v->empty()) return usage_error("--team needs a team name", cmd.name());
    // A whole key where its id belongs is cut to the id here, as for key paths: the secret never
    // goes on the wire (a query string is what proxies log).
    if (name == "key")
      if (const auto k = policy::parse_key(*v)) *v = string(k->id);
    a.opts[string(name)] = std::move(*v);
  }
  if (a.positional.size() < cmd.positionals.size())
    return usage_error("'" + cmd.name() + "' needs " + string(cmd.positionals[a.positional.size()]), cmd.name());
  if (a.positional.size() > cmd.positionals.size())
    return usage_error("unexpected argument '" + a.positional[cmd.positionals.size()] + "' for '" + cmd.name() + "'",
                       cmd.name());
  for (std::size_t i = 0; i < a.positional.size(); ++i)
    if (a.positional[i].empty()) return usage_error(string(cmd.positionals[i]) + " must not be empty", cmd.name());
  return cmd.run(context{cmd, g, a});
}

int run(int argc, char** argv) {
  globals g;
  int i = 1;
  for (; i < argc; ++i) {
    const string_view arg = argv[i];
    if (!arg.starts_with("-") || arg == "-") break;
    if (is_help(arg)) {
      std::cout << top_help;
      return exit_ok;
    }
    if (arg == "--version") {
      std::cout << "tollgatectl " << version << "\n";
      return exit_ok;
    }
    string err;
    if (arg.starts_with("--") && global_option(argc, argv, i, g, err)) {
      if (!err.empty()) return usage_error(err, "");
      continue;
    }
    return usage_error("unknown option '" + string(arg) + "'", "");
  }
  if (i >= argc) {
    std::cerr << top_help;
    return exit_usage;
  }
  const string_view noun = argv[i];
  if (noun == "help") {
    // help [noun [verb]]
    if (i + 1 >= argc) std::cout << top_help;
    else if (string_view(argv[i + 1]) == "audit") {
      char audit_arg[] = "audit", help_arg[] = "--help";
      char* help_argv[] = {audit_arg, help_arg};
      return run_audit(2, help_argv);
    } else if (const command* c = find_command(argv[i + 1], i + 2 < argc ? argv[i + 2] : ""); c) print_command_help(*c);
    else if (is_noun(argv[i + 1])) print_noun_help(argv[i + 1]);
    else return usage_error("unknown command '" + string(argv[i + 1]) + "'", "");
    return exit_ok;
  }
  if (noun == "audit") return run_audit(argc - i, argv + i, g.json);  // argv'[0] == "audit"
  if (!is_noun(noun)) return usage_error("unknown command '" + string(noun) + "'", "");
  if (const command* c = find_command(noun, ""); c) return run_command(*c, argc, argv, i + 1, g);

  if (i + 1 >= argc) return usage_error("'" + string(noun) + "' needs a command", noun);
  const string_view verb = argv[i + 1];
  if (is_help(verb)) {
    print_noun_help(noun);
    return exit_ok;
  }
  const command* c = find_command(noun, verb);
  if (!c) return usage_error("unknown command '" + string(noun) + " " + string(verb) + "'", noun);
  return run_command(*c, argc, argv, i + 2, g);
}

}  // namespace
}  // namespace tollgate::ctl

int main(int argc, char** argv) {
  // Nothing may escape: every failure maps to a documented exit code.
  try {
    const int rc = tollgate::ctl::run(argc, argv);
    // An answer that could not be written (a full disk, a closed pipe) is no success.
    std::cout.flush();
    if (rc == tollgate::ctl::exit_ok && !std::cout) {
      std::cerr << "tollgatectl: could not write the output\n";
      return tollgate::ctl::exit_failure;
    }
    return rc;
  } catch (const std::exception& e) {
    std::cerr << "tollgatectl: " << e.what() << "\n";
  } catch (...) {
    std::cerr << "tollgatectl: unexpected error\n";
  }
  return tollgate::ctl::exit_failure;
}
