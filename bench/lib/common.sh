# SPDX-License-Identifier: Apache-2.0
# Shared by bench/run and bench/filters (sourced, from the repository root): checks the tools,
# builds the release binaries, makes the temp dir (removed on exit, with every process started),
# writes the fixed OpenAI-shaped bodies and starts the fixed nginx upstream on $up_port.
for tool in nginx wrk cmake redis-server; do
  command -v "$tool" >/dev/null || [[ -x /usr/sbin/$tool ]] || { echo "bench: $tool missing: run deploy/install-deps" >&2; exit 1; }
done
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

BUILD_DIR="${BUILD_DIR:-build/release}"  # another release build dir keeps two benches apart
echo "bench: building release in $BUILD_DIR"
cmake --preset release -B "$BUILD_DIR" >/dev/null
# (The build's own output only when it fails: the compiler's messages, not just "build stopped".)
if ! build_log=$(cmake --build "$BUILD_DIR" -j "${TOLLGATE_JOBS:-2}" --target tollgate tollgate_loadgen 2>&1); then
  echo "$build_log" | tail -60 >&2
  echo "bench: the release build failed" >&2
  exit 1
fi
TOLLGATE="$root/$BUILD_DIR/gateway/tollgate"
LOADGEN="$root/$BUILD_DIR/bench/tollgate_loadgen"

dir="$(mktemp -d /tmp/tollgate-bench.XXXXXX)"
chmod 755 "$dir"  # nginx workers run as an unprivileged user and must read the bodies
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT INT TERM

ready_admin_port() { # name: the admin port from its ready file (after ready_port)
  sed -E 's/.*"admin":\{"address":"[^"]*","port":([0-9]+).*/\1/' "$dir/$1.ready"
}
# The gateway's own time per call between two /metrics scrapes (files): from
# tollgate_gateway_overhead_seconds, every series summed, as Prometheus's histogram_quantile
# reads a histogram (linear within a bucket). Prints one JSON object: the calls, the p99 in ms
# and the share of calls that took at most 1 ms.
overhead_between() { # before_file after_file
  awk '
    /^tollgate_gateway_overhead_seconds_bucket\{/ {
      match($0, /le="[^"]*"/); le = substr($0, RSTART + 4, RLENGTH - 5)
      v = $NF + 0
      if (FILENAME == ARGV[1]) a[le] -= v; else a[le] += v
      seen[le] = 1
    }
    END {
      n = 0
      for (le in seen) if (le != "+Inf") { bounds[++n] = le + 0; key[n] = le }
      for (i = 1; i <= n; i++) for (k = i + 1; k <= n; k++) if (bounds[k] < bounds[i]) {
        t = bounds[i]; bounds[i] = bounds[k]; bounds[k] = t; t = key[i]; key[i] = key[k]; key[k] = t }
      total = a["+Inf"]; if (total <= 0) { print "{\"calls\":0,\"p99_ms\":null,\"le_1ms\":null}"; exit }
      rank = 0.99 * total; prev_b = 0; prev_c = 0; p99 = -1; under = 0
      for (i = 1; i <= n; i++) {
        c = a[key[i]]
        if (p99 < 0 && c >= rank) p99 = prev_b + (bounds[i] - prev_b) * (rank - prev_c) / (c - prev_c > 0 ? c - prev_c : 1)
        if (bounds[i] == 0.001) under = c
        prev_b = bounds[i]; prev_c = c
      }
      if (p99 < 0) p99 = prev_b  # beyond the last bound: its value, as histogram_quantile does
      printf "{\"calls\":%d,\"p99_ms\":%.3f,\"le_1ms\":%.4f}\n", total, p99 * 1000, under / total
    }' "$1" "$2"
}

ready_port() { # name: the caller port from its ready file (bounded wait)
  for _ in $(seq 1 100); do [[ -s "$dir/$1.ready" ]] && break; sleep 0.05; done
  [[ -s "$dir/$1.ready" ]] || { echo "bench: $1 did not start" >&2; cat "$dir/$1.err" >&2; exit 1; }
  sed -E 's/.*"listen":\{"address":"[^"]*","port":([0-9]+).*/\1/' "$dir/$1.ready"
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }  # user + system time of a process, in clock ticks
# The machine's CPU ticks (all states) and its steal ticks, as "total steal" (/proc/stat): on a VM,
# steal is time the vCPUs were runnable while the host ran something else. A pass with a few
# percent of steal is a noisy host, whatever the targets did (docs/benchmarks.md, "Steal").
host_ticks() { awk 'NR == 1 { t = 0; for (i = 2; i <= NF; i++) t += $i; print t, $9 }' /proc/stat; }
steal_share() { # "total steal" before, "total steal" after: the steal's share of the interval, in %
  awk -v a="$1" -v b="$2" 'BEGIN { split(a, x, " "); split(b, y, " "); t = y[1] - x[1]; printf "%.1f", (t > 0 ? 100 * (y[2] - x[2]) / t : 0) }'
}
us_per_req() { awk -v t="$1" -v n="$2" -v hz="$(getconf CLK_TCK)" 'BEGIN { if (n > 0) printf "%.1f", t * 1e6 / hz / n; else print 0 }'; }  # ticks, requests
j() { echo "$1" | sed -E "s/.*\"$2\":(-?[0-9.]+).*/\1/"; }  # a number field of a JSON line
field_median() { # file field: the field's median over a file of loadgen lines (JSON)
  while read -r l; do [[ -n "$l" ]] && j "$l" "$2"; done < "$1" > "$1.$2"
  median "$1.$2"
}
# Why a round's figures are not valid, or nothing: wrk's non-2xx answers and socket errors, a
# loadgen line's "errors" (a target answering errors fast would look faster). Such a round is
# shown marked and left out of the medians.
wrk_invalid() { # wrk output
  echo "$1" | awk '/Non-2xx or 3xx responses/ {printf "%s non-2xx answers; ", $NF}
    /Socket errors/ {gsub(",", ""); if ($4 + $6 + $8 > 0) printf "socket errors (connect %s, read %s, write %s); ", $4, $6, $8}'
}
loadgen_invalid() { # loadgen JSON line
  local e
  e=$(echo "$1" | sed -nE 's/.*"errors":([0-9]+).*/\1/p')
  if [[ -z "$e" ]]; then echo "no result; "; elif (( e > 0 )); then echo "$e errors; "; fi
}
median() { sort -n "$1" | awk '{a[NR]=$1} END {if (NR) print a[int((NR+1)/2)]; else print "n/a"}'; }  # of a file's numbers
free_port() { # a loopback port nobody listens on
  local p
  for _ in $(seq 1 50); do
    p=$(( 20000 + RANDOM % 40000 ))
    (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null || { echo "$p"; return; }
  done
  echo "bench: no free port" >&2; exit 1
}
wait_http() { # url: wait until it answers (bounded)
  for _ in $(seq 1 100); do curl -s -o /dev/null "$1" && return 0; sleep 0.05; done
  echo "bench: $1 did not come up" >&2; exit 1
}

# Fixed bodies in OpenAI's exact shapes.
cat > "$dir/chat.json" <<'JSON'
{"id":"chatcmpl-bench","object":"chat.completion","created":1732000000,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! This is a fixed answer from the benchmark upstream, long enough to look like a short real reply.","refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":19,"completion_tokens":22,"total_tokens":41,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},"service_tier":"default","system_fingerprint":"fp_bench"}
JSON
{
  c='{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1732000000,"model":"gpt-4o-mini-2024-07-18","system_fingerprint":"fp_bench",'
  printf 'data: %s"choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}],"usage":null}\n\n' "$c"
  for w in Hello there this is a fixed streamed answer from the benchmark upstream with twenty small content chunks in it ok; do
    printf 'data: %s"choices":[{"index":0,"delta":{"content":" %s"},"logprobs":null,"finish_reason":null}],"usage":null}\n\n' "$c" "$w"
  done
  printf 'data: %s"choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null}\n\n' "$c"
  printf 'data: %s"choices":[],"usage":{"prompt_tokens":19,"completion_tokens":20,"total_tokens":39}}\n\n' "$c"
  printf 'data: [DONE]\n\n'
} > "$dir/chat.sse"
printf '{"model":"bench-chat","messages":[{"role":"user","content":"Say hello in one short sentence."}],"max_tokens":64}' > "$dir/req.json"
printf '{"model":"bench-stream","stream":true,"messages":[{"role":"user","content":"Say hello in one short sentence."}],"max_tokens":64}' > "$dir/req-stream.json"

up_port=$(free_port)
sed -e "s#@DIR@#$dir#g" -e "s#@PORT@#$up_port#g" bench/nginx/upstream.conf.in > "$dir/upstream.conf"
"$NGINX" -c "$dir/upstream.conf" -p "$dir" 2>>"$dir/nginx.err" & pids+=($!)

# The full policy path's caller key and config (team and key with every limit and a budget, all
# high enough never to refuse), for a redis-server on the given port: bench/run, bench/instructions.
bench_secret="benchSecret0123456789abcdefghijklmnopqrstuv"
bench_key="tg_bench1_$bench_secret"
bench_digest="sha256:$(printf %s "$bench_secret" | sha256sum | cut -d' ' -f1)"
policy_yaml() { # redis port
  cat <<YAML
store:
  type: redis
  redis: {address: 127.0.0.1:$1}
teams:
  - name: bench
    limits: {rpm: 100000000, tpm: 100000000000, concurrency: 100000}
    budget: {usd: 9000000, period: monthly}
keys:
  - id: bench1
    team: bench
    digest: $bench_digest
    limits: {rpm: 100000000, tpm: 100000000000, concurrency: 100000}
    budget: {usd: 9000000, period: total}
YAML
}

# A redis-server of its own (no persistence) on a free port, stopped on exit: sets redis_port and
# redis_pid. `name` (optional) names its log.
start_redis() { # [name]
  redis_port=$(free_port)
  redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" >"$dir/${1:-redis}.log" 2>&1 &
  redis_pid=$!
  pids+=("$redis_pid")
  for _ in $(seq 1 100); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.05; done
}

# A whole gateway config with the full policy path on the redis-server at the given port, one
# worker, no audit, no access log, bench-chat routed to the fixed upstream: bench/script-cost,
# bench/ab.
policy_gateway_yaml() { # redis port
  cat <<YAML
$(policy_yaml "$1")
audit: {enabled: false}
prices:
  "bench-*": {input: 0.15, output: 0.6}
server: {listen: 127.0.0.1:0, admin_listen: 127.0.0.1:0, workers: 1, access_log: "off"}
providers:
  - {name: fixed, type: openai_compatible, base_url: "http://127.0.0.1:$up_port/v1"}
models:
  - {name: bench-chat, provider: fixed, upstream_model: gpt-4o-mini}
YAML
}

# Every built-in content-filter detector, action redact: bench/filters, bench/instructions.
filter_rules_yaml="content_filters:
  rules:"
for d in email phone payment_card us_ssn iban ipv4 ipv6 aws_access_key private_key jwt api_key; do
  filter_rules_yaml+="
    - {name: $d, detector: $d, action: redact}"
done
