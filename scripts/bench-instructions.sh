#!/usr/bin/env bash
# Instructions one call costs the gateway's process, counted by callgrind (repeatable where
# wall-clock numbers are not: same binary, same count within ~1 %). N calls one after another
# on one keep-alive connection, minus a run of 100, divided by the difference; kernel time is
# not counted, nor is the start-up calibration of a clock. Needs valgrind and python3.
#
#   scripts/bench-instructions.sh [BIN] [chat|use|healthz] [N]
#   scripts/bench-instructions.sh target/release/quota-proxy chat 1100
#   BENCH_BODY_KB=64 scripts/bench-instructions.sh      # a coding agent's 64 KiB request
#   BENCH_BODY_KB=64 BENCH_PROTOCOL=messages scripts/bench-instructions.sh   # Claude Code's shape
#   BENCH_BODY_KB=64 BENCH_PROTOCOL=responses scripts/bench-instructions.sh  # Codex's shape
#   BENCH_STREAM=1 BENCH_PROTOCOL=messages scripts/bench-instructions.sh      # streamed
#   BENCH_RENAME=1 BENCH_BODY_KB=64 BENCH_PROTOCOL=messages scripts/bench-instructions.sh  # model_map
set -euo pipefail
BIN="${1:-target/release/quota-proxy}"
WHAT="${2:-chat}"
N="${3:-1100}"
command -v valgrind >/dev/null || { echo "valgrind is required (Debian package valgrind)"; exit 1; }
work="$(mktemp -d)"
# BENCH_KEEP=<dir>: the callgrind profiles are kept there (for callgrind_annotate).
trap 'kill $(jobs -p) 2>/dev/null || true; [ -n "${BENCH_KEEP:-}" ] && cp "$work"/cg.* "$BENCH_KEEP"/ 2>/dev/null; rm -rf "$work"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
up="$(free_port)"
"$BIN" mock-upstream --port "$up" >"$work/mock.log" 2>&1 &
# The upstream speaks the call's protocol, so each call is forwarded as sent (not
# translated); Messages upstreams take the root as their base URL.
# BENCH_TRANSLATED=1: the upstream speaks chat only, so Messages and Responses calls are
# translated (a Claude Code or Codex caller in front of a chat-only upstream).
if [ "${BENCH_TRANSLATED:-0}" = 1 ]; then
  printf '[[upstreams]]\nname = "local-mock"\nbase_url = "http://127.0.0.1:%s/v1"\napi_key = "sk-bench"\nprotocols = ["chat"]\n' "$up" >"$work/qp.toml"
elif [ "${BENCH_PROTOCOL:-chat}" = messages ]; then
  printf '[[upstreams]]\nname = "local-mock"\nbase_url = "http://127.0.0.1:%s"\napi_key = "sk-bench"\nprotocols = ["messages"]\n' "$up" >"$work/qp.toml"
else
  printf '[[upstreams]]\nname = "local-mock"\nbase_url = "http://127.0.0.1:%s/v1"\napi_key = "sk-bench"\nprotocols = ["chat", "responses"]\n' "$up" >"$work/qp.toml"
fi

# BENCH_RENAME=1: the upstream knows every benchmark model by another name (`model_map`), as
# a relay pointing Claude Code or Codex at DeepSeek does.
if [ "${BENCH_RENAME:-0}" = 1 ]; then
  printf 'model_map = { "gpt-4o-mini" = "renamed-model", "claude-sonnet-4-5" = "renamed-model", "gpt-5-codex" = "renamed-model" }\n' >>"$work/qp.toml"
fi

count() { # calls -> total instructions of one gateway run
  local port data
  port="$(free_port)"
  data="$work/data-$1"
  mkdir -p "$data"
  ADMIN_TOKEN=bench-admin-token valgrind --tool=callgrind --callgrind-out-file="$work/cg.$1" \
    "$BIN" serve --port "$port" --data-dir "$data" --config "$work/qp.toml" >"$work/gw-$1.log" 2>&1 &
  local pid=$!
  for _ in $(seq 300); do curl -s -o /dev/null "http://127.0.0.1:$port/healthz" && break; sleep 0.2; done
  python3 - "$port" "$1" "$WHAT" <<'PY' || { echo "calls failed ($work/gw-$1.log)" >&2; return 1; }
import http.client, json, os, sys
port, n, what = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
c.request("POST", "/admin/keys", json.dumps({"quota": 10**12}),
          {"authorization": "Bearer bench-admin-token", "content-type": "application/json"})
key = json.loads(c.getresponse().read())["key"]
if what == "use":
    path, body = "/api/v1/use", json.dumps({"amount": 1, "reason": "bench"})
elif what == "healthz":
    path, body = "/healthz", None
else:
    # BENCH_BODY_KB: a coding agent's request instead, about that many KiB: history with
    # code, quotes and newlines, tools with JSON schemas. BENCH_PROTOCOL picks its shape:
    # chat (messages), messages (Claude Code: system blocks, text / tool_use / tool_result
    # blocks) or responses (Codex: instructions, input items, function calls and outputs).
    kb = int(os.environ.get("BENCH_BODY_KB", "0"))
    proto = os.environ.get("BENCH_PROTOCOL", "chat")
    code = lambda i: f"step {i}: fn main() {{\n    println!(\"hello {i}\");\n}}\n" * 12
    schema = {"type": "object", "properties": {"path": {"type": "string"},
              "line": {"type": "integer"}}, "required": ["path"]}
    items, tools = [], []
    def size():
        return len(json.dumps(items + tools))
    if proto == "messages":
        system = [{"type": "text", "text": "You are a coding agent. " * 40}] if kb else None
        items = [{"role": "user", "content": "benchmark request"}]
        while size() < kb * 1024:
            i = len(items)
            if i % 2:
                items.append({"role": "assistant", "content": [
                    {"type": "text", "text": code(i)[:200]},
                    {"type": "tool_use", "id": f"toolu_{i}", "name": "read", "input": {"path": f"src/f{i}.rs"}}]})
            else:
                items.append({"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": f"toolu_{i-1}", "content": code(i)},
                    {"type": "text", "text": "go on"}]})
            if len(tools) < 12:
                tools.append({"name": f"tool_{i}", "description": "Runs a tool. " * 8, "input_schema": schema})
        req = {"model": "claude-sonnet-4-5", "max_tokens": 16, "messages": items}
        if system:
            req["system"] = system
        path = "/v1/messages"
    elif proto == "responses":
        items = [{"role": "user", "content": [{"type": "input_text", "text": "benchmark request"}]}]
        while size() < kb * 1024:
            i = len(items)
            if i % 2:
                items.append({"type": "function_call", "call_id": f"call_{i}", "name": "shell",
                              "arguments": json.dumps({"cmd": ["cat", f"src/f{i}.rs"]})})
            else:
                items.append({"type": "function_call_output", "call_id": f"call_{i-1}", "output": code(i)})
            if len(tools) < 12:
                tools.append({"type": "function", "name": f"tool_{i}", "description": "Runs a tool. " * 8,
                              "parameters": schema})
        req = {"model": "gpt-5-codex", "max_output_tokens": 16, "input": items}
        if kb:
            req["instructions"] = "You are Codex, a coding agent. " * 40
        path = "/v1/responses"
    else:
        items = [{"role": "user", "content": "benchmark request"}]
        while size() < kb * 1024:
            i = len(items)
            items.append({"role": "assistant" if i % 2 else "user", "content": code(i)})
            if len(tools) < 12:
                tools.append({"type": "function", "function": {"name": f"tool_{i}", "description": "Runs a tool. " * 8,
                    "parameters": schema}})
        req = {"model": "gpt-4o-mini", "stream": False, "max_tokens": 16, "messages": items}
        path = "/v1/chat/completions"
    if tools:
        req["tools"] = tools
    # BENCH_STREAM=1: the answer streamed (the mock's events, read to their end).
    if os.environ.get("BENCH_STREAM") == "1":
        req["stream"] = True
    body = json.dumps(req)
ok = 0
for _ in range(n):
    if body is None:
        c.request("GET", path)
    else:
        c.request("POST", path, body, {"content-type": "application/json", "authorization": "Bearer " + key})
    r = c.getresponse(); r.read(); ok += r.status == 200
if ok != n:
    sys.exit(f"{n - ok} of {n} calls failed")
PY
  sleep 1
  kill -TERM "$pid"
  wait "$pid" || true
  # moka's clock (quanta) calibrates itself for a stretch of wall time at start-up: its count
  # follows the run's length, not the calls, so it is left out.
  local total calib
  total="$(awk '/^(summary|totals):/ {print $2; exit}' "$work/cg.$1")"
  calib="$(callgrind_annotate --inclusive=yes --threshold=100 "$work/cg.$1" 2>/dev/null |
    awk '/quanta::Calibration::calibrate/ {gsub(",", "", $1); print $1; exit}')"
  echo $(( total - ${calib:-0} ))
}
small="$(count 100)"
big="$(count "$N")"
echo "$WHAT: $(( (big - small) / (N - 100) )) instructions a call ($BIN, N=$N, body ${BENCH_BODY_KB:-0} KiB, ${BENCH_PROTOCOL:-chat}${BENCH_STREAM:+, streamed}${BENCH_TRANSLATED:+, translated}${BENCH_RENAME:+, renamed})"
