// SPDX-License-Identifier: Apache-2.0
#include "gateway/audit/audit_reader.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>

#include <fcntl.h>
#include <unistd.h>

#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "gateway/audit/chain.hpp"

namespace tollgate::audit {
namespace fs = std::filesystem;
namespace json = boost::json;

std::vector<segment_file> list_segments(const std::string& dir, std::string& error) {
  std::vector<segment_file> out;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    error = dir + ": not a directory";
    return out;
  }
  for (auto& e : fs::directory_iterator(dir, ec)) {
    auto name = e.path().filename().string();
    auto id = parse_segment_name(name);
    if (!id || !e.is_regular_file(ec)) continue;
    out.push_back(segment_file{e.path().string(), name, id->instance, id->first_seq, std::uint64_t(e.file_size(ec))});
  }
  if (ec) error = dir + ": " + ec.message();
  std::sort(out.begin(), out.end(), [](const segment_file& a, const segment_file& b) {
    return a.instance != b.instance ? a.instance < b.instance : a.first_seq < b.first_seq;
  });
  return out;
}

std::optional<std::uint64_t> for_each_line(const segment_file& seg,
                                           const std::function<bool(std::string_view, std::uint64_t)>& on_line,
                                           const std::function<void(std::uint64_t)>& on_bytes, std::string& error) {
  int fd = ::open(seg.path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    error = seg.path + ": " + std::strerror(errno);
    return std::nullopt;
  }
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
  constexpr std::size_t chunk = 1 << 20;
  std::string buf;  // the unfinished line carried over, then the next chunk
  std::uint64_t lineno = 0;
  bool stopped = false;
  for (;;) {
    const std::size_t keep = buf.size();
    buf.resize(keep + chunk);
    ssize_t n = ::read(fd, buf.data() + keep, chunk);
    if (n < 0 && errno == EINTR) {
      buf.resize(keep);
      continue;
    }
    if (n < 0) {
      error = seg.path + ": " + std::strerror(errno);
      ::close(fd);
      return std::nullopt;
    }
    buf.resize(keep + std::size_t(n));
    if (n == 0) break;
    if (on_bytes) on_bytes(std::uint64_t(n));
    std::size_t start = 0;
    // Only the new bytes can hold a newline the carried-over part lacked.
    std::size_t scan = keep;
    while (true) {
      const void* p = std::memchr(buf.data() + scan, '\n', buf.size() - scan);
      if (!p) break;
      const std::size_t nl = std::size_t(static_cast<const char*>(p) - buf.data());
      ++lineno;
      if (!on_line(std::string_view(buf).substr(start, nl - start), lineno)) {
        stopped = true;
        break;
      }
      start = scan = nl + 1;
    }
    if (stopped) break;
    buf.erase(0, start);
  }
  ::close(fd);
  return stopped ? 0 : std::uint64_t(buf.size());
}

namespace {

struct checkpoint {
  std::uint64_t seq = 0;
  std::string hash;
  bool present = false;
  /// Set when a checkpoint file exists but is not one (the writer replaces it atomically, so a
  /// crash never leaves it half-written): damaged or replaced, which hides a cut end.
  std::string broken;
};

/// A count in a record (seq, kept_from, torn_bytes): nullopt unless a non-negative integer.
std::optional<std::uint64_t> count_of(const json::value* v) {
  if (!v || !v->is_number()) return std::nullopt;
  boost::system::error_code ec;
  const auto n = v->to_number<std::uint64_t>(ec);
  if (ec) return std::nullopt;
  return n;
}

checkpoint read_checkpoint(const std::string& dir, const std::string& instance) {
  checkpoint cp;
  const std::string path = dir + "/" + checkpoint_name(instance);
  std::error_code fec;
  const auto st = std::filesystem::status(path, fec);
  if (!std::filesystem::exists(st)) return cp;
  if (!std::filesystem::is_regular_file(st)) {
    cp.broken = "is not a file";
    return cp;
  }
  std::ifstream in(path);
  std::string text;
  if (!in || !std::getline(in, text)) {
    cp.broken = "cannot be read";
    return cp;
  }
  boost::system::error_code ec;
  auto v = json::parse(text, ec);
  if (ec || !v.is_object()) {
    cp.broken = "is not a JSON object";
    return cp;
  }
  auto& o = v.get_object();
  const auto seq = count_of(o.if_contains("seq"));
  const auto* h = o.if_contains("hash");
  if (!seq || *seq == 0) cp.broken = "has no seq of 1 or more";
  else if (!h || !h->is_string() || h->get_string().size() != 64) cp.broken = "has no SHA-256 hash";
  if (!cp.broken.empty()) return cp;
  cp.seq = *seq;
  cp.hash = std::string(h->get_string());
  cp.present = true;
  return cp;
}

std::string loc(const std::string& seg, std::uint64_t line) { return seg + ":" + std::to_string(line); }

/// Whether a writer holds the instance's lock (audit_log::open): the instance is running.
bool instance_writing(const std::string& dir, const std::string& instance) {
  const int fd = ::open((dir + "/" + instance + ".lock").c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;  // none: written by a gateway before the lock, or never locked
  const bool held = ::flock(fd, LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK;
  ::close(fd);  // (releases the shared lock if it was taken)
  return held;
}

/// Verifies one instance's segments (in order). Fills `r.problem` on the first problem.
void verify_instance(const std::string& dir, const std::vector<const segment_file*>& segs, verify_report& r,
                     const std::function<void(std::uint64_t)>& on_bytes) {
  const std::string& instance = segs.front()->instance;
  std::string prev_hash;  // hash of the last whole record; empty before the first
  std::uint64_t prev_seq = 0;
  std::string prev_loc, prev_seg;
  std::uint64_t prev_line = 0;
  std::uint64_t first_seq = 0;
  bool retention_seen = false;
  std::optional<std::uint64_t> kept_from;  // the latest retention record's first seq left
  // A torn tail waiting for the next segment's start record to account for it.
  struct torn_tail {
    std::string segment;
    std::uint64_t bytes;
  };
  std::optional<torn_tail> torn;
  // A seq that did not follow: decided (deleted or reordered) by whether the missing seq shows up.
  struct gap {
    std::uint64_t expected, found;
    verify_problem at;
  };
  std::optional<gap> pending_gap;
  const checkpoint cp = read_checkpoint(dir, instance);
  std::string hash_at_checkpoint;
  bool ends_with_stop = false;  // the last record is the writer's stop record

  auto problem = [&](std::string kind, const std::string& seg, std::uint64_t line, std::uint64_t seq, std::string msg) {
    if (!r.problem) r.problem = verify_problem{std::move(kind), seg, line, seq, std::move(msg)};
  };

  for (const segment_file* seg : segs) {
    ++r.segments;
    bool first_in_segment = true;
    std::string error;
    auto on_line = [&](std::string_view line, std::uint64_t lineno) -> bool {
      if (pending_gap) {
        // Scanning on only to classify a gap: does the missing seq appear later?
        if (auto h = parse_line_head(line); h && h->seq == pending_gap->expected) {
          auto p = pending_gap->at;
          p.kind = "reordered";
          p.message = "seq " + std::to_string(pending_gap->found) + " comes before seq " +
                      std::to_string(pending_gap->expected) + " (found later at " + loc(seg->name, lineno) +
                      "): records were reordered";
          r.problem = p;
          return false;
        }
        return true;
      }
      auto h = parse_line_head(line);
      if (!h) {
        problem("malformed", seg->name, lineno, prev_seq + 1,
                "line does not start with {\"seq\":N,\"prev\":\"<sha256>\", (edited or not an audit record)");
        return false;
      }
      if (torn && first_in_segment) {
        // The writer notes a torn tail it found at start in its first record.
        bool accounted = false;
        if (line.find("\"recovered\"") != std::string_view::npos) {
          boost::system::error_code ec;
          auto v = json::parse(line, ec);
          if (!ec && v.is_object())
            if (auto rec = v.get_object().if_contains("recovered"); rec && rec->is_object()) {
              auto& o = rec->get_object();
              auto s = o.if_contains("segment");
              auto b = o.if_contains("torn_bytes");
              accounted = s && s->is_string() && s->get_string() == torn->segment && count_of(b) == torn->bytes;
            }
        }
        if (!accounted) {
          problem("truncated", torn->segment, 0, prev_seq,
                  std::to_string(torn->bytes) + " bytes after the last whole record of " + torn->segment +
                      " (a torn or cut line) that the next segment does not account for");
          return false;
        }
        r.notes.push_back(torn->segment + ": " + std::to_string(torn->bytes) +
                          " torn bytes at its end, recorded by the writer at its next start (a crash mid-write)");
        torn.reset();
      }
      if (first_in_segment && h->seq != seg->first_seq) {
        const bool missing = h->seq > seg->first_seq;
        problem(missing ? "deleted" : "edited", seg->name, lineno, h->seq,
                "the segment is named for seq " + std::to_string(seg->first_seq) + " but starts with seq " +
                    std::to_string(h->seq) +
                    (missing ? ": records " + std::to_string(seg->first_seq) + ".." + std::to_string(h->seq - 1) +
                                   " at its start are missing (deleted)"
                             : ""));
        return false;
      }
      first_in_segment = false;
      const std::string cur_hash = sha256_hex(line);
      if (prev_hash.empty()) {
        first_seq = h->seq;
        if (h->seq == 1 && h->prev != genesis_hash) {
          problem("edited", seg->name, lineno, h->seq, "the first record's prev is not the genesis hash (64 zeros)");
          return false;
        }
      } else {
        const bool prev_ok = h->prev == prev_hash;
        const std::string here = loc(seg->name, lineno);
        if (h->seq == prev_seq + 1 && !prev_ok) {
          problem("edited", prev_seg, prev_line, prev_seq,
                  "record seq " + std::to_string(prev_seq) + " at " + prev_loc +
                      " was changed: its SHA-256 no longer matches the prev of seq " + std::to_string(h->seq) + " at " + here);
          return false;
        }
        if (h->seq != prev_seq + 1 && prev_ok) {
          problem("edited", seg->name, lineno, h->seq,
                  "record at " + here + " follows seq " + std::to_string(prev_seq) + " by its prev hash but says seq " +
                      std::to_string(h->seq) + ": its seq was changed");
          return false;
        }
        if (h->seq < prev_seq + 1) {
          problem("reordered", seg->name, lineno, h->seq,
                  "seq " + std::to_string(h->seq) + " at " + here + " comes after seq " + std::to_string(prev_seq) +
                      ": records were reordered");
          return false;
        }
        if (h->seq > prev_seq + 1) {
          verify_problem p{"deleted", seg->name, lineno, h->seq,
                           "seq " + std::to_string(h->seq) + " at " + here + " follows seq " + std::to_string(prev_seq) +
                               ": record" + (h->seq - prev_seq > 2 ? "s " + std::to_string(prev_seq + 1) + ".." : " ") +
                               std::to_string(h->seq - 1) + " are missing (deleted)"};
          pending_gap = gap{prev_seq + 1, h->seq, p};
          return true;
        }
      }
      if (line.find("\"type\":\"retention\"") != std::string_view::npos) {
        // Parsed, not matched: a caller's captured text may hold the same bytes.
        boost::system::error_code ec;
        const auto v = json::parse(line, ec);
        const auto* o = ec ? nullptr : v.if_object();
        const auto* type = o ? o->if_contains("type") : nullptr;
        if (type && type->is_string() && type->get_string() == "retention") {
          retention_seen = true;
          if (const auto k = count_of(o->if_contains("kept_from")))
            kept_from = std::max(kept_from.value_or(0), *k);
        }
      }
      ends_with_stop = false;
      if (line.find("\"type\":\"stop\"") != std::string_view::npos) {  // (parsed, as above)
        boost::system::error_code ec;
        const auto v = json::parse(line, ec);
        const auto* o = ec ? nullptr : v.if_object();
        const auto* type = o ? o->if_contains("type") : nullptr;
        ends_with_stop = type && type->is_string() && type->get_string() == "stop";
      }
      prev_hash = cur_hash;
      prev_seq = h->seq;
      prev_loc = loc(seg->name, lineno);
      prev_seg = seg->name;
      prev_line = lineno;
      if (cp.present && h->seq == cp.seq) hash_at_checkpoint = cur_hash;
      ++r.records;
      return true;
    };
    auto torn_bytes = for_each_line(*seg, on_line, [&](std::uint64_t n) {
      r.bytes += n;
      if (on_bytes) on_bytes(n);
    }, error);
    if (!torn_bytes) {
      problem("unreadable", seg->name, 0, 0, error);
      return;
    }
    if (r.problem) return;
    if (*torn_bytes > 0 && !pending_gap) torn = torn_tail{seg->name, *torn_bytes};
  }
  if (pending_gap) {
    r.problem = pending_gap->at;
    return;
  }
  if (torn && instance_writing(dir, instance)) {
    // The writer holds the instance's lock: the incomplete line is the record it is writing now,
    // not a crash's torn tail (verify run on a live trail).
    r.notes.push_back(torn->segment + ": " + std::to_string(torn->bytes) +
                      " bytes of a record being written (the instance is running); verified up to seq " +
                      std::to_string(prev_seq));
    torn.reset();
  }
  if (torn) {
    problem("torn", torn->segment, 0, prev_seq + 1,
            "the last line of " + torn->segment + " is incomplete (" + std::to_string(torn->bytes) +
                " bytes after record seq " + std::to_string(prev_seq) + "): cut short or torn by a crash mid-write");
    return;
  }
  if (first_seq > 1 && !retention_seen) {
    problem("deleted", segs.front()->name, 1, first_seq,
            "the trail starts at seq " + std::to_string(first_seq) +
                ": records 1.." + std::to_string(first_seq - 1) + " are missing and no retention record explains it");
    return;
  }
  if (first_seq > 1 && kept_from && first_seq > *kept_from) {
    problem("deleted", segs.front()->name, 1, *kept_from,
            "the trail starts at seq " + std::to_string(first_seq) + ", but retention removed only the records before seq " +
                std::to_string(*kept_from) + ": records " + std::to_string(*kept_from) + ".." + std::to_string(first_seq - 1) +
                " are missing");
    return;
  }
  if (first_seq > 1)
    r.notes.push_back(instance + ": records before seq " + std::to_string(first_seq) + " were removed by retention" +
                      (kept_from ? "" : " (a retention record without kept_from: which ones is not checked)"));
  if (cp.present) {
    if (cp.seq > prev_seq) {
      problem("truncated", segs.back()->name, 0, prev_seq + 1,
              "the checkpoint records the chain up to seq " + std::to_string(cp.seq) + " but the trail ends at seq " +
                  std::to_string(prev_seq) + ": records at the end were removed");
    } else if (cp.seq >= first_seq && hash_at_checkpoint != cp.hash) {
      problem("edited", segs.back()->name, 0, cp.seq,
              "record seq " + std::to_string(cp.seq) + " does not match the checkpoint's hash: it was changed");
    }
  } else if (!cp.broken.empty()) {
    problem("checkpoint", checkpoint_name(instance), 0, 0,
            "the checkpoint of instance " + instance + " " + cp.broken +
                ": it was damaged or replaced, so records removed from the end could not be detected");
  } else if (ends_with_stop) {
    r.notes.push_back(instance + ": no checkpoint; the trail ends with its writer's stop record, but whole runs "
                      "removed from its end together with the checkpoint could not be detected");
  } else {
    // A writer checkpoints as soon as its start record is written: a trail without one that does
    // not end with a stop record lost its end, or its writer was killed at that very moment.
    problem("checkpoint", checkpoint_name(instance), 0, 0,
            "instance " + instance + " has no checkpoint and its trail does not end with a stop record: records at "
            "its end may have been removed together with the checkpoint (or its writer was killed moments after it "
            "started, before its first checkpoint)");
  }
}

}  // namespace

verify_report verify(const std::string& dir, const std::function<void(std::uint64_t)>& on_bytes) {
  verify_report r;
  std::string error;
  auto segs = list_segments(dir, error);
  if (!error.empty()) {
    r.problem = verify_problem{"unreadable", dir, 0, 0, error};
    return r;
  }
  std::map<std::string, std::vector<const segment_file*>> by_instance;
  for (auto& s : segs) by_instance[s.instance].push_back(&s);
  // A checkpoint with no segment of its instance left: the whole trail of that instance was
  // deleted (retention never removes the segment being written).
  std::error_code ec;
  constexpr std::string_view cp_suffix = ".checkpoint";
  for (auto& e : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.size() <= cp_suffix.size() || !name.ends_with(cp_suffix)) continue;
    const std::string instance = name.substr(0, name.size() - cp_suffix.size());
    if (by_instance.count(instance)) continue;
    if (const checkpoint cp = read_checkpoint(dir, instance); !cp.present && cp.broken.empty()) continue;
    r.instances.push_back(instance);
    r.problem = verify_problem{"deleted", name, 0, 0,
                               "instance " + instance + " has a checkpoint but no segment: its whole trail was deleted"};
    return r;
  }
  for (auto& [instance, list] : by_instance) {
    r.instances.push_back(instance);
    verify_instance(dir, list, r, on_bytes);
    if (r.problem) break;
  }
  return r;
}

}  // namespace tollgate::audit
