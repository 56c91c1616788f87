// SPDX-License-Identifier: Apache-2.0
// loadgen: an open-loop, fixed-rate HTTP/1.1 load generator for latency percentiles (wrk2 is
// not packaged in Debian, and h2load prints no percentiles). Requests leave on a fixed
// timetable; latency counts from the scheduled send time, so a stalled server cannot hide its
// queueing (coordinated omission). Single thread, keep-alive connections.
//
//   loadgen --url http://127.0.0.1:8080/v1/chat/completions --rate 2000 --duration 10
//           [--connections 64] [--body FILE] [--header 'K: V']... [--warmup 2] [--stream]
//           [--samples FILE]
// Prints one JSON line with p50/p90/p99/p999/max latency (ms) and, with --stream, the same for
// time to first body byte. --samples writes every measured request as one line, "scheduled send
// (ms since measuring began) latency_ms ttfb_ms", to tell periodic stalls from scattered ones.
#include <boost/asio.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <map>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

namespace net = boost::asio;
using tcp = net::ip::tcp;
using clock_type = std::chrono::steady_clock;
using boost::system::error_code;

namespace {

struct options {
  std::string host = "127.0.0.1", port = "80", path = "/";
  double rate = 1000, duration = 10, warmup = 1;
  int connections = 64;
  std::string body;
  std::vector<std::string> headers;
  bool stream = false;
  std::string samples_file;
};

struct sample {
  double at_ms, total_ms, ttfb_ms;
};

struct state {
  options opt;
  std::string request;
  std::deque<clock_type::time_point> due;  // scheduled send times not yet taken by a connection
  std::vector<sample> samples;
  std::size_t errors = 0, sent = 0;
  std::map<std::string, std::size_t> error_kinds;  // why requests failed, for the report
  void fail(const std::string& why) {
    ++errors;
    ++error_kinds[why];
  }
  clock_type::time_point start, measure_from, stop;
  bool producing = true;
  std::vector<net::steady_timer*> idle;  // connections waiting for a send time
  void wake(std::size_t n) {
    while (n-- && !idle.empty()) {
      idle.back()->cancel();
      idle.pop_back();
    }
  }
};

/// Reads one response (Content-Length or chunked) and returns when complete. Sets ttfb when the
/// first body byte arrives.
net::awaitable<bool> read_response(tcp::socket& s, std::string& buf, clock_type::time_point& first_body, std::string& why) {
  auto token = net::as_tuple(net::use_awaitable);
  std::size_t head_end;
  while ((head_end = buf.find("\r\n\r\n")) == std::string::npos) {
    char tmp[16384];
    auto [ec, n] = co_await s.async_read_some(net::buffer(tmp), token);
    if (ec) {
      why = "read head: " + ec.message();
      co_return false;
    }
    buf.append(tmp, n);
  }
  std::string head = buf.substr(0, head_end + 4);
  buf.erase(0, head_end + 4);
  for (auto& c : head) c = char(std::tolower(static_cast<unsigned char>(c)));
  if (head.rfind("http/1.1 2", 0) != 0) {
    why = "status " + head.substr(9, 3);
    co_return false;
  }
  auto cl = head.find("content-length:");
  const bool chunked = head.find("transfer-encoding: chunked") != std::string::npos;
  auto need_more = [&]() -> net::awaitable<bool> {
    char tmp[16384];
    auto [ec, n] = co_await s.async_read_some(net::buffer(tmp), token);
    if (ec) {
      why = "read body: " + ec.message();
      co_return false;
    }
    if (first_body == clock_type::time_point{}) first_body = clock_type::now();
    buf.append(tmp, n);
    co_return true;
  };
  if (!buf.empty()) first_body = clock_type::now();
  if (cl != std::string::npos && !chunked) {
    std::size_t len = std::strtoul(head.c_str() + cl + 15, nullptr, 10);
    while (buf.size() < len)
      if (!co_await need_more()) co_return false;
    buf.erase(0, len);
    co_return true;
  }
  if (!chunked) co_return false;
  for (;;) {  // chunked: walk chunk sizes until the last chunk
    std::size_t eol;
    while ((eol = buf.find("\r\n")) == std::string::npos)
      if (!co_await need_more()) co_return false;
    std::size_t size = std::strtoul(buf.c_str(), nullptr, 16);
    if (size == 0) {
      while (buf.size() < eol + 4)
        if (!co_await need_more()) co_return false;
      buf.erase(0, eol + 4);
      co_return true;
    }
    while (buf.size() < eol + 2 + size + 2)
      if (!co_await need_more()) co_return false;
    buf.erase(0, eol + 2 + size + 2);
  }
}

net::awaitable<void> connection(state& st, tcp::resolver::results_type endpoints) {
  auto token = net::as_tuple(net::use_awaitable);
  auto ex = co_await net::this_coro::executor;
  tcp::socket s(ex);
  std::string buf;
  net::steady_timer idle(ex);
  bool connected = false;
  while (st.producing || !st.due.empty()) {
    if (st.due.empty()) {  // sleep until the scheduler posts a send time (it cancels this wait)
      idle.expires_at(clock_type::time_point::max());
      st.idle.push_back(&idle);
      co_await idle.async_wait(token);
      continue;
    }
    auto scheduled = st.due.front();
    st.due.pop_front();
    if (!connected) {
      auto [ec, ep] = co_await net::async_connect(s, endpoints, token);
      if (ec) {
        st.fail("connect: " + ec.message());
        continue;
      }
      s.set_option(tcp::no_delay(true));
      connected = true;
    }
    ++st.sent;
    auto [wec, wn] = co_await net::async_write(s, net::buffer(st.request), token);
    clock_type::time_point first_body{};
    std::string why = wec ? "write: " + wec.message() : "";
    bool ok = !wec && co_await read_response(s, buf, first_body, why);
    auto now = clock_type::now();
    if (!ok) {
      st.fail(why.empty() ? "malformed response" : why);
      error_code ignored;
      s.close(ignored);
      s = tcp::socket(ex);
      buf.clear();
      connected = false;
      continue;
    }
    if (scheduled >= st.measure_from) {
      double total = std::chrono::duration<double, std::milli>(now - scheduled).count();
      double ttfb = std::chrono::duration<double, std::milli>((first_body == clock_type::time_point{} ? now : first_body) - scheduled).count();
      double at = std::chrono::duration<double, std::milli>(scheduled - st.measure_from).count();
      st.samples.push_back({at, total, ttfb});
    }
  }
}

net::awaitable<void> scheduler(state& st) {
  auto ex = co_await net::this_coro::executor;
  net::steady_timer t(ex);
  const auto interval = std::chrono::duration<double>(1.0 / st.opt.rate);
  std::size_t i = 0;
  for (;;) {
    auto at = st.start + std::chrono::duration_cast<clock_type::duration>(interval * double(i));
    if (at >= st.stop) break;
    t.expires_at(at);
    co_await t.async_wait(net::as_tuple(net::use_awaitable));
    // Everything due by now enters the queue (a late timer releases a burst, as an open loop must).
    auto now = clock_type::now();
    std::size_t released = 0;
    for (;;) {
      auto when = st.start + std::chrono::duration_cast<clock_type::duration>(interval * double(i));
      if (when > now || when >= st.stop) break;
      st.due.push_back(when);
      ++i;
      ++released;
    }
    st.wake(released);
  }
  st.producing = false;
  st.wake(st.idle.size());
}

double pct(std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  std::size_t k = std::min(v.size() - 1, std::size_t(p / 100.0 * double(v.size())));
  std::nth_element(v.begin(), v.begin() + long(k), v.end());
  return v[k];
}

}  // namespace

int main(int argc, char** argv) {
  state st;
  auto& o = st.opt;
  std::string url;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::cerr << "loadgen: " << a << " needs a value\n";
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--url") url = next();
    else if (a == "--rate") o.rate = std::stod(next());
    else if (a == "--duration") o.duration = std::stod(next());
    else if (a == "--warmup") o.warmup = std::stod(next());
    else if (a == "--connections") o.connections = std::stoi(next());
    else if (a == "--header") o.headers.push_back(next());
    else if (a == "--stream") o.stream = true;
    else if (a == "--samples") o.samples_file = next();
    else if (a == "--body") {
      std::ifstream in(next(), std::ios::binary);
      std::ostringstream ss;
      ss << in.rdbuf();
      o.body = ss.str();
    } else {
      std::cerr << "loadgen: unknown argument " << a << "\n";
      return 2;
    }
  }
  if (url.rfind("http://", 0) != 0) {
    std::cerr << "loadgen: --url http://host:port/path is required\n";
    return 2;
  }
  std::string rest = url.substr(7);
  auto slash = rest.find('/');
  std::string hostport = rest.substr(0, slash);
  o.path = slash == std::string::npos ? "/" : rest.substr(slash);
  auto colon = hostport.rfind(':');
  o.host = hostport.substr(0, colon);
  o.port = colon == std::string::npos ? "80" : hostport.substr(colon + 1);

  st.request = (o.body.empty() ? "GET " : "POST ") + o.path + " HTTP/1.1\r\nHost: " + hostport + "\r\n";
  for (auto& h : o.headers) st.request += h + "\r\n";
  if (!o.body.empty()) st.request += "Content-Length: " + std::to_string(o.body.size()) + "\r\n";
  st.request += "\r\n" + o.body;

  net::io_context ioc(1);
  auto endpoints = tcp::resolver(ioc).resolve(o.host, o.port);
  st.start = clock_type::now() + std::chrono::milliseconds(50);
  st.measure_from = st.start + std::chrono::duration_cast<clock_type::duration>(std::chrono::duration<double>(o.warmup));
  st.stop = st.measure_from + std::chrono::duration_cast<clock_type::duration>(std::chrono::duration<double>(o.duration));
  st.samples.reserve(std::size_t(o.rate * o.duration) + 16);
  net::co_spawn(ioc, scheduler(st), net::detached);
  for (int c = 0; c < o.connections; ++c) net::co_spawn(ioc, connection(st, endpoints), net::detached);
  ioc.run();

  if (!o.samples_file.empty()) {
    std::FILE* f = std::fopen(o.samples_file.c_str(), "w");
    if (!f) {
      std::cerr << "loadgen: cannot write " << o.samples_file << "\n";
      return 2;
    }
    for (auto& s : st.samples) std::fprintf(f, "%.3f %.3f %.3f\n", s.at_ms, s.total_ms, s.ttfb_ms);
    std::fclose(f);
  }
  std::vector<double> total, ttfb;
  for (auto& s : st.samples) {
    total.push_back(s.total_ms);
    ttfb.push_back(s.ttfb_ms);
  }
  const double achieved = double(st.samples.size()) / o.duration;
  double mx = total.empty() ? 0 : *std::max_element(total.begin(), total.end());
  std::printf(
      "{\"requests\":%zu,\"errors\":%zu,\"rate_target\":%.0f,\"rate_achieved\":%.1f,\"p50_ms\":%.3f,\"p90_ms\":%.3f,"
      "\"p99_ms\":%.3f,\"p999_ms\":%.3f,\"max_ms\":%.3f,\"ttfb_p50_ms\":%.3f,\"ttfb_p99_ms\":%.3f}\n",
      st.samples.size(), st.errors, o.rate, achieved, pct(total, 50), pct(total, 90), pct(total, 99), pct(total, 99.9), mx,
      pct(ttfb, 50), pct(ttfb, 99));
  for (auto& [why, n] : st.error_kinds) std::fprintf(stderr, "loadgen: %zu failed: %s\n", n, why.c_str());
  return st.errors ? 1 : 0;
}
