#!/usr/bin/env python3
"""Parse wrk output and render the proxy benchmark report (markdown).

    report.py summary WRK_OUTPUT   one line: req/s, p50, p99, errors
    report.py render RESULT_DIR    the whole markdown report

RESULT_DIR layout (written by bench/proxy/run):
    meta.tsv                 key<TAB>value lines for the report header
    wrk/MODE-tN-TARGET.txt   raw wrk output; MODE http|tcp, TARGET
                             direct|haproxy|nginx|lintas
    memory.tsv               proxy, threads, requested, established,
                             backend_conns, rss_before_kib, rss_after_kib, procs
A missing measurement (lintas skipped, no nginx stream module) shows as "-".
"""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

PROXIES = ("haproxy", "nginx", "lintas")
# wrk prints latencies as e.g. 512.00us, 1.23ms, 1.05s, 1.00m
UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


@dataclass
class Wrk:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int  # socket errors + non-2xx/3xx responses


def parse_wrk(text: str) -> Wrk:
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    pct = {
        m[1]: float(m[2]) * UNIT_MS[m[3]]
        for m in re.finditer(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)
    }
    if not rps or "50" not in pct or "99" not in pct:
        raise ValueError("not a complete `wrk --latency` output")
    errors = 0
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if sock:
        errors += sum(int(g) for g in sock.groups())
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if non2xx:
        errors += int(non2xx[1])
    return Wrk(float(rps[1]), pct["50"], pct["99"], errors)


def load(result_dir: Path, mode: str, threads: str, target: str) -> Wrk | None:
    path = result_dir / "wrk" / f"{mode}-t{threads}-{target}.txt"
    return parse_wrk(path.read_text()) if path.exists() else None


def fmt_rps(w: Wrk | None) -> str:
    if w is None:
        return "-"
    return f"{w.rps:,.0f}" + ("*" if w.errors else "")


def fmt_ratio(a: Wrk | None, b: Wrk | None) -> str:
    return f"{a.rps / b.rps:.2f}x" if a and b and b.rps else "-"


def fmt_lat(ws: list[Wrk | None], attr: str) -> str:
    return " / ".join("-" if w is None else f"{getattr(w, attr):.2f}" for w in ws)


def throughput_table(result_dir: Path, mode: str) -> list[str]:
    threads = sorted(
        {p.name.split("-")[1][1:] for p in (result_dir / "wrk").glob(f"{mode}-t*-*.txt")},
        key=int,
    )
    rows = [
        "| test | threads | direct req/s | haproxy req/s | nginx req/s | lintas req/s "
        "| lintas/haproxy | lintas/nginx | p50 ms (h/n/l) | p99 ms (h/n/l) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in threads:
        # "direct" does not depend on the proxy mode: the TCP rows reuse the
        # direct run of the HTTP phase with the same thread count.
        direct = load(result_dir, "http", n, "direct")
        h, ng, li = (load(result_dir, mode, n, p) for p in PROXIES)
        rows.append(
            f"| {mode} | {n} | {fmt_rps(direct)} | {fmt_rps(h)} | {fmt_rps(ng)} | {fmt_rps(li)} "
            f"| {fmt_ratio(li, h)} | {fmt_ratio(li, ng)} "
            f"| {fmt_lat([h, ng, li], 'p50_ms')} | {fmt_lat([h, ng, li], 'p99_ms')} |"
        )
    return rows


def memory_table(result_dir: Path) -> list[str]:
    rows = [
        "| proxy | threads | idle conns | backend conns | processes | RSS before | RSS after "
        "| bytes per idle conn |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    path = result_dir / "memory.tsv"
    found = {}
    if path.exists():
        for line in path.read_text().splitlines():
            f = line.split("\t")
            found[f[0]] = f
    for proxy in PROXIES:
        f = found.get(proxy)
        if f is None:
            rows.append(f"| {proxy} | - | - | - | - | - | - | - |")
            continue
        _, threads, _requested, established, backend, before, after, procs = f
        est, before_kib, after_kib = int(established), int(before), int(after)
        per_conn = f"{(after_kib - before_kib) * 1024 / est:,.0f}" if est else "-"
        rows.append(
            f"| {proxy} | {threads} | {est:,} | {int(backend):,} | {procs} "
            f"| {before_kib / 1024:.1f} MiB | {after_kib / 1024:.1f} MiB | {per_conn} |"
        )
    return rows


def render(result_dir: Path) -> str:
    meta = [
        line.split("\t", 1)
        for line in (result_dir / "meta.tsv").read_text().splitlines()
        if "\t" in line
    ]
    out = ["# Proxy benchmark: HAProxy vs nginx vs lintas", ""]
    out += [f"- **{k}**: {v}" for k, v in meta]
    out += ["", "## HTTP (keep-alive)", ""] + throughput_table(result_dir, "http")
    out += ["", "## TCP (HTTP over the TCP proxy, keep-alive)", ""]
    out += throughput_table(result_dir, "tcp")
    out += ["", "## Memory per idle connection (TCP mode)", ""] + memory_table(result_dir)
    out += [
        "",
        "`*` after req/s: wrk reported socket errors or non-2xx responses (see the raw output).",
        "`-`: not measured (lintas skipped, or nginx without the stream module).",
        "Bytes per idle conn = (RSS after - RSS before) / idle conns; each idle client",
        "connection holds 2 sockets on the proxy (client side + backend side).",
    ]
    return "\n".join(out) + "\n"


def main() -> None:
    if len(sys.argv) != 3 or sys.argv[1] not in ("summary", "render"):
        sys.exit(__doc__)
    if sys.argv[1] == "summary":
        w = parse_wrk(Path(sys.argv[2]).read_text())
        print(f"{w.rps:,.0f} req/s  p50 {w.p50_ms:.2f} ms  p99 {w.p99_ms:.2f} ms  errors {w.errors}")
    else:
        sys.stdout.write(render(Path(sys.argv[2])))


if __name__ == "__main__":
    main()
