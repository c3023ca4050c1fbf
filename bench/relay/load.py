#!/usr/bin/env python3
"""Load generators and database probes of the relay benchmark (bench/relay/run).

Python 3.11 standard library only. Databases are reached through the `psql` and
`mariadb` command-line clients; their connection settings come from the
environment (PG_HOST, PG_PORT, PG_USER, MY_HOST, MY_PORT, MY_USER).

A destination is written KIND:DATABASE:TABLE, KIND pg or my
(e.g. pg:lintas_bench:items, my:lintas_bench_2:e2e).

    load.py bodies DIR BATCH
        writes DIR/record.json (the users' example record, for ab),
        DIR/one.json (one record) and DIR/batch.json (an array of BATCH records)
    load.py fsync DIR
        prints the median and p99 time of a 4 KiB append + fdatasync in DIR (200 rounds),
        to show what a durable write costs on that disk
    load.py wait --n N --timeout S --out FILE DEST...
        polls count(*) of each DEST every 100 ms until it is >= N
    load.py flood --url U --key K --n N --batch B --conns C --timeout S --out FILE DEST...
        phase (c): posts N records in arrays of B over C connections as fast as
        they are acknowledged, while polling count(*) of each DEST every 100 ms;
        times from the first POST until each DEST holds N rows
    load.py e2e --url U --key K --rate R --batch B --seconds S --conns C --timeout S
                --out FILE DEST...
        phase (d): posts R records/s (arrays of B every B/R s) for S seconds, each
        record carrying seq and sent_us (client wall clock, µs, when its POST
        is sent); waits until every DEST holds them all, then fetches
        (seq, inserted_at) from each and computes, per record,
        max over DESTs (inserted_at) - sent_us

Every command writes its results as JSON to --out and one summary line to stderr.
A command exits 0 when it measured something, even if records are missing (that is
a result, reported as such); it exits non-zero only when it could not measure.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import queue
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

POLL = 0.1  # seconds between count(*) polls


# ----------------------------------------------------------------- records --
def example_record() -> dict:
    """The users' record: db1 (PostgreSQL) takes name+price, db2 (MariaDB)
    name+category+type; sub_category goes nowhere."""
    return {
        "name": "Kemeja Batik Lengan Panjang",
        "price": 249000,
        "category": "Pakaian",
        "sub_category": "Kemeja",
        "type": "retail",
    }


def record_json(seq: int, sent_us: int) -> str:
    # Formatted by hand: json.dumps per record would cost more than the POSTs.
    return (
        f'{{"seq":{seq},"sent_us":{sent_us},"name":"item-{seq}",'
        f'"price":{(seq % 100000) / 100:.2f},"category":"bench"}}'
    )


def array_json(first_seq: int, count: int, sent_us: int) -> str:
    return "[" + ",".join(record_json(first_seq + i, sent_us) for i in range(count)) + "]"


def cmd_bodies(a: argparse.Namespace) -> None:
    d = Path(a.dir)
    d.mkdir(parents=True, exist_ok=True)
    (d / "record.json").write_text(json.dumps(example_record()))
    (d / "one.json").write_text(record_json(1, 0))
    (d / "batch.json").write_text(array_json(1, a.batch, 0))


def cmd_fsync(a: argparse.Namespace) -> None:
    path = Path(a.dir) / "fsync-probe"
    times = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        block = b"x" * 4096
        for _ in range(200):
            t = time.perf_counter()
            os.write(fd, block)
            os.fdatasync(fd)
            times.append((time.perf_counter() - t) * 1e3)
    finally:
        os.close(fd)
        path.unlink()
    times.sort()
    print(f"p50 {percentile(times, 50):.2f} ms, p99 {percentile(times, 99):.2f} ms")


# --------------------------------------------------------------- databases --
@dataclass(frozen=True)
class Dest:
    """A destination table. Every benchmark table has an increasing `id` primary key
    (bigserial / AUTO_INCREMENT), which makes `max(id)` a cheap progress probe."""

    kind: str  # pg | my
    db: str
    table: str

    @classmethod
    def parse(cls, s: str) -> "Dest":
        kind, db, table = s.split(":")
        if kind not in ("pg", "my"):
            raise SystemExit(f"destination {s!r}: kind must be pg or my")
        return cls(kind, db, table)

    def __str__(self) -> str:
        server = "PostgreSQL" if self.kind == "pg" else "MariaDB"
        return f"{server} {self.db}.{self.table}"

    def client(self) -> list[str]:
        env = os.environ
        if self.kind == "pg":
            return ["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1",
                    "-h", env.get("PG_HOST", "127.0.0.1"), "-p", env.get("PG_PORT", "5432"),
                    "-U", env.get("PG_USER", "postgres"), "-d", self.db, "-F", "\t"]
        return ["mariadb", "-N", "-B", "--unbuffered", "-h", env.get("MY_HOST", "127.0.0.1"),
                "-P", env.get("MY_PORT", "3306"), "-u", env.get("MY_USER", "root"), self.db]

    def query(self, sql: str) -> str:
        """Runs one query in a client process of its own; its whole output."""
        r = subprocess.run(self.client() + ["-c" if self.kind == "pg" else "-e", sql],
                           capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise RuntimeError(f"{self}: {r.stderr.strip()}")
        return r.stdout

    def inserted(self) -> list[tuple[int, int]]:
        """(seq, inserted_at as µs since the epoch) of every row."""
        if self.kind == "pg":
            sql = (f"SELECT seq, (extract(epoch FROM inserted_at) * 1000000)::bigint "
                   f"FROM {self.table}")
        else:
            sql = (f"SELECT seq, CAST(UNIX_TIMESTAMP(inserted_at) * 1000000 AS SIGNED) "
                   f"FROM {self.table}")
        out = []
        for line in self.query(sql).splitlines():
            seq, ts = line.split("\t")
            out.append((int(seq), int(ts)))
        return out


class Session:
    """One long-lived psql/mariadb process for the polling, so a poll costs a
    round trip and not a client start (which would take CPU from the run)."""

    def __init__(self, dest: Dest):
        self.dest = dest
        self.p = subprocess.Popen(dest.client(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, bufsize=1)

    def scalar(self, sql: str) -> int:
        assert self.p.stdin and self.p.stdout and self.p.stderr
        self.p.stdin.write(sql + ";\n")
        self.p.stdin.flush()
        line = self.p.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.dest}: {self.p.stderr.read().strip()}")
        return int(line.strip() or 0)

    def max_id(self) -> int:
        return self.scalar(f"SELECT COALESCE(max(id), 0) FROM {self.dest.table}")

    def count(self) -> int:
        return self.scalar(f"SELECT count(*) FROM {self.dest.table}")

    def close(self) -> None:
        if self.p.stdin:
            self.p.stdin.close()
        self.p.wait(timeout=10)


def poll_counts(dests: list[Dest], n: int, t0: float, deadline: float,
                stop_early: threading.Event | None = None,
                state: dict[Dest, dict] | None = None) -> dict[Dest, dict]:
    """Polls each dest every POLL s until it holds >= n rows, the deadline passes
    or stop_early is set. Per dest: rows, done_s (seconds from t0 when the count
    first reached n, or None). Continues `state` when given.

    A poll reads max(id) (an index lookup); only once that reaches n, which it
    does no later than count(*) does, is count(*) (a scan) asked, and done_s is
    set only when count(*) itself reaches n. On return, `rows` of a dest that is
    not done is its count(*) at that moment."""
    if state is None:
        state = {d: {"rows": 0, "done_s": None, "session": Session(d)} for d in dests}
    while True:
        for d in dests:
            s = state[d]
            if s["done_s"] is not None:
                continue
            if s["session"].max_id() >= n:
                s["rows"] = s["session"].count()
                if s["rows"] >= n:
                    s["done_s"] = time.monotonic() - t0
        if all(s["done_s"] is not None for s in state.values()):
            break
        if time.monotonic() > deadline or (stop_early and stop_early.is_set()):
            break
        time.sleep(POLL)
    for d in dests:
        if state[d]["done_s"] is None:
            state[d]["rows"] = state[d]["session"].count()
    return state


def public(state: dict) -> dict:
    return {"rows": state["rows"], "done_s": state["done_s"]}


def cmd_wait(a: argparse.Namespace) -> None:
    dests = [Dest.parse(s) for s in a.dests]
    t0 = time.monotonic()
    state = poll_counts(dests, a.n, t0, t0 + a.timeout)
    out = {
        "expected": a.n,
        "timeout_s": a.timeout,
        "destinations": [{"dest": str(d), **public(state[d])} for d in dests],
    }
    write_out(a.out, out)
    log("wait: " + ", ".join(f"{d}: {state[d]['rows']} rows" +
                             (f" after {state[d]['done_s']:.2f}s" if state[d]["done_s"] is not None
                              else " (timed out)") for d in dests))


# -------------------------------------------------------------------- http --
class Poster:
    """One keep-alive HTTP/1.1 connection that POSTs to /v1/records."""

    def __init__(self, url: str, key: str):
        u = urlsplit(url)
        self.host, self.port, self.path = u.hostname, u.port or 80, u.path or "/"
        self.headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        self.conn: http.client.HTTPConnection | None = None

    def post(self, body: bytes) -> tuple[int, bytes]:
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
            try:
                self.conn.request("POST", self.path, body, self.headers)
                r = self.conn.getresponse()
                data = r.read()
                return r.status, data
            except (ConnectionError, http.client.HTTPException):
                # The server closed an idle keep-alive connection: reconnect once.
                self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def timed_post(self, body: bytes) -> tuple[int, bytes, float]:
        """post(), with a failure as status -1, and how long it took in ms."""
        t = time.monotonic()
        try:
            status, data = self.post(body)
        except Exception as e:  # noqa: BLE001 - reported, not hidden
            status, data = -1, str(e).encode()
        return status, data, (time.monotonic() - t) * 1e3


def percentile(sorted_values: list[float], p: float) -> float | None:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, int(-(-p * len(sorted_values) // 100)) - 1))
    return sorted_values[k]


# ------------------------------------------------------------ phase (c) --
def cmd_flood(a: argparse.Namespace) -> None:
    dests = [Dest.parse(s) for s in a.dests]
    # Bodies are built before the clock starts, so the client's JSON work is not timed.
    bodies: list[tuple[int, bytes]] = []
    seq = 0
    while seq < a.n:
        k = min(a.batch, a.n - seq)
        bodies.append((k, array_json(seq, k, 0).encode()))
        seq += k
    work: queue.SimpleQueue = queue.SimpleQueue()
    for b in bodies:
        work.put(b)
    lock = threading.Lock()
    stats = {"accepted": 0, "refused": 0, "first_error": None, "posts": 0}
    ack_ms: list[float] = []
    ingest_done = threading.Event()
    finished = [0]

    def worker() -> None:
        p = Poster(a.url, a.key)
        while True:
            try:
                k, body = work.get_nowait()
            except queue.Empty:
                break
            status, data, dt = p.timed_post(body)
            with lock:
                stats["posts"] += 1
                ack_ms.append(dt)
                if status == 202:
                    stats["accepted"] += k
                else:
                    stats["refused"] += k
                    if stats["first_error"] is None:
                        stats["first_error"] = f"HTTP {status}: {data[:300].decode(errors='replace')}"
        with lock:
            finished[0] += 1
            if finished[0] == a.conns:
                stats["ingest_s"] = time.monotonic() - t0
                ingest_done.set()

    t0 = time.monotonic()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(a.conns)]
    for t in threads:
        t.start()
    # Polls while ingest runs too; the timeout counts from the end of ingest.
    state = poll_counts(dests, a.n, t0, float("inf"), stop_early=ingest_done)
    state = poll_counts(dests, a.n, t0, time.monotonic() + a.timeout, state=state)
    for t in threads:
        t.join()
    ack_ms.sort()
    out = {
        "records": a.n,
        "batch": a.batch,
        "conns": a.conns,
        "posts": stats["posts"],
        "accepted": stats["accepted"],
        "refused": stats["refused"],
        "first_error": stats["first_error"],
        "ingest_s": stats["ingest_s"],
        "ack_p50_ms": percentile(ack_ms, 50),
        "ack_p99_ms": percentile(ack_ms, 99),
        "timeout_s": a.timeout,
        "destinations": [{"dest": str(d), **public(state[d])} for d in dests],
    }
    write_out(a.out, out)
    log(f"flood: {stats['accepted']} of {a.n} records accepted in {stats['ingest_s']:.2f}s; " +
        ", ".join(f"{d}: {state[d]['rows']} rows" +
                  (f" at {state[d]['done_s']:.2f}s" if state[d]["done_s"] is not None
                   else " (timed out)") for d in dests))


# ------------------------------------------------------------ phase (d) --
def cmd_e2e(a: argparse.Namespace) -> None:
    dests = [Dest.parse(s) for s in a.dests]
    interval = a.batch / a.rate
    n_batches = max(1, round(a.seconds / interval))
    jobs: queue.Queue = queue.Queue()
    lock = threading.Lock()
    sent_us: dict[int, int] = {}  # seq -> sent_us, for accepted records only
    ack_ms: list[float] = []
    lag_ms: list[float] = []
    stats = {"accepted": 0, "refused": 0, "first_error": None}

    def worker() -> None:
        p = Poster(a.url, a.key)
        while True:
            job = jobs.get()
            if job is None:
                return
            first_seq, due = job
            t = time.monotonic()
            us = time.time_ns() // 1000
            body = array_json(first_seq, a.batch, us).encode()
            status, data, dt = p.timed_post(body)
            with lock:
                lag_ms.append((t - due) * 1e3)
                ack_ms.append(dt)
                if status == 202:
                    stats["accepted"] += a.batch
                    for i in range(a.batch):
                        sent_us[first_seq + i] = us
                else:
                    stats["refused"] += a.batch
                    if stats["first_error"] is None:
                        stats["first_error"] = f"HTTP {status}: {data[:300].decode(errors='replace')}"

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(a.conns)]
    for t in threads:
        t.start()
    start = time.monotonic() + 0.05
    for b in range(n_batches):
        due = start + b * interval
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        jobs.put((b * a.batch, due))
    for _ in threads:
        jobs.put(None)
    for t in threads:
        t.join()
    send_s = time.monotonic() - start
    sent = stats["accepted"]
    log(f"e2e: {sent} records accepted in {send_s:.2f}s ({sent / send_s:.0f}/s); waiting for delivery")

    t0 = time.monotonic()
    state = poll_counts(dests, sent, t0, t0 + a.timeout)
    inserted: dict[Dest, dict[int, int]] = {}
    rows: dict[Dest, int] = {}
    for d in dests:
        got = d.inserted()
        rows[d] = len(got)
        inserted[d] = dict(got)
    lat_ms: list[float] = []
    missing = 0
    for seq, us in sent_us.items():
        worst = None
        for d in dests:
            ts = inserted[d].get(seq)
            if ts is None:
                worst = None
                break
            worst = ts if worst is None else max(worst, ts)
        if worst is None:
            missing += 1
        else:
            lat_ms.append((worst - us) / 1e3)
    lat_ms.sort()
    ack_ms.sort()
    lag_ms.sort()
    out = {
        "rate": a.rate,
        "batch": a.batch,
        "seconds": a.seconds,
        "conns": a.conns,
        "sent": sent,
        "refused": stats["refused"],
        "first_error": stats["first_error"],
        "send_s": send_s,
        "achieved_rate": sent / send_s if send_s else 0,
        "ack_p50_ms": percentile(ack_ms, 50),
        "ack_p99_ms": percentile(ack_ms, 99),
        "lag_p99_ms": percentile(lag_ms, 99),
        "lag_max_ms": lag_ms[-1] if lag_ms else None,
        "timeout_s": a.timeout,
        "in_all": len(lat_ms),
        "missing_somewhere": missing,
        "p50_ms": percentile(lat_ms, 50),
        "p99_ms": percentile(lat_ms, 99),
        "max_ms": lat_ms[-1] if lat_ms else None,
        "destinations": [
            {"dest": str(d), "rows": rows[d], "distinct_seq": len(inserted[d]),
             "done_s": state[d]["done_s"]}
            for d in dests
        ],
    }
    write_out(a.out, out)
    p50, p99 = out["p50_ms"], out["p99_ms"]
    log(f"e2e: {len(lat_ms)} of {sent} records in all {len(dests)} destinations; "
        f"latency p50 {fmt_ms(p50)}, p99 {fmt_ms(p99)}, max {fmt_ms(out['max_ms'])}")


# ------------------------------------------------------------------ common --
def fmt_ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f} ms"


def log(msg: str) -> None:
    print(f"[bench/relay] {msg}", file=sys.stderr, flush=True)


def write_out(path: str, data: dict) -> None:
    Path(path).write_text(json.dumps(data, indent=2) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("bodies")
    p.add_argument("dir")
    p.add_argument("batch", type=int)
    p.set_defaults(fn=cmd_bodies)

    p = sub.add_parser("fsync")
    p.add_argument("dir")
    p.set_defaults(fn=cmd_fsync)

    p = sub.add_parser("wait")
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--timeout", type=float, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("dests", nargs="+")
    p.set_defaults(fn=cmd_wait)

    for name, fn in (("flood", cmd_flood), ("e2e", cmd_e2e)):
        p = sub.add_parser(name)
        p.add_argument("--url", required=True)
        p.add_argument("--key", required=True)
        p.add_argument("--batch", type=int, required=True)
        p.add_argument("--conns", type=int, required=True)
        p.add_argument("--timeout", type=float, required=True)
        p.add_argument("--out", required=True)
        p.add_argument("dests", nargs="+")
        p.set_defaults(fn=fn)
        if name == "flood":
            p.add_argument("--n", type=int, required=True)
        else:
            p.add_argument("--rate", type=float, required=True)
            p.add_argument("--seconds", type=float, required=True)

    a = ap.parse_args()
    a.fn(a)


if __name__ == "__main__":
    main()
