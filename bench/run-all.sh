#!/usr/bin/env bash
# One run of every ledger figure in bench/RESULTS.md, on this machine, back to back:
# PostgreSQL's pgbench tpcb-like baseline, then `kinko bench ledger` on SQLite and on
# PostgreSQL, each RUNS times (default 3), printing every run and the medians.
#
#   bench/run-all.sh [--runs N] [--transfers N] [--pgbench-seconds N]
#
# Benchmarks here are noisy (2 shared cores): compare figures from the same run only.
set -euo pipefail

repo=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
cd -- "$repo"
runs=3 transfers=1000000 pgbench_seconds=30
while (($#)); do
    case $1 in
        --runs) runs=$2; shift 2 ;;
        --transfers) transfers=$2; shift 2 ;;
        --pgbench-seconds) pgbench_seconds=$2; shift 2 ;;
        *) echo "run-all: unknown option $1" >&2; exit 2 ;;
    esac
done

out=$(mktemp -d /tmp/kinko-bench-all.XXXXXXXX)
pg_dir=$(mktemp -d /tmp/kinko-bench-pgdb.XXXXXXXX)
cleanup() { scripts/pg-test-cluster stop "$pg_dir" >/dev/null 2>&1 || true; }
trap cleanup EXIT

echo "== machine"
{ lscpu | grep -E 'Model name|^CPU\(s\)'; free -h | head -2; uname -r; } | sed 's/^/   /'
cargo build --release -p kinko >/dev/null 2>&1
kinko=target/release/kinko

echo "== pgbench tpcb-like (scale 10, 8 clients, 2 threads, ${pgbench_seconds}s, durable)"
bench/pgbench-baseline.sh --json --seconds "$pgbench_seconds" 2>/dev/null | tee "$out/pgbench.jsonl"

echo "== kinko bench ledger, SQLite, $runs runs"
for _ in $(seq "$runs"); do
    "$kinko" bench ledger --transfers "$transfers" --json | tee -a "$out/sqlite.jsonl"
done

echo "== kinko bench ledger, PostgreSQL, $runs runs (fresh database each)"
admin=$(scripts/pg-test-cluster start "$pg_dir" 54349 2>/dev/null)
for run in $(seq "$runs"); do
    psql -q "$admin" -c "CREATE DATABASE bench_$run" >/dev/null
    "$kinko" bench ledger --transfers "$transfers" --json \
        --database-url "${admin%/*}/bench_$run" | tee -a "$out/postgres.jsonl"
done

python3 - "$out" <<'PY'
import json, statistics, sys, pathlib
out = pathlib.Path(sys.argv[1])
def rows(name):
    return [json.loads(line) for line in (out / name).read_text().splitlines() if line.strip()]
pg = {row["mode"]: row["tps"] for row in rows("pgbench.jsonl")}
simple = pg.get("simple")
print("\n== medians")
print(f"pgbench tpcb-like: simple {simple:.0f} tps, prepared {pg.get('prepared', 0):.0f} tps")
for store in ("sqlite", "postgres"):
    data = rows(f"{store}.jsonl")
    median = lambda key: statistics.median(row[key] for row in data)
    tps = median("transfers_per_s")
    print(f"kinko {store}: {tps:.0f} transfers/s ({tps / simple:.0f}x pgbench simple), "
          f"batch p50 {median('batch_latency_ms_p50'):.1f} ms, p99 {median('batch_latency_ms_p99'):.1f} ms, "
          f"max {median('batch_latency_ms_max'):.1f} ms; runs: {[round(r['transfers_per_s']) for r in data]}")
PY
