#!/usr/bin/env python3
"""Render the routing benchmark's report (markdown).

    routes.py render RESULT_DIR

RESULT_DIR layout (written by bench/proxy/routes):
    meta.tsv              key<TAB>value lines for the report header
    configs.tsv           config<TAB>label, in run order (single first or not)
    wrk/CONFIG-rN.txt     raw wrk output of round N
    cpu.tsv               config, round, user_ticks, sys_ticks, clk_tck, procs:
                          lintas's CPU time over that measured run
    conf/CONFIG.toml      the lintas configuration of each config
Standard library only.
"""
from __future__ import annotations

import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

from report import WRK_NOTES, Cpu, cpu_per_request, read_meta  # bench/proxy/report.py
from wrk import Wrk, parse_wrk  # bench/wrk.py, put on sys.path by report.py

BASELINE = "single"
LIMIT = 0.05  # the req/s loss issue 13 allows a routed configuration against one pool


@dataclass
class Config:
    key: str
    label: str
    runs: list[Wrk]  # by round
    cpu: list[Cpu]  # by round, where measured

    @property
    def rps(self) -> float:
        return statistics.median(w.rps for w in self.runs)

    @property
    def cpu_us(self) -> float | None:
        return statistics.median(c.total_us for c in self.cpu) if self.cpu else None


def load(result_dir: Path) -> list[Config]:
    ticks: dict[tuple[str, str], tuple[int, int, int]] = {}
    cpu_path = result_dir / "cpu.tsv"
    if cpu_path.exists():
        for line in cpu_path.read_text().splitlines():
            config, rnd, user, sys_, clk_tck, _procs = line.split("\t")
            ticks[config, rnd] = (int(user), int(sys_), int(clk_tck))
    configs = []
    for line in (result_dir / "configs.tsv").read_text().splitlines():
        key, label = line.split("\t")
        paths = sorted(
            (result_dir / "wrk").glob(f"{key}-r*.txt"),
            key=lambda p: int(p.stem.rsplit("-r", 1)[1]),
        )
        runs, cpu = [], []
        for p in paths:
            w = parse_wrk(p.read_text())
            runs.append(w)
            t = ticks.get((key, p.stem.rsplit("-r", 1)[1]))
            c = cpu_per_request(w, *t) if t else None
            if c is not None:
                cpu.append(c)
        if runs:
            configs.append(Config(key, label, runs, cpu))
    return configs


def table(configs: list[Config]) -> list[str]:
    base = next((c for c in configs if c.key == BASELINE), None)
    rows = [
        "| config | req/s per round | median req/s | ÷ single pool | per-round ÷ single pool (median) "
        "| p99 ms per round | lintas cpu µs/req per round | median cpu µs/req | ÷ single pool |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in configs:
        per_round = " / ".join(f"{w.rps:,.0f}" + ("*" if w.errors else "") for w in c.runs)
        p99 = " / ".join(f"{w.p99_ms:.2f}" for w in c.runs)
        cpu = " / ".join(f"{x.total_us:.1f}" for x in c.cpu) or "-"
        ratio = f"{c.rps / base.rps:.3f}" if base else "-"
        cpu_ratio = (
            f"{c.cpu_us / base.cpu_us:.3f}" if base and c.cpu_us and base.cpu_us else "-"
        )
        median_cpu = f"{c.cpu_us:.1f}" if c.cpu_us is not None else "-"
        paired = "-"
        if base:
            ratios = [w.rps / b.rps for w, b in zip(c.runs, base.runs) if b.rps]
            if ratios:
                paired = (
                    " / ".join(f"{r:.2f}" for r in ratios)
                    + f" ({statistics.median(ratios):.3f})"
                )
        rows.append(
            f"| {c.label} | {per_round} | {c.rps:,.0f} | {ratio} | {paired} | {p99} "
            f"| {cpu} | {median_cpu} | {cpu_ratio} |"
        )
    return rows


def verdicts(configs: list[Config]) -> list[str]:
    base = next((c for c in configs if c.key == BASELINE), None)
    if base is None:
        return []
    out = []
    for c in configs:
        if c is base:
            continue
        change = c.rps / base.rps - 1
        within = "within" if change >= -LIMIT else "**beyond**"
        line = (
            f"- {c.label}: median req/s {change:+.1%} against the single pool "
            f"({within} issue 13's limit of -{LIMIT:.0%})"
        )
        if c.cpu_us and base.cpu_us:
            line += f"; {c.cpu_us - base.cpu_us:+.2f} µs of lintas CPU per request ({c.cpu_us / base.cpu_us - 1:+.1%})"
        out.append(line + ".")
        if any(w.errors for w in c.runs):
            out.append(f"  Rounds marked `*` had errors: {c.label} is not a valid result.")
    return out


def render(result_dir: Path) -> str:
    configs = load(result_dir)
    out = ["# Routing: one pool vs ten routes", ""]
    out += [f"- **{k}**: {v}" for k, v in read_meta(result_dir)]
    out += ["", *table(configs), "", *verdicts(configs), ""]
    out += [
        "Medians over the rounds; the configs ran in turns (one round = each config once),",
        "each on a fresh lintas. *Per-round ÷ single pool* divides each round's req/s by the",
        "single pool's of the same round, measured seconds apart, so load that drifts over",
        "the run moves it less than the ratio of the medians. The ten routes",
        "(`conf/routes-10.toml`): nine the request misses (another host, a host suffix, a",
        "path prefix, an exact path, methods, a header; then the request's host with another",
        "prefix, another method, a missing header), and the tenth `host = \"bench.local\"`,",
        "`path_prefix = \"/bench\"` that takes it. The listener's own pool points at a closed",
        "port, so a request no route takes would be an error (`*`).",
        *WRK_NOTES,
    ]
    return "\n".join(out) + "\n"


def main() -> None:
    if len(sys.argv) != 3 or sys.argv[1] != "render":
        sys.exit(__doc__)
    sys.stdout.write(render(Path(sys.argv[2])))


if __name__ == "__main__":
    main()
