#!/usr/bin/env python3
"""Render the relay benchmark report (markdown) from bench/relay/run's results.

    report.py wrk-summary WRK_OUTPUT   one line: req/s, p50, p99, errors
    report.py ab-summary AB_OUTPUT     one line: time, req/s, failures
    report.py render RESULT_DIR        the whole markdown report

RESULT_DIR layout (written by bench/relay/run and load.py):
    meta.tsv                 key<TAB>value lines for the report header
    notes.tsv                phase<TAB>note lines (anything odd seen during the run)
    a/ab-cC.txt              raw ab output, a/wait-cC.json delivery after that run
    b/KIND-cC.txt            raw wrk output, KIND single|batch; b/cpu.tsv lintas CPU ticks
                             per run; b/KIND-cC.stream-bytes size of the stream afterwards
    c/flood.json             phase (c) results
    d/e2e.json               phase (d) results
A phase that did not run shows as "-" (or is left out of the detail sections).
"""
from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from wrk import Wrk, parse_wrk  # noqa: E402  (bench/wrk.py)

# Goals on the 2-core machine (the issue).
GOAL_SINGLE_RPS = 20_000
GOAL_BATCH_RPS = 200_000
GOAL_DELIVERY_RPS = 50_000
GOAL_E2E_P99_MS = 50.0



# --------------------------------------------------------------- parsers --
@dataclass
class Ab:
    seconds: float
    complete: int
    failed: int
    length_failed: int  # answers whose length differs from the first: harmless here (ids differ)
    non2xx: int
    rps: float
    mean_ms: float
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None


def parse_ab(text: str) -> Ab:
    def num(pattern: str, default: float | None = None) -> float:
        m = re.search(pattern, text, re.M)
        if m is None:
            if default is None:
                raise ValueError(f"ab output lacks {pattern!r}")
            return default
        return float(m[1])

    pct = {m[1]: float(m[2]) for m in re.finditer(r"^\s+(\d+)%\s+(\d+)", text, re.M)}
    return Ab(
        seconds=num(r"^Time taken for tests:\s+([\d.]+) seconds"),
        complete=int(num(r"^Complete requests:\s+(\d+)")),
        failed=int(num(r"^Failed requests:\s+(\d+)")),
        length_failed=int(num(r"Length: (\d+)", 0)),
        non2xx=int(num(r"^Non-2xx responses:\s+(\d+)", 0)),
        rps=num(r"^Requests per second:\s+([\d.]+)"),
        mean_ms=num(r"^Time per request:\s+([\d.]+) \[ms\] \(mean\)"),
        p50_ms=pct.get("50"),
        p99_ms=pct.get("99"),
        max_ms=pct.get("100"),
    )


def load_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def read_tsv(path: Path) -> list[list[str]]:
    if not path.exists():
        return []
    return [line.split("\t") for line in path.read_text().splitlines() if line.strip()]


# ------------------------------------------------------------ formatting --
def n0(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}"


def ms(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.2f} ms" if v < 10 else f"{v:.1f} ms"


def ratio(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def table(head: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def ab_runs(d: Path) -> list[tuple[int, Ab | None, dict | None, str]]:
    """(concurrency, parsed ab, delivery wait, error) per ab run, in run order."""
    runs = []
    files = sorted((d / "a").glob("ab-c*.txt"), key=lambda p: p.stat().st_mtime)
    for f in files:
        c = int(f.stem.removeprefix("ab-c"))
        try:
            ab, err = parse_ab(f.read_text()), ""
        except ValueError as e:
            ab, err = None, str(e)
        runs.append((c, ab, load_json(d / "a" / f"wait-c{c}.json"), err))
    return runs


def wrk_runs(d: Path) -> list[tuple[str, int, Wrk | None, str]]:
    runs = []
    for kind in ("single", "batch"):
        files = sorted((d / "b").glob(f"{kind}-c*.txt"),
                       key=lambda p: int(p.stem.split("-c")[1]))
        for f in files:
            c = int(f.stem.split("-c")[1])
            try:
                runs.append((kind, c, parse_wrk(f.read_text()), ""))
            except ValueError as e:
                runs.append((kind, c, None, str(e)))
    return runs


def batch_size(meta: dict[str, str]) -> int:
    m = re.search(r"\bBATCH=(\d+)", meta.get("knobs", ""))
    return int(m[1]) if m else 100


# ---------------------------------------------------------------- render --
def render(d: Path) -> str:
    meta = dict((r[0], r[1]) for r in read_tsv(d / "meta.tsv") if len(r) >= 2)
    notes = read_tsv(d / "notes.tsv")
    auto_notes: list[str] = []  # found while rendering
    users_s = float(meta.get("users_ab_seconds", "29.1"))
    batch = batch_size(meta)
    out = ["# lintas relay benchmark", ""]
    out += table(["", ""], [[k, v] for k, v in meta.items() if k != "users_ab_seconds"])
    out.append("")

    # ------------------------------------------------------------ summary --
    summary: list[list[str]] = []
    ab = ab_runs(d)
    for c, r, _, _ in ab:
        summary.append([
            f"(a) users' test: {r.complete if r else '?'} POSTs with ab -c {c}, total time",
            (f"{r.seconds:.2f} s" + ("*" if r.failed - r.length_failed or r.non2xx else ""))
            if r else "failed",
            f"their {users_s} s",
            f"{users_s / r.seconds:.1f}× faster" if r and r.seconds else "-",
        ])
    wrk = wrk_runs(d)
    for kind, c, w, _ in wrk:
        if kind == "single":
            label = f"(b) durable ingest, 1 record/POST, req/s (wrk -c {c})"
            val, goal = (w.rps if w else None), GOAL_SINGLE_RPS
        else:
            label = f"(b) durable ingest, {batch} records/POST, records/s (wrk -c {c})"
            val, goal = (w.rps * batch if w else None), GOAL_BATCH_RPS
        star = "*" if w and w.errors else ""
        summary.append([label, n0(val) + star, f"≥ {goal:,}",
                        ratio(val / goal if val is not None else None)])
    flood = load_json(d / "c" / "flood.json")
    if flood:
        for dest in flood["destinations"]:
            server = dest["dest"].split()[0]
            if dest["done_s"]:
                val = flood["records"] / dest["done_s"]
                cell = n0(val)
            else:
                val, cell = None, f"incomplete: {dest['rows']:,} of {flood['records']:,} rows"
            summary.append([f"(c) delivery into {server}, rows/s ({flood['records']:,} records)",
                            cell, f"≥ {GOAL_DELIVERY_RPS:,}",
                            ratio(val / GOAL_DELIVERY_RPS if val else None)])
    e2e = load_json(d / "d" / "e2e.json")
    if e2e:
        nd = len(e2e["destinations"])
        at = f"{e2e['rate']:,.0f} records/s, {nd} destinations"
        summary.append([f"(d) end-to-end latency p50 ({at})", ms(e2e["p50_ms"]), "-", "-"])
        p99 = e2e["p99_ms"]
        summary.append([f"(d) end-to-end latency p99 ({at})", ms(p99),
                        f"< {GOAL_E2E_P99_MS:.0f} ms",
                        ratio(GOAL_E2E_P99_MS / p99 if p99 else None)])
        summary.append([f"(d) records found in all {nd} destinations",
                        f"{e2e['in_all']:,} of {e2e['sent']:,} sent",
                        "all", "ok" if e2e["in_all"] == e2e["sent"] else "**MISSING**"])
    out += ["## Summary", ""]
    out += table(["measure", "lintas", "goal", "ratio"], summary)
    out += ["", "ratio = lintas ÷ goal for rates, goal ÷ lintas for latency: ≥ 1.00 meets the goal. "
            "`*` = ab or wrk saw errors or non-2xx answers (not a valid result)."]
    for c, r, _, _ in ab:
        if r:
            out.append("")
            out.append(f"**The users' test (ab -n {r.complete} -c {c}): {r.seconds:.2f} s with lintas "
                       f"vs their {users_s} s ({users_s / r.seconds:.1f}× faster).**")
            break
    out.append("")

    # ------------------------------------------------------------ details --
    if ab:
        out += ["## (a) The users' test: ab", "",
                "`ab -n N -c C -p record.json -T application/json -H 'Authorization: Bearer …'`, "
                "no keep-alive (HTTP/1.0, a connection per request, as a plain `ab`). The record is "
                "the users' example (name, price, category, sub_category, type); route db1 → "
                "PostgreSQL `products(name, price)`, db2 → MariaDB `products(name, category, type)`. "
                "Delivered = rows counted in each table after the run (cumulative over the runs); "
                "visible after = seconds from the end of ab until the count was reached.", ""]
        rows = []
        for c, r, wait, err in ab:
            if r is None:
                rows.append([str(c), f"ab output not understood: {err}"] + ["-"] * 8)
                continue
            deliv = "-"
            if wait:
                deliv = "; ".join(
                    f"{w['dest'].split()[0]} {w['rows']:,}" +
                    (f" after {w['done_s']:.2f} s" if w["done_s"] is not None else " (TIMED OUT)")
                    for w in wait["destinations"])
            rows.append([str(c), f"{r.seconds:.3f} s", f"{r.rps:,.0f}", f"{r.mean_ms:.2f} ms",
                         n0(r.p50_ms) + " ms", n0(r.p99_ms) + " ms", n0(r.max_ms) + " ms",
                         str(r.failed - r.length_failed), str(r.non2xx), deliv])
        out += table(["-c", "total time", "req/s", "mean/req", "p50", "p99", "max", "failed",
                      "non-2xx", "delivered, visible after"], rows)
        out += ["", "ab reports p50/p99/max in whole milliseconds. \"failed\" leaves out ab's "
                "\"Length\" failures: ab counts every answer whose length differs from the first "
                "one, and `{\"ids\":[9]}` and `{\"ids\":[10]}` differ."]
        out.append("")

    if wrk:
        cpu = {(r[0], int(r[1])): [int(x) for x in r[2:7]] for r in read_tsv(d / "b" / "cpu.tsv")}
        out += ["## (b) Durable ingest: wrk", "",
                f"`wrk -t2 -c C -d … --latency -s post.lua`, every request the same body (one record, "
                f"or an array of {batch}); each 202 comes after the records are fsync'd. Fresh lintas "
                f"and data_dir per run, **no destinations** (the application has no routes), so "
                f"nothing is delivered and only ingest is measured. wrk and lintas share the cores. "
                f"CPU columns are shares of the whole machine's CPU time (all cores) over the measured "
                f"run, from `/proc/stat` and `/proc/PID/stat`, adding up to 100 %: lintas = its "
                f"user+sys time, wrk = wrk's, other = everything else that ran (other processes, "
                f"interrupt work), idle = idle + iowait. Much *other* means something else was "
                f"running; much *idle* with a low req/s means lintas was waiting rather than short "
                f"of CPU.", ""]
        rows = []
        for kind, c, w, err in wrk:
            per = 1 if kind == "single" else batch
            if w is None:
                rows.append([kind, str(c), f"wrk output not understood: {err}"] + ["-"] * 9)
                continue
            pct = ["-"] * 4
            if (kind, c) in cpu and w.seconds:
                ticks, tck, idle, total, wrk_ticks = cpu[(kind, c)]
                other = total - idle - ticks - wrk_ticks
                pct = [f"{max(t, 0) / total * 100:.0f} %" for t in (ticks, wrk_ticks, other, idle)]
                if other / total > 0.15:
                    auto_notes.append(
                        f"(b) {kind} -c {c}: {other / total * 100:.0f} % of the machine's CPU went to "
                        f"other processes during the run (a build or test next to the benchmark?); "
                        f"that cell is low and noisy")
            sb = d / "b" / f"{kind}-c{c}.stream-bytes"
            bpr = "-"
            if sb.exists() and w.requests:
                # The warm-up's records are in the stream too; an estimate only.
                bpr = "≈ " + n0(int(sb.read_text()) / (w.requests * per * 1.0))
            rows.append([kind if kind == "single" else f"{batch}/POST", str(c), n0(w.rps),
                         n0(w.rps * per), ms(w.p50_ms), ms(w.p99_ms), str(w.errors), *pct, bpr])
        out += table(["records", "-c", "req/s", "records/s", "p50", "p99", "errors", "CPU lintas",
                      "CPU wrk", "CPU other", "idle", "stream bytes/record"], rows)
        out += ["", "stream bytes/record counts the warm-up's records as the measured run's, so it "
                "overstates by about WARMUP/DURATION."]
        out.append("")

    if flood:
        out += ["## (c) Delivery into PostgreSQL and MariaDB", "",
                f"{flood['records']:,} records POSTed in arrays of {flood['batch']} over "
                f"{flood['conns']} connections as fast as they were acknowledged; routes to one "
                f"PostgreSQL and one MariaDB table (`items`: bigserial/auto-increment id + seq, "
                f"name, price, sent_us). Clock from the first POST until `SELECT count(*)` "
                f"(polled every 100 ms) reached {flood['records']:,}; rows/s = records ÷ that time.", ""]
        ingest_s = flood["ingest_s"]
        out += table(["", ""], [
            ["accepted (202)", f"{flood['accepted']:,} of {flood['records']:,} records"
             + (f"; first refusal: {flood['first_error']}" if flood["first_error"] else "")],
            ["ingest only", f"{ingest_s:.2f} s = {flood['accepted'] / ingest_s:,.0f} records/s"
             f" (POST ack p50 {ms(flood['ack_p50_ms'])}, p99 {ms(flood['ack_p99_ms'])})"],
        ] + [[f"{x['dest']}", (f"{x['rows']:,} rows after {x['done_s']:.2f} s = "
                               f"{flood['records'] / x['done_s']:,.0f} rows/s")
              if x["done_s"] else f"**incomplete**: {x['rows']:,} rows {flood['timeout_s']:.0f} s "
                                  f"after ingest ended"]
             for x in flood["destinations"]])
        out.append("")

    if e2e:
        nd = len(e2e["destinations"])
        out += ["## (d) End-to-end latency", "",
                f"A Python generator offered {e2e['rate']:,.0f} records/s for {e2e['seconds']:.0f} s: "
                f"an array of {e2e['batch']} records every {e2e['batch'] / e2e['rate'] * 1e3:.0f} ms, "
                f"over {e2e['conns']} keep-alive connections (a slow POST does not hold up the "
                f"next). Each record carries `seq` and `sent_us` (client wall clock when its POST "
                f"is sent). {nd} destinations (one `[[relay.destinations]]` each, own database), "
                f"one insert route each. Latency of a record = max over the destinations of its "
                f"row's `inserted_at` − `sent_us` (PostgreSQL `clock_timestamp()`, MariaDB "
                f"`CURRENT_TIMESTAMP(6)`: the time the row is inserted, a little before its "
                f"transaction commits and it becomes visible).", ""]
        out += table(["", ""], [
            ["sent (202)", f"{e2e['sent']:,} records in {e2e['send_s']:.2f} s = "
                           f"{e2e['achieved_rate']:,.0f} records/s; refused {e2e['refused']:,}"
             + (f" (first: {e2e['first_error']})" if e2e["first_error"] else "")],
            ["generator lag behind schedule", f"p99 {ms(e2e['lag_p99_ms'])}, max {ms(e2e['lag_max_ms'])}"],
            ["POST ack (fsync'd)", f"p50 {ms(e2e['ack_p50_ms'])}, p99 {ms(e2e['ack_p99_ms'])}"],
            [f"found in all {nd}", f"{e2e['in_all']:,} (missing somewhere: {e2e['missing_somewhere']:,})"],
            ["latency", f"p50 {ms(e2e['p50_ms'])}, p99 {ms(e2e['p99_ms'])}, max {ms(e2e['max_ms'])}"],
        ])
        out.append("")
        out += table(["destination", "rows", "distinct seq", "all rows counted after sending ended"], [
            [x["dest"], f"{x['rows']:,}", f"{x['distinct_seq']:,}",
             f"{x['done_s']:.2f} s" if x["done_s"] is not None else "**timed out**"]
            for x in e2e["destinations"]])
        out.append("")

    out += ["## Notes", ""]
    if notes or auto_notes:
        out += [f"- ({n[0]}) {n[1] if len(n) > 1 else ''}" for n in notes]
        out += [f"- {n}" for n in auto_notes]
    else:
        out.append("- nothing odd: lintas logged no WARN/ERROR lines and exited cleanly after every phase")
    out.append("")
    return "\n".join(out)


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "wrk-summary":
        w = parse_wrk(Path(sys.argv[2]).read_text())
        print(f"{w.rps:,.0f} req/s, p50 {ms(w.p50_ms)}, p99 {ms(w.p99_ms)}, errors {w.errors}")
    elif len(sys.argv) == 3 and sys.argv[1] == "ab-summary":
        r = parse_ab(Path(sys.argv[2]).read_text())
        print(f"{r.seconds:.3f} s for {r.complete} requests, {r.rps:,.0f} req/s, "
              f"failed {r.failed - r.length_failed} (+{r.length_failed} 'Length' ones: "
              f"answers differ in length as ids do), non-2xx {r.non2xx}")
    elif len(sys.argv) == 3 and sys.argv[1] == "render":
        print(render(Path(sys.argv[2])), end="")
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
