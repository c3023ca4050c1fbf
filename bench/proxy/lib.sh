# Shell helpers shared by the bench/proxy scripts (run, jobs, routes); sourced, not run.
#
# The sourcing script sets, before calling them:
#   BENCH_TAG      prefix of log lines, e.g. "bench/proxy"
#   READY_TIMEOUT  seconds wait_http_200 waits
#   KEEP_TMP, TMP  whether cleanup keeps the temp dir, and which one
# and installs the traps itself:
#   trap cleanup EXIT; trap 'exit 130' INT; trap 'exit 143' TERM
# shellcheck shell=bash

BENCH_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

log() { echo "[$BENCH_TAG] $*" >&2; }
die() { echo "[$BENCH_TAG] error: $*" >&2; exit 1; }

# "10s" / "1m" / "2" -> whole seconds (used only to bound a tool with `timeout`).
duration_seconds() {
    case $1 in
        *[0-9]s) echo "${1%s}" ;;
        *[0-9]m) echo $(( ${1%m} * 60 )) ;;
        *[0-9]h) echo $(( ${1%h} * 3600 )) ;;
        *[0-9]) echo "$1" ;;
        *) die "unsupported duration '$1' (use e.g. 10s, 1m)" ;;
    esac
}

free_ports() { python3 "$BENCH_LIB_DIR/free_ports.py" "$1"; }

# render TEMPLATE OUT KEY=VALUE...: replace each @KEY@ in TEMPLATE.
render() {
    local tpl=$1 out=$2 kv
    shift 2
    local args=()
    for kv in "$@"; do args+=(-e "s|@${kv%%=*}@|${kv#*=}|g"); done
    sed "${args[@]}" "$tpl" >"$out"
    if grep -q '@[A-Z_]*@' "$out"; then
        die "unfilled placeholder in $out: $(grep -o '@[A-Z_]*@' "$out" | head -1)"
    fi
}

# Sets an absolute LINTAS_BIN: $LINTAS_BIN, or target/release/lintas (under
# CARGO_TARGET_DIR when set), built first when that default file is missing.
# HINT, if given, is added to the error as another way out.
find_lintas_bin() {  # find_lintas_bin [HINT]
    local hint=${1:-} default=${CARGO_TARGET_DIR:-target}/release/lintas
    LINTAS_BIN=${LINTAS_BIN:-$default}
    if [[ ! -x $LINTAS_BIN && $LINTAS_BIN == "$default" ]]; then
        log "building lintas (cargo build --release -p lintas)"
        cargo build --release -p lintas >&2
    fi
    [[ -x $LINTAS_BIN ]] || die "lintas binary not found at $LINTAS_BIN (set LINTAS_BIN${hint:+, or $hint})"
    LINTAS_BIN=$(realpath "$LINTAS_BIN")
}

# ------------------------------------------------------ process bookkeeping --
# Every background process goes through start_bg so the EXIT trap can stop it,
# whatever way the script ends.
STARTED=()
LAST_PID=

start_bg() {  # start_bg LOGFILE CMD...
    local logfile=$1
    shift
    "$@" >"$logfile" 2>&1 &
    LAST_PID=$!
    STARTED+=("$LAST_PID")
}

# SIGTERM means "fast shutdown" to nginx and "stop now" to HAProxy (SIGQUIT /
# SIGUSR1 would wait for the idle connections to go away); SIGKILL after 5 s.
stop_pid() {
    local pid=$1 i p keep=()
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "pid $pid ignored SIGTERM; killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    wait "$pid" 2>/dev/null || true
    for p in "${STARTED[@]}"; do [[ $p == "$pid" ]] || keep+=("$p"); done
    STARTED=("${keep[@]}")
}

cleanup() {
    local rc=$? pid
    trap - EXIT INT TERM
    for pid in "${STARTED[@]}"; do stop_pid "$pid"; done
    if [[ -n ${TMP:-} && -d $TMP ]]; then
        if [[ $KEEP_TMP == 1 || $rc != 0 ]]; then
            log "temp dir kept (configs, server logs): $TMP"
        else
            rm -rf "$TMP"
        fi
    fi
    exit "$rc"
}

# Bounded wait until URL answers 200; fails early if the process died.
# CURL_ARGs (e.g. -H 'Host: x') go to every probe.
wait_http_200() {  # wait_http_200 NAME PID URL LOGFILE [CURL_ARG...]
    local name=$1 pid=$2 url=$3 logfile=$4 code=none
    shift 4
    local deadline=$((SECONDS + READY_TIMEOUT))
    while ((SECONDS < deadline)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            [[ -s $logfile ]] || die "$name exited during startup without any output"
            tail -n 20 "$logfile" >&2
            die "$name exited during startup (last lines of $logfile above)"
        fi
        code=$(curl -s --noproxy '*' -o /dev/null -w '%{http_code}' --max-time 1 "$@" "$url" || true)
        [[ $code == 200 ]] && return 0
        sleep 0.1
    done
    tail -n 20 "$logfile" >&2 || true
    die "$name did not answer 200 on $url within ${READY_TIMEOUT}s (last status: $code)"
}

# ------------------------------------------------------- backend, CPU, wrk --
# The shared backend of run and routes: nginx, one worker, `GET /` (any path)
# answered `hello`. Needs CONF, TMP, NOFILE and WORKER_CONNECTIONS; sets
# BACKEND_PORT and BACKEND_PID.
start_backend() {
    local dir=$TMP/backend
    mkdir -p "$dir"
    BACKEND_PORT=$(free_ports 1)
    render "$CONF/backend-nginx.conf" "$dir/nginx.conf" DIR="$dir" PORT="$BACKEND_PORT" \
        NOFILE="$NOFILE" WORKER_CONNECTIONS="$WORKER_CONNECTIONS"
    start_bg "$dir/out.log" nginx -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf"
    BACKEND_PID=$LAST_PID
    wait_http_200 "backend nginx" "$BACKEND_PID" "http://127.0.0.1:$BACKEND_PORT/" "$dir/error.log"
    log "backend nginx on 127.0.0.1:$BACKEND_PORT (pid $BACKEND_PID)"
}

# PID and its descendants (nginx master + workers; HAProxy/lintas are one process).
tree_pids() {
    local c
    echo "$1"
    for c in $(pgrep -P "$1" || true); do tree_pids "$c"; done
}

# Prints "<utime> <stime> <number of processes>" (clock ticks, see CLK_TCK)
# summed over the tree under PID (tree_pids).
# /proc/PID/stat of a process already covers all of its threads.
tree_cpu_ticks() {
    local user=0 sys=0 n=0 p stat f
    for p in $(tree_pids "$1"); do
        # The process may have exited since pgrep listed it.
        { read -r stat <"/proc/$p/stat"; } 2>/dev/null || continue
        # Field 2 (comm) is in parentheses and may itself contain spaces or
        # ')'; after the last ')' the fields start at 3 (state), so utime
        # (field 14) and stime (field 15) are f[11] and f[12].
        read -ra f <<<"${stat##*) }"
        user=$((user + f[11]))
        sys=$((sys + f[12]))
        n=$((n + 1))
    done
    echo "$user $sys $n"
}

# measure_wrk NAME OUT URL [PID [WRK_ARG...]]: a discarded WARMUP run (unless
# WARMUP=0), then `wrk WRK_ARGS -d DURATION` into OUT, each bounded. With a
# PID, WRK_CPU is set to (user_ticks sys_ticks CLK_TCK) of that process tree
# over the measured run only, and WRK_PROCS to how many processes it had;
# without, WRK_CPU is empty. WRK_ARGs (e.g. -H 'Host: x') go to both runs.
# Needs WRK_ARGS, WARMUP, DURATION, WRK_TIMEOUT and CLK_TCK.
measure_wrk() {
    local name=$1 out=$2 url=$3 pid=${4:-} user0 sys0 user1 sys1
    shift $(($# < 4 ? $# : 4))
    WRK_CPU=()
    WRK_PROCS=
    if [[ $WARMUP != 0 ]]; then
        timeout -k 5 $(($(duration_seconds "$WARMUP") + 30)) \
            wrk "${WRK_ARGS[@]}" "$@" -d "$WARMUP" "$url" >/dev/null 2>&1 ||
            die "wrk warm-up against $name ($url) failed"
    fi
    # Sampled after the warm-up, so only the measured run's requests count.
    if [[ -n $pid ]]; then read -r user0 sys0 WRK_PROCS < <(tree_cpu_ticks "$pid"); fi
    if ! timeout -k 5 "$WRK_TIMEOUT" wrk "${WRK_ARGS[@]}" "$@" -d "$DURATION" "$url" >"$out" 2>&1; then
        cat "$out" >&2
        die "wrk against $name ($url) failed"
    fi
    if [[ -n $pid ]]; then
        read -r user1 sys1 WRK_PROCS < <(tree_cpu_ticks "$pid")
        WRK_CPU=($((user1 - user0)) $((sys1 - sys0)) "$CLK_TCK")
    fi
}
