#!/usr/bin/env bash
# Baseline: what plain PostgreSQL does on this machine with durable commits,
# so Kinko's own numbers can be read against it.
#
#   bench/pgbench-baseline.sh [--seconds N] [--json] [--no-prepared]
#                             [--scale S] [--clients C] [--threads J] [--port P]
#
# Starts a throwaway cluster (scripts/pg-test-cluster, fsync=on,
# synchronous_commit=on) on its own port (default 54339), runs
# `pgbench -i -s S` and then `pgbench -b tpcb-like -c C -j J -T N` once with
# -M simple and once with -M prepared (re-initialising before each, so both
# start from the same data), and stops the cluster on exit.
#
# --json prints one JSON object per run on stdout (JSON Lines), e.g.
#   {"tool":"pgbench","mode":"simple","scale":10,"clients":8,"threads":2,
#    "seconds":30,"tps":1234.5,"latency_ms_avg":6.4,...}
# and sends pgbench's own output to stderr. Without --json, a human summary.
set -euo pipefail

repo=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)

seconds=30 scale=10 clients=8 threads=2 port=54339 json=0 prepared=1

die() { printf 'pgbench-baseline: error: %s\n' "$*" >&2; exit 1; }
usage() { sed -n '2,18s/^# \{0,1\}//p' "$0" >&2; exit 2; }
posint() { [[ $2 =~ ^[1-9][0-9]*$ ]] || die "$1 wants a positive integer, got '$2'"; }

while (($#)); do
    case $1 in
        --seconds) posint "$1" "${2:-}"; seconds=$2; shift 2 ;;
        --scale) posint "$1" "${2:-}"; scale=$2; shift 2 ;;
        --clients) posint "$1" "${2:-}"; clients=$2; shift 2 ;;
        --threads) posint "$1" "${2:-}"; threads=$2; shift 2 ;;
        --port) posint "$1" "${2:-}"; port=$2; shift 2 ;;
        --json) json=1; shift ;;
        --no-prepared) prepared=0; shift ;;
        -h | --help) usage ;;
        *) die "unknown option '$1' (try --help)" ;;
    esac
done

# In --json mode stdout carries only JSON; all chatter goes to stderr.
if ((json)); then exec 3>&2; else exec 3>&1; fi
say() { printf '%s\n' "$*" >&3; }

cluster="$repo/scripts/pg-test-cluster"
pg_dir=$(mktemp -d /tmp/kinko-bench-pg.XXXXXXXX)
tmp=$(mktemp -d /tmp/kinko-bench-out.XXXXXXXX)
# shellcheck disable=SC2317  # only reached through the EXIT trap
cleanup() {
    "$cluster" stop "$pg_dir" >/dev/null 2>&1 || rm -rf -- "$pg_dir"
    rm -rf -- "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

url=$("$cluster" start "$pg_dir" "$port" 2>"$tmp/start.log") \
    || { cat "$tmp/start.log" >&2; die "could not start the benchmark cluster on port $port"; }
bindir=$("$cluster" bindir)
pgbench="$bindir/pgbench"
psql=("$bindir/psql" -X -q -At -d "$url")

# Record what the server really runs with, so a result is never silently
# taken with durability off.
pg_version=$("${psql[@]}" -c 'show server_version')
fsync=$("${psql[@]}" -c 'show fsync')
sync_commit=$("${psql[@]}" -c 'show synchronous_commit')
[[ $fsync == on && $sync_commit == on ]] \
    || die "expected fsync=on, synchronous_commit=on; got fsync=$fsync synchronous_commit=$sync_commit"

# Other load (e.g. a cargo build) skews the result, so note it with the figures.
loadavg() { cut -d ' ' -f 1 /proc/loadavg; }

say "PostgreSQL $pg_version on 127.0.0.1:$port, fsync=$fsync synchronous_commit=$sync_commit;" \
    "$(nproc) cores, load average $(loadavg)"

# field FILE REGEX: first capture group of the first matching line.
field() { sed -nE "s/$2/\1/p" "$1" | head -n 1; }

run_mode() {
    local mode=$1 out="$tmp/$1.txt" load
    say ""
    say "== pgbench -i -s $scale (fresh data for mode $mode)"
    "$pgbench" -i -q -s "$scale" "$url" >"$tmp/init-$mode.txt" 2>&1 \
        || { cat "$tmp/init-$mode.txt" >&2; die "pgbench -i failed"; }
    load=$(loadavg)
    say "== pgbench -b tpcb-like -M $mode -c $clients -j $threads -T $seconds"
    "$pgbench" -b tpcb-like -M "$mode" -c "$clients" -j "$threads" -T "$seconds" "$url" \
        >"$out" 2>&1 || { cat "$out" >&2; die "pgbench ($mode) failed"; }
    sed 's/^/   /' "$out" >&3

    local tps lat txns failed
    tps=$(field "$out" '^tps = ([0-9.]+) \(without initial connection time\).*')
    lat=$(field "$out" '^latency average = ([0-9.]+) ms.*')
    txns=$(field "$out" '^number of transactions actually processed: ([0-9]+).*')
    failed=$(field "$out" '^number of failed transactions: ([0-9]+).*')
    [[ $tps =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "could not parse tps from pgbench output ($mode)"
    [[ $lat =~ ^[0-9]+(\.[0-9]+)?$ ]] || lat=null
    [[ $txns =~ ^[0-9]+$ ]] || txns=null
    [[ $failed =~ ^[0-9]+$ ]] || failed=null

    if ((json)); then
        printf '{"tool":"pgbench","mode":"%s","scale":%s,"clients":%s,"threads":%s,"seconds":%s,' \
            "$mode" "$scale" "$clients" "$threads" "$seconds"
        printf '"tps":%s,"latency_ms_avg":%s,"transactions":%s,"failed_transactions":%s,' \
            "$tps" "$lat" "$txns" "$failed"
        printf '"pg_version":"%s","fsync":"%s","synchronous_commit":"%s","cores":%s,"loadavg_1m_at_start":%s}\n' \
            "$pg_version" "$fsync" "$sync_commit" "$(nproc)" "$load"
    fi
    summary+=("$(printf '%-9s %10s tps   %8s ms avg latency   %s transactions (load avg at start %s)' \
        "$mode" "$tps" "$lat" "$txns" "$load")")
}

summary=()
run_mode simple
((prepared)) && run_mode prepared

say ""
say "== summary: tpcb-like, scale $scale, $clients clients, $threads threads, ${seconds}s, durable commits"
for line in "${summary[@]}"; do say "$line"; done
