#!/usr/bin/env python3
"""Results of bench/mqtt/run: one-line summaries while it runs, the markdown report at the end.

  report.py summary JSON_LINE              one line for stderr
  report.py error BROKER PHASE ERR_FILE    the JSON result of a failed phase
  report.py idle JSON_LINE RSS_BEFORE RSS_AFTER   the idle phase's JSON plus memory
  report.py render RESULTS_DIR             the markdown report (meta.tsv, phases.jsonl, notes.txt)

Standard library only.
"""
import json
import sys
from pathlib import Path

BROKERS = ["mosquitto", "rumqttd", "lintas"]
NAMES = {"mosquitto": "Mosquitto", "rumqttd": "rumqttd", "lintas": "lintas"}


def summary(r: dict) -> str:
    if "error" in r:
        return "error: " + r["error"]
    if r.get("mode") == "idle":
        per = r.get("kib_per_conn")
        per_text = "-" if per is None else f"{per:.2f} KiB/conn"
        return (f"{r['connected']}/{r['connections']} connected in {r['connect_s']:.1f} s, "
                f"RSS {r.get('rss_before_kib')} -> {r.get('rss_after_kib')} KiB, {per_text}")
    return (f"sent {r['sent']} ({r['sent_per_s']:.0f}/s), delivered {r['delivered_per_s']:.0f}/s, "
            f"missing {r['missing']}, dup {r['duplicates']}, "
            f"p50 {r['p50_us'] / 1000:.2f} ms, p99 {r['p99_us'] / 1000:.2f} ms")


def error(broker: str, phase: str, err_file: str) -> dict:
    lines = [l.strip() for l in Path(err_file).read_text(errors="replace").splitlines() if l.strip()]
    return {"error": lines[-1] if lines else "load tool failed without a message",
            "label": broker, "mode": phase}


def idle(line: str, before: str, after: str) -> dict:
    r = json.loads(line)
    r["rss_before_kib"] = int(before)
    r["rss_after_kib"] = int(after)
    r["kib_per_conn"] = (int(after) - int(before)) / r["connected"] if r["connected"] else None
    return r


def fmt_int(v: float) -> str:
    return f"{v:,.0f}"


def fmt_ms(us: float) -> str:
    return f"{us / 1000:.2f}"


# (row label, phase, value from a result, formatter, the goal for lintas ÷ Mosquitto)
ROWS = [
    ("fan-in QoS 0, msg/s delivered", "fanin-q0", lambda r: r["delivered_per_s"], fmt_int, "≥ 1.5×"),
    ("fan-in QoS 1, msg/s delivered", "fanin-q1", lambda r: r["delivered_per_s"], fmt_int, "≥ 1.5×"),
    ("fan-out 1 → N, deliveries/s", "fanout", lambda r: r["delivered_per_s"], fmt_int, "≥ 1.5×"),
    ("latency p50, ms", "latency", lambda r: r["p50_us"], fmt_ms, ""),
    ("latency p99, ms", "latency", lambda r: r["p99_us"], fmt_ms, "≤ 1.0×"),
    ("memory per idle connection, KiB", "idle", lambda r: r["kib_per_conn"], lambda v: f"{v:.2f}", "≤ 1.0×"),
]


def lossy(r: dict) -> bool:
    return r.get("missing", 0) > 0 or r.get("duplicates", 0) > 0


def cell(r, value, fmt) -> str:
    if r is None:
        return "-"
    if "skipped" in r:
        return "skipped"
    if "error" in r:
        return "failed"
    v = value(r)
    if v is None:
        return "-"
    return fmt(v) + (" *" if lossy(r) else "")


def ratio(r, base, value) -> str:
    try:
        a, b = value(r), value(base)
    except (KeyError, TypeError):
        return "-"
    if a is None or b in (None, 0):
        return "-"
    return f"{a / b:.2f}×"


def render(d: Path) -> str:
    meta = [l.split("\t", 1) for l in (d / "meta.tsv").read_text().splitlines() if "\t" in l]
    results: dict = {}
    cpu: dict = {}
    for line in (d / "phases.jsonl").read_text().splitlines() if (d / "phases.jsonl").exists() else []:
        row = json.loads(line)
        results[(row["broker"], row["phase"])] = row["result"]
        cpu[(row["broker"], row["phase"])] = row.get("cpu_s")
    notes_file = d / "notes.txt"
    notes = notes_file.read_text().splitlines() if notes_file.exists() else []
    lintas_meta = dict(meta).get("lintas", "")

    out = ["# MQTT benchmark: lintas vs Mosquitto vs rumqttd", ""]
    for k, v in meta:
        out.append(f"- **{k}**: {v}")
    out += ["", "| measure | Mosquitto | rumqttd | lintas | rumqttd / Mosquitto | lintas / Mosquitto | lintas goal |",
            "|---|---:|---:|---:|---:|---:|---|"]
    for label, phase, value, fmt, goal in ROWS:
        cells = []
        for b in BROKERS:
            r = results.get((b, phase))
            if r is None and b == "lintas" and lintas_meta.startswith("skipped"):
                r = {"skipped": True}
            cells.append(cell(r, value, fmt))
        base = results.get(("mosquitto", phase))
        ok = lambda r: r is not None and "error" not in r and "skipped" not in r
        ratios = [ratio(results.get((b, phase)), base, value)
                  if ok(results.get((b, phase))) and ok(base) else "-" for b in ("rumqttd", "lintas")]
        out.append(f"| {label} | " + " | ".join(cells) + " | " + " | ".join(ratios)
                   + f" | {goal} |")
    cross = results.get(("lintas", "cross"))
    if cross is None:
        state = "-"
    elif "skipped" in cross:
        state = "skipped"
    elif "na" in cross:
        state = f"n/a ({cross['na']})"
    elif "error" in cross:
        state = "failed"
    else:
        state = f"{fmt_ms(cross['p50_us'])} / {fmt_ms(cross['p99_us'])}{' *' if lossy(cross) else ''}"
    out.append(f"| cross-node latency, 3 lintas nodes on Redis: p50 / p99, ms | | | {state} | | | |")

    out += ["", "`*`: messages missing or duplicated in that phase (see the detail table). Ratios are",
            "value ÷ Mosquitto's: above 1 is better for throughput, below 1 is better for latency and memory.",
            "", "## Detail", "",
            "| broker | phase | sent | sent/s | delivered/s | missing | dup | p50 ms | p99 ms | max ms | broker CPU s | CPU µs/delivery |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for (b, phase), r in results.items():
        if "error" in r:
            out.append(f"| {NAMES[b]} | {phase} | failed: {r['error']} | | | | | | | | | |")
        elif "skipped" in r or "na" in r or phase == "idle":
            continue
        else:
            c = cpu.get((b, phase))
            delivered = r["received"] - r["duplicates"]
            per = f"{c * 1e6 / delivered:.2f}" if c is not None and delivered else "-"
            out.append(f"| {NAMES[b]} | {phase} | {fmt_int(r['sent'])} | {fmt_int(r['sent_per_s'])} | "
                       f"{fmt_int(r['delivered_per_s'])} | {r['missing']} | {r['duplicates']} | "
                       f"{fmt_ms(r['p50_us'])} | {fmt_ms(r['p99_us'])} | {fmt_ms(r['max_us'])} | "
                       f"{'-' if c is None else f'{c:.2f}'} | {per} |")
    idle_rows = [(b, r) for (b, phase), r in results.items() if phase == "idle" and "error" not in r]
    if idle_rows:
        out += ["", "| broker | idle clients connected | connect time s | RSS before KiB | RSS after KiB | KiB per connection |",
                "|---|---:|---:|---:|---:|---:|"]
        for b, r in idle_rows:
            per = r.get("kib_per_conn")
            out.append(f"| {NAMES[b]} | {r['connected']:,} of {r['connections']:,} | {r['connect_s']:.1f} | "
                       f"{r['rss_before_kib']:,} | {r['rss_after_kib']:,} | {'-' if per is None else f'{per:.2f}'} |")
    out += ["", "Latency under load (fan-in, fan-out rows of the detail table) is mostly queueing in",
            "front of a saturated broker; the latency row is the paced phase. Broker CPU is its",
            "user + system time over the whole phase (setup, publishing, drain) from /proc/PID/stat;",
            "CPU µs/delivery is that ÷ messages delivered: the broker's own cost per message, which",
            "does not depend on how it shares the cores with the load tool."]
    if notes:
        out += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(out) + "\n"


def main() -> None:
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "summary":
        print(summary(json.loads(args[0])))
    elif cmd == "error":
        print(json.dumps(error(*args)))
    elif cmd == "idle":
        print(json.dumps(idle(*args)))
    elif cmd == "render":
        sys.stdout.write(render(Path(args[0])))
    else:
        sys.exit(f"unknown command {cmd!r}; see the module docstring")


if __name__ == "__main__":
    main()
