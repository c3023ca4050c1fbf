#!/usr/bin/env python3
"""The job-queue benchmark's client, its event simulation and its report.

    jobs.py send URL OUT_JSON --scale S [--timeout SECONDS]
        sends the job mix to URL (http://HOST:PORT) and writes every job's
        outcome to OUT_JSON
    jobs.py render RESULT_DIR
        the markdown report

The mix (the users' scenario, issue 13): 16 jobs, long long short short
repeating (long = 5 s, short = 1 s), one sent every 0.8 s, all times multiplied
by the scale. Each job is `GET /work?ms=N` on a connection of its own
(`Connection: close`); its completion time runs from just before connecting to
the last byte of the answer (time.monotonic).

RESULT_DIR layout (written by bench/proxy/jobs):
    meta.tsv          key<TAB>value lines for the report header
    targets.tsv       key<TAB>label, one line per target, in run order
    KEY.json          what `send` wrote for that target
Standard library only.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from report import read_meta  # bench/proxy/report.py

JOBS = 16
LONG_S = 5.0
SHORT_S = 1.0
EVERY_S = 0.8
WORKERS = 3
LATE_S = 0.05  # a send this much (× scale) behind its schedule is noted in the report


def is_long(job: int) -> bool:
    return job % 4 < 2


@dataclass
class Mix:
    """The job mix at one scale: when each job is sent and how long it runs."""

    scale: float

    def arrival(self, job: int) -> float:
        return job * EVERY_S * self.scale

    def length(self, job: int) -> float:
        return (LONG_S if is_long(job) else SHORT_S) * self.scale


# ---------------------------------------------------------------- simulation --
def simulate_shared_queue(mix: Mix) -> list[float]:
    """Completion time of each job when all wait in one FIFO and each goes to the
    first of the WORKERS that frees: the ideal the queue aims at."""
    free_at = [0.0] * WORKERS
    took = []
    for job in range(JOBS):
        w = min(range(WORKERS), key=lambda k: free_at[k])
        start = max(mix.arrival(job), free_at[w])
        free_at[w] = start + mix.length(job)
        took.append(free_at[w] - mix.arrival(job))
    return took


def simulate_round_robin(mix: Mix) -> list[float]:
    """Job i to worker i mod WORKERS, each worker running its own FIFO."""
    free_at = [0.0] * WORKERS
    took = []
    for job in range(JOBS):
        w = job % WORKERS
        free_at[w] = max(mix.arrival(job), free_at[w]) + mix.length(job)
        took.append(free_at[w] - mix.arrival(job))
    return took


def least_connections_range(mix: Mix) -> tuple[float, float]:
    """(lowest, highest) mean short-job completion of least-connections over
    every way of breaking its ties (jobs in flight at a worker = running + waiting
    in its own FIFO). Arrivals and lengths are multiples of 0.2 s, so ties are
    frequent and which worker wins them changes the outcome a lot."""
    means: list[float] = []

    def walk(job: int, ends: list[list[float]], took: list[float]) -> None:
        if job == JOBS:
            means.append(mean_short(took))
            return
        t = mix.arrival(job)
        # Rounding keeps "ends at the same time as the next arrives" a tie.
        in_flight = [sum(1 for e in ends[w] if round(e - t, 9) > 0) for w in range(WORKERS)]
        fewest = min(in_flight)
        for w in range(WORKERS):
            if in_flight[w] == fewest:
                end = max([t, *ends[w]]) + mix.length(job)
                walk(job + 1, [e + [end] if k == w else e for k, e in enumerate(ends)],
                     took + [end - t])

    walk(0, [[] for _ in range(WORKERS)], [])
    return min(means), max(means)


def mean_short(took: list[float]) -> float:
    return statistics.mean(t for job, t in enumerate(took) if not is_long(job))


# -------------------------------------------------------------------- client --
async def read_answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    """Reads one HTTP/1.1 answer to its last byte; returns (status, headers)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    elif "chunked" in headers.get("transfer-encoding", ""):
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)  # the chunk and its CRLF
            if size == 0:
                break  # no trailers from any target here
    else:
        await reader.read()  # until the server closes
    return status, headers


async def one_job(host: str, port: int, mix: Mix, job: int, start: float, timeout: float) -> dict:
    ms = round(mix.length(job) * 1000)
    out = {"job": job, "long": is_long(job), "ms": ms, "status": None, "error": None,
           "waited": None, "backend": None}
    await asyncio.sleep(max(0.0, start + mix.arrival(job) - time.monotonic()))
    sent = time.monotonic()
    out["sent"] = sent - start
    out["lag"] = out["sent"] - mix.arrival(job)
    writer = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(f"GET /work?ms={ms} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                         "Connection: close\r\n\r\n".encode())
            await writer.drain()
            status, headers = await read_answer(reader)
        out["status"] = status
        out["waited"] = headers.get("x-waited")
        out["backend"] = headers.get("x-backend")
        if status != 200:
            out["error"] = f"HTTP {status}"
    except TimeoutError:
        out["error"] = f"no answer within {timeout:g}s"
    except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as e:
        out["error"] = f"{type(e).__name__}: {e}"
    finally:
        out["took"] = time.monotonic() - sent  # before the close, which is not the job's
        if writer is not None:
            writer.close()
    return out


async def send(url: str, scale: float, timeout: float) -> list[dict]:
    parts = urlsplit(url)
    start = time.monotonic() + 0.1  # time to schedule every task before the first is due
    mix = Mix(scale)
    return await asyncio.gather(
        *(one_job(parts.hostname, parts.port, mix, job, start, timeout) for job in range(JOBS))
    )


# -------------------------------------------------------------------- report --
@dataclass
class Row:
    label: str
    short: list[float]  # completion times of the short jobs that succeeded
    long: list[float]
    makespan: float  # first send to last answer (or error)
    errors: list[str]  # what each failed job got instead of an answer
    waited: int  # jobs answered with x-waited: yes (they waited at the worker)
    late: list[tuple[int, float]]  # (job, seconds) sent more than LATE_S × scale behind schedule
    # Per worker, the jobs it answered in arrival order: L (long), s (short).
    runs: dict[str, str]


def row_from_file(label: str, path: Path) -> Row:
    data = json.loads(path.read_text())
    jobs, scale = data["jobs"], data["scale"]
    ok = [j for j in jobs if j["error"] is None]
    return Row(
        label=label,
        short=[j["took"] for j in ok if not j["long"]],
        long=[j["took"] for j in ok if j["long"]],
        makespan=max(j["sent"] + j["took"] for j in jobs) - min(j["sent"] for j in jobs),
        errors=[j["error"] for j in jobs if j["error"] is not None],
        waited=sum(1 for j in jobs if j["waited"] == "yes"),
        late=[(j["job"], j["lag"]) for j in jobs if j["lag"] > LATE_S * scale],
        runs={
            w: " ".join("L" if j["long"] else "s" for j in ok if j["backend"] == w)
            for w in sorted({j["backend"] for j in ok})
        },
    )


def ideal_row(mix: Mix) -> Row:
    took = simulate_shared_queue(mix)
    return Row(
        label="ideal: one shared FIFO (event simulation)",
        short=[t for job, t in enumerate(took) if not is_long(job)],
        long=[t for job, t in enumerate(took) if is_long(job)],
        makespan=max(mix.arrival(job) + t for job, t in enumerate(took)),
        errors=[],
        waited=0,
        late=[],
        runs={},
    )


def fmt(values: list[float], how) -> str:
    return f"{how(values):.2f}" if values else "-"


def table(rows: list[Row], ideal: Row) -> list[str]:
    out = [
        "| target | mean short (s) | p50 short | max short | mean long | makespan | errors "
        "| waited at worker | mean short ÷ ideal |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    ideal_short = statistics.mean(ideal.short)
    for r in rows:
        ratio = "-"
        if r.short and not r.errors:
            ratio = f"{statistics.mean(r.short) / ideal_short:.2f}"
        errors = "0"
        if r.errors:
            kinds = Counter(r.errors)
            errors = f"**{len(r.errors)}** (" + ", ".join(f"{n}× {k}" for k, n in kinds.items()) + ")"
        out.append(
            f"| {r.label} | {fmt(r.short, statistics.mean)} | {fmt(r.short, statistics.median)} "
            f"| {fmt(r.short, max)} | {fmt(r.long, statistics.mean)} | {r.makespan:.2f} "
            f"| {errors} | {r.waited} | {ratio} |"
        )
    return out


def render(result_dir: Path) -> str:
    meta = read_meta(result_dir)
    scale = float(dict(meta)["scale"])
    mix = Mix(scale)
    rows = []
    for line in (result_dir / "targets.tsv").read_text().splitlines():
        key, label = line.split("\t")
        path = result_dir / f"{key}.json"
        if path.exists():
            rows.append(row_from_file(label, path))
    ideal = ideal_row(mix)
    rr = mean_short(simulate_round_robin(mix))
    lc_low, lc_high = least_connections_range(mix)

    out = ["# Job queue: one shared queue vs per-worker lines", ""]
    out += [f"- **{k}**: {v}" for k, v in meta]
    out += ["", *table(rows + [ideal], ideal), ""]
    out += [
        "Times in seconds, each job from just before its connection opens to the last byte of",
        "its answer. *short*/*long*: the 8 jobs of each kind (errors left out); *makespan*: first",
        "send to last answer; *waited at worker*: jobs answered `x-waited: yes` (they waited",
        "in a worker's own line behind another job); *mean short ÷ ideal*: 1.00 is one shared",
        "queue's result; no ratio for a row with errors, whose times are of the jobs that got",
        "through only.",
        "",
        "1. nginx OSS queues nothing: `max_conns` caps a server, but the `queue` directive that",
        "   makes a request wait for a free one is NGINX Plus only; without it a request that",
        "   finds every server at `max_conns` gets 502 at once (its *errors*; nginx logs",
        "   `no live upstreams`). So the nginx figure to compare is `least_conn` without a cap.",
        "2. The ideal is not a lower bound for short jobs alone: it serves jobs in arrival",
        "   order, and a scheduler that lets short jobs pass long ones would finish them sooner.",
        f"3. The same simulation with a FIFO per worker: round-robin {rr:.2f} s;",
        f"   least-connections {lc_low:.2f}–{lc_high:.2f} s depending on how ties between",
        "   workers with equally many jobs are broken (they are frequent in this mix), so",
        "   least-connections rows differ between proxies by their tie rule.",
    ]
    out += ["", "## Who ran what", "",
            "Per worker, the jobs it answered in arrival order (L long, s short):", "",
            "| target | w1 | w2 | w3 |", "|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r.label} | " + " | ".join(r.runs.get(w, "") for w in ("w1", "w2", "w3")) + " |")
    late = [
        f"{r.label}: job {job} by {lag * 1000:.0f} ms" for r in rows for job, lag in r.late
    ]
    if late:
        out += ["", "**Note**: the client sent jobs late (the machine was busy), so these rows "
                "ran a slightly different mix: " + "; ".join(late) + "."]
    return "\n".join(out) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("send")
    s.add_argument("url")
    s.add_argument("out", type=Path)
    s.add_argument("--scale", type=float, default=1.0)
    s.add_argument("--timeout", type=float, default=120.0, help="seconds per job")
    r = sub.add_parser("render")
    r.add_argument("result_dir", type=Path)
    a = p.parse_args()
    if a.cmd == "send":
        jobs = asyncio.run(send(a.url, a.scale, a.timeout))
        a.out.write_text(json.dumps({"url": a.url, "scale": a.scale, "jobs": jobs}, indent=1))
        ok = [j for j in jobs if j["error"] is None]
        short = [j["took"] for j in ok if not j["long"]]
        print(f"mean short {statistics.mean(short):.2f} s, " if short else "no short job answered, ",
              f"{len(jobs) - len(ok)} errors", sep="")
    else:
        sys.stdout.write(render(a.result_dir))


if __name__ == "__main__":
    main()
