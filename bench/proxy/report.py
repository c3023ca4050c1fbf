#!/usr/bin/env python3
"""Parse wrk output and render the proxy benchmark report (markdown).

    report.py summary WRK_OUTPUT [USER_TICKS SYS_TICKS CLK_TCK]
                                   one line: req/s, p50, p99, errors
                                   (and proxy CPU µs/req with the ticks)
    report.py render RESULT_DIR    the whole markdown report

RESULT_DIR layout (written by bench/proxy/run):
    meta.tsv                 key<TAB>value lines for the report header
    wrk/MODE-tN-TARGET.txt   raw wrk output; MODE http|tcp, TARGET
                             direct|haproxy|nginx|lintas
    memory.tsv               proxy, threads, requested, established,
                             backend_conns, rss_before_kib, rss_after_kib, procs
    cpu.tsv                  mode, threads, proxy, user_ticks, sys_ticks,
                             clk_tck, procs: the proxy's CPU time over the
                             measured wrk run of wrk/MODE-tN-PROXY.txt
A missing measurement (lintas skipped, no nginx stream module) shows as "-".
"""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from wrk import Wrk, parse_wrk  # noqa: E402  (bench/wrk.py)

PROXIES = ("haproxy", "nginx", "lintas")
# What `*` and cpu µs/req mean, under every table of them (also used by routes.py).
WRK_NOTES = [
    "`*` after req/s: wrk reported socket errors or non-2xx responses (see the raw output).",
    "cpu µs/req = the proxy's CPU time (user + sys, all its processes) during the",
    "measured wrk run / requests wrk completed: the proxy's own cost per request,",
    "which req/s understates when wrk and the backend share the cores with it.",
]
# wrk prints latencies as e.g. 512.00us, 1.23ms, 1.05s, 1.00m


@dataclass
class Cpu:
    """Proxy CPU time per completed request, in microseconds."""

    user_us: float
    sys_us: float

    @property
    def total_us(self) -> float:
        return self.user_us + self.sys_us


def cpu_per_request(w: Wrk, user_ticks: int, sys_ticks: int, clk_tck: int) -> Cpu | None:
    if not w.requests:
        return None
    scale = 1e6 / clk_tck / w.requests  # ticks -> µs per request
    return Cpu(user_ticks * scale, sys_ticks * scale)


def load_cpu(result_dir: Path, mode: str) -> dict[tuple[str, str], Cpu | None]:
    """(threads, proxy) -> CPU per request, for the runs of MODE."""
    path = result_dir / "cpu.tsv"
    found: dict[tuple[str, str], Cpu | None] = {}
    if not path.exists():
        return found
    for line in path.read_text().splitlines():
        m, threads, proxy, user, sys_, clk_tck, _procs = line.split("\t")
        w = load(result_dir, m, threads, proxy) if m == mode else None
        if w is not None:
            found[threads, proxy] = cpu_per_request(w, int(user), int(sys_), int(clk_tck))
    return found


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


def fmt_cpu(c: Cpu | None, attr: str) -> str:
    return "-" if c is None else f"{getattr(c, attr):.1f}"


def thread_counts(result_dir: Path, mode: str) -> list[str]:
    return sorted(
        {p.name.split("-")[1][1:] for p in (result_dir / "wrk").glob(f"{mode}-t*-*.txt")},
        key=int,
    )


def throughput_table(result_dir: Path, mode: str) -> list[str]:
    cpu = load_cpu(result_dir, mode)
    rows = [
        "| test | threads | direct req/s | haproxy req/s | nginx req/s | lintas req/s "
        "| lintas/haproxy | lintas/nginx | p50 ms (h/n/l) | p99 ms (h/n/l) "
        "| cpu µs/req (h/n/l) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in thread_counts(result_dir, mode):
        # "direct" does not depend on the proxy mode: the TCP rows reuse the
        # direct run of the HTTP phase with the same thread count.
        direct = load(result_dir, "http", n, "direct")
        h, ng, li = (load(result_dir, mode, n, p) for p in PROXIES)
        rows.append(
            f"| {mode} | {n} | {fmt_rps(direct)} | {fmt_rps(h)} | {fmt_rps(ng)} | {fmt_rps(li)} "
            f"| {fmt_ratio(li, h)} | {fmt_ratio(li, ng)} "
            f"| {fmt_lat([h, ng, li], 'p50_ms')} | {fmt_lat([h, ng, li], 'p99_ms')} "
            f"| {' / '.join(fmt_cpu(cpu.get((n, p)), 'total_us') for p in PROXIES)} |"
        )
    return rows


def cpu_table(result_dir: Path, mode: str) -> list[str]:
    cpu = load_cpu(result_dir, mode)
    rows = [
        "| test | threads | proxy | user µs/req | sys µs/req | total µs/req |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for n in thread_counts(result_dir, mode):
        for proxy in PROXIES:
            c = cpu.get((n, proxy))
            rows.append(
                f"| {mode} | {n} | {proxy} | {fmt_cpu(c, 'user_us')} "
                f"| {fmt_cpu(c, 'sys_us')} | {fmt_cpu(c, 'total_us')} |"
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


def read_meta(result_dir: Path) -> list[tuple[str, str]]:
    """The (key, value) lines of RESULT_DIR/meta.tsv, in order (also used by jobs.py)."""
    return [
        tuple(line.split("\t", 1))
        for line in (result_dir / "meta.tsv").read_text().splitlines()
        if "\t" in line
    ]


def render(result_dir: Path) -> str:
    meta = read_meta(result_dir)
    out = ["# Proxy benchmark: HAProxy vs nginx vs lintas", ""]
    out += [f"- **{k}**: {v}" for k, v in meta]
    out += ["", "## HTTP (keep-alive)", ""] + throughput_table(result_dir, "http")
    out += ["", "### HTTP: proxy CPU per request", ""] + cpu_table(result_dir, "http")
    out += ["", "## TCP (HTTP over the TCP proxy, keep-alive)", ""]
    out += throughput_table(result_dir, "tcp")
    out += ["", "### TCP: proxy CPU per request", ""] + cpu_table(result_dir, "tcp")
    out += ["", "## Memory per idle connection (TCP mode)", ""] + memory_table(result_dir)
    out += [
        "",
        *WRK_NOTES,
        "`-`: not measured (lintas skipped, or nginx without the stream module).",
        "Bytes per idle conn = (RSS after - RSS before) / idle conns; each idle client",
        "connection holds 2 sockets on the proxy (client side + backend side).",
    ]
    return "\n".join(out) + "\n"


def main() -> None:
    args = sys.argv[1:]
    usage_ok = {"summary": (2, 5), "render": (2,)}
    if not args or len(args) not in usage_ok.get(args[0], ()):
        sys.exit(__doc__)
    if args[0] == "summary":
        w = parse_wrk(Path(args[1]).read_text())
        line = f"{w.rps:,.0f} req/s  p50 {w.p50_ms:.2f} ms  p99 {w.p99_ms:.2f} ms  errors {w.errors}"
        if len(args) == 5:
            c = cpu_per_request(w, *map(int, args[2:]))
            if c is not None:
                line += f"  cpu {c.total_us:.1f} µs/req (user {c.user_us:.1f}, sys {c.sys_us:.1f})"
        print(line)
    else:
        sys.stdout.write(render(Path(sys.argv[2])))


if __name__ == "__main__":
    main()
