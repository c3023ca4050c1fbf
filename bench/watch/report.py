#!/usr/bin/env python3
"""Markdown report of a watch benchmark run.

    report.py RESULTS_DIR    # reads meta.tsv, notes.tsv and every <label>.json (drive.py)
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def ms(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:,.0f}" if abs(v) >= 10 else f"{v:.1f}"


def read_tsv(path: Path) -> list[tuple[str, str]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        if "\t" in line:
            k, v = line.split("\t", 1)
            out.append((k, v))
    return out


def main() -> None:
    results = Path(sys.argv[1])
    meta = read_tsv(results / "meta.tsv")
    order = [v for k, v in meta if k == "config"]
    runs = []
    for label in order:
        f = results / f"{label}.json"
        if f.exists():
            runs.append(json.loads(f.read_text()))
        else:
            runs.append({"label": label, "missing": True})

    p = print
    p("# lintas watch: backend death → alert")
    p()
    p("Time from a backend's SIGKILL to its `down` alert reaching a webhook, per health-check")
    p("configuration. **total** = kill → webhook receipt, **detection** = kill → `at_ms` (when")
    p("lintas raised the alert), **sending** = `at_ms` → receipt. Times in ms.")
    p()
    for k, v in meta:
        if k != "config":
            p(f"- **{k}**: {v}")
    p()
    p("| interval | fall | timeout | n | total p50 | total p90 | total max | detection p50 | detection p90 "
      "| detection max | bound fall×interval+timeout | max ≤ bound | sending p50 | sending max | sending share of total |")
    p("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        if r.get("missing"):
            p(f"| {r['label']} | | | 0 | no result (see the notes) | | | | | | | | | | |")
            continue
        s = r["summary"]
        t, d, snd = s["total_ms"], s["detect_ms"], s["send_ms"]
        within = "-" if t["max"] is None else ("yes" if t["max"] <= r["bound_ms"] else "**no**")
        share = "-" if s["send_share"] is None else f"{s['send_share'] * 100:.2f} %"
        p(f"| {r['interval']} | {r['fall']} | {r['timeout']} | {t['n']}/{r['kills_planned']} "
          f"| {ms(t['p50'])} | {ms(t['p90'])} | {ms(t['max'])} "
          f"| {ms(d['p50'])} | {ms(d['p90'])} | {ms(d['max'])} | {ms(r['bound_ms'])} | {within} "
          f"| {ms(snd['p50'])} | {ms(snd['max'])} | {share} |")
    p()
    p("Alerts the webhook received (target web/app2 unless said otherwise); expected exactly one")
    p("`down` and one `up` per kill, nothing else. *recovery* = app2 listening again → `up` alert")
    p("received (rise = 1).")
    p()
    p("| interval | fall | kills | down | up | reminder | flapping | other | missing down | missing up "
      "| at startup | recovery p50 | recovery max |")
    p("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        if r.get("missing"):
            continue
        c = dict(r["counts"].get("web/app2", {}))
        others = []
        for kind in list(c):
            if kind not in ("down", "up", "reminder", "flapping"):
                others.append(f"{kind} {c.pop(kind)}")
        for target, kinds in r["counts"].items():
            if target != "web/app2":
                others.extend(f"{target} {k} {n}" for k, n in kinds.items())
        kills = len(r["kills"])
        miss_down = sum(1 for k in r["kills"] if k.get("down_missing"))
        miss_up = sum(1 for k in r["kills"] if k.get("up_missing"))
        flag = lambda got, want: f"{got}" if got == want else f"**{got}**"  # noqa: E731
        u = r["summary"]["up_ms"]
        p(f"| {r['interval']} | {r['fall']} | {kills} | {flag(c.get('down', 0), kills)} "
          f"| {flag(c.get('up', 0), kills)} | {flag(c.get('reminder', 0), 0)} "
          f"| {flag(c.get('flapping', 0), 0)} | {', '.join(others) or '0'} "
          f"| {flag(miss_down, 0)} | {flag(miss_up, 0)} | {flag(r['startup_alerts'], 0)} "
          f"| {ms(u['p50'])} | {ms(u['max'])} |")
    p()
    notes = [(k, v) for k, v in read_tsv(results / "notes.tsv")]
    for r in runs:
        for n in r.get("notes", []):
            notes.append((f"{r['interval']}:{r['fall']}", n))
    p("## Notes")
    p()
    if notes:
        for k, v in notes:
            p(f"- ({k}) {v}")
    else:
        p("- nothing odd: lintas logged no WARN/ERROR lines besides the expected `backend is out of")
        p("  rotation` one per kill, stopped cleanly on SIGTERM, and no alert was missing or extra.")
    p()
    p("Per-kill rows (kill time, delay, each latency), every alert received and the lintas logs are in "
      f"`{results.name}/`.")


if __name__ == "__main__":
    main()
