#!/usr/bin/env python3
"""Results of bench/hub/run: one-line summaries while it runs, the markdown report at the end.

  report.py summary JSON_LINE                   one line for stderr
  report.py error ERR_FILE                      the JSON result of a failed phase
  report.py idle JSON_LINE RSS_BEFORE RSS_AFTER the idle phase's JSON plus memory
  report.py render RESULTS_DIR "NODES"          the markdown report (meta.tsv, phases.jsonl, notes.txt)

Standard library only.
"""
import json
import sys
from pathlib import Path

TARGETS = ["socketio", "lintas"]
NAMES = {"socketio": "Socket.IO", "lintas": "lintas"}
GOAL_KIB = 8000 / 1024  # the "≤ 8 KB per idle connection"


def troubled(r: dict) -> bool:
    """Whether a traffic result lost, doubled or refused anything, or lost a client."""
    return any(r.get(k, 0) for k in ("missing", "duplicates", "refused", "ended_early",
                                       "stalled_publishers"))


def summary(r: dict) -> str:
    if "error" in r:
        return "error: " + r["error"]
    if r.get("mode") == "idle":
        per = r.get("kib_per_conn")
        per_text = "-" if per is None else f"{per:.2f} KiB/conn"
        return (f"{r['connected']} clients up in {r['connect_s']:.1f} s, "
                f"RSS {r['rss_before_kib']} -> {r['rss_after_kib']} KiB, {per_text}")
    text = (f"sent {r['sent']} ({r['sent_per_s']:.0f}/s), delivered {r['delivered_per_s']:.0f}/s, "
            f"missing {r['missing']}, dup {r['duplicates']}, "
            f"p50 {r['p50_us'] / 1000:.2f} ms, p99 {r['p99_us'] / 1000:.2f} ms")
    if r.get("server_cpu_s") is not None:
        text += (f", CPU s: server {r['server_cpu_s']:.2f}, tool {r['tool_cpu_s']:.2f}, "
                 f"other {other_cpu(r)}")
    if troubled(r):
        text += (f"; TROUBLE: refused {r['refused']} (first {r['first_refusal']!r}), "
                 f"ended early {r['ended_early']} (first {r['first_end']!r}), "
                 f"stalled publishers {r['stalled_publishers']}")
    return text


def error(err_file: str) -> dict:
    lines = [l.strip() for l in Path(err_file).read_text(errors="replace").splitlines() if l.strip()]
    return {"error": lines[-1] if lines else "load tool failed without a message"}


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


def other_seconds(r: dict):
    """CPU seconds the rest of the machine (not the servers, not the tool) used in the window."""
    if r.get("server_cpu_s") is None or "machine_cpu_s" not in r:
        return None
    return max(0.0, r["machine_cpu_s"] - r["server_cpu_s"] - r["tool_cpu_s"])


def other_cpu(r: dict) -> str:
    v = other_seconds(r)
    return "-" if v is None else f"{v:.2f}"


def disturbed(r: dict) -> bool:
    """Whether something else used a tenth of a core or more during the window."""
    v = other_seconds(r)
    return v is not None and v >= 0.1 * r["cpu_window_s"]


def cpu_per_delivery(r: dict):
    delivered = r["received"] - r["duplicates"]
    if r.get("server_cpu_s") is None or not delivered:
        return None
    return r["server_cpu_s"] * 1e6 / delivered


# (row label, phase, value from a result, formatter, the goal)
ROWS = [
    ("delivered msg/s (fanout)", "fanout", lambda r: r["delivered_per_s"], fmt_int,
     "lintas ≥ 5× Socket.IO"),
    ("p50 ms, paced (latency)", "latency", lambda r: r["p50_us"], fmt_ms, ""),
    ("p99 ms, paced (latency)", "latency", lambda r: r["p99_us"], fmt_ms, "lintas below Socket.IO"),
    ("p50 ms at full load (fanout)", "fanout", lambda r: r["p50_us"], fmt_ms, ""),
    ("p99 ms at full load (fanout)", "fanout", lambda r: r["p99_us"], fmt_ms, "lintas below Socket.IO"),
    ("KiB per idle connection", "idle", lambda r: r["kib_per_conn"], lambda v: f"{v:.2f}",
     f"lintas ≤ 8 KB ({GOAL_KIB:.2f} KiB)"),
    ("server CPU µs per delivery (fanout; nodes + Redis)", "fanout", cpu_per_delivery,
     lambda v: f"{v:.2f}", ""),
]


def usable(r) -> bool:
    return r is not None and "error" not in r and "skipped" not in r


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
    traffic = r.get("mode") != "idle"
    return (fmt(v) + (" *" if traffic and troubled(r) else "")
            + (" †" if traffic and disturbed(r) else ""))


def ratio(r, base, value) -> str:
    if not (usable(r) and usable(base)):
        return "-"
    a, b = value(r), value(base)
    if a is None or b in (None, 0):
        return "-"
    return f"{a / b:.2f}×"


def plural(n: int) -> str:
    return "1 node" if n == 1 else f"{n} nodes"


def render(d: Path, nodes: list) -> str:
    meta = [l.split("\t", 1) for l in (d / "meta.tsv").read_text().splitlines() if "\t" in l]
    results: dict = {}
    phases_file = d / "phases.jsonl"
    for line in phases_file.read_text().splitlines() if phases_file.exists() else []:
        row = json.loads(line)
        results[(row["target"], row["nodes"], row["phase"])] = row["result"]
    notes_file = d / "notes.txt"
    notes = notes_file.read_text().splitlines() if notes_file.exists() else []
    lintas_skipped = dict(meta).get("lintas", "").startswith("skipped")

    def get(target, n, phase):
        r = results.get((target, n, phase))
        if r is None and target == "lintas" and lintas_skipped:
            return {"skipped": True}
        return r

    out = ["# Hub benchmark: lintas hub vs Socket.IO with @socket.io/redis-adapter", ""]
    for k, v in meta:
        out.append(f"- **{k}**: {v}")
    head = ["measure"]
    for n in nodes:
        head += [f"Socket.IO {plural(n)}", f"lintas {plural(n)}", "lintas / Socket.IO"]
    head.append("goal")
    out += ["", "| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 2) + "---|"]
    for label, phase, value, fmt, goal in ROWS:
        cells = [label]
        for n in nodes:
            s, l = get("socketio", n, phase), get("lintas", n, phase)
            cells += [cell(s, value, fmt), cell(l, value, fmt), ratio(l, s, value)]
        cells.append(goal)
        out.append("| " + " | ".join(cells) + " |")
    out += ["", "`*`: that phase lost, duplicated or refused messages, or a server closed a client",
            "(see the detail table). `†`: something else on the machine used a tenth of a core or",
            "more during that phase (*other CPU s* in the detail table), so its numbers are off.",
            "Ratios are lintas ÷ Socket.IO: above 1 is better for throughput, below 1 is better",
            "for latency, memory and CPU.",
            "", "## Detail", "",
            "| server | nodes | phase | sent | sent/s | per room min–max | delivered/s | missing | dup | p50 ms | p99 ms | max ms | server CPU s | tool CPU s | other CPU s | window s | settle s | trouble |",
            "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for (t, n, phase), r in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][0], kv[0][2])):
        if "error" in r:
            out.append(f"| {NAMES[t]} | {n} | {phase} | failed: {r['error']} | | | | | | | | | | | | | | |")
            continue
        if phase == "idle":
            continue
        trouble = ""
        if troubled(r):
            trouble = (f"refused {r['refused']} ({r['first_refusal']}); ended early {r['ended_early']} "
                       f"({r['first_end']}); stalled publishers {r['stalled_publishers']}")
        cpu = r.get("server_cpu_s")
        out.append(f"| {NAMES[t]} | {n} | {phase} | {fmt_int(r['sent'])} | {fmt_int(r['sent_per_s'])} | "
                   f"{r['sent_min']:,}–{r['sent_max']:,} | "
                   f"{fmt_int(r['delivered_per_s'])} | {r['missing']} | {r['duplicates']} | "
                   f"{fmt_ms(r['p50_us'])} | {fmt_ms(r['p99_us'])} | {fmt_ms(r['max_us'])} | "
                   f"{'-' if cpu is None else f'{cpu:.2f}'} | {r['tool_cpu_s']:.2f} | {other_cpu(r)} | "
                   f"{r['cpu_window_s']:.2f} | {r['settle_s']:.1f}{'' if r['settled'] else ' (not quiet)'} | "
                   f"{trouble} |")
    idle_rows = [(t, n, r) for (t, n, phase), r in results.items() if phase == "idle" and "error" not in r]
    if idle_rows:
        out += ["", "| server | nodes | idle clients | connect time s | RSS before KiB | RSS after KiB | KiB per connection |",
                "|---|---:|---:|---:|---:|---:|---:|"]
        for t, n, r in sorted(idle_rows, key=lambda x: (x[1], x[0])):
            per = r.get("kib_per_conn")
            out.append(f"| {NAMES[t]} | {n} | {r['connected']:,} | {r['connect_s']:.1f} | "
                       f"{r['rss_before_kib']:,} | {r['rss_after_kib']:,} | {'-' if per is None else f'{per:.2f}'} |")
    out += ["", "## Reading the numbers", "",
            "- delivered msg/s counts every member's copy (a message to a room of 100 is 100",
            "  deliveries), the publisher's own included, ÷ time from the start of publishing to",
            "  the last delivery. *per room min–max* is how many messages the least and the most",
            "  served room's publisher sent: with a window per room, a server that serves rooms",
            "  unevenly shows a wide spread (and a p99 far above its p50).",
            "- Latency at full load is mostly the window waiting in line (Little's law: window ÷",
            "  throughput), so it follows the throughput row; the paced rows are the latency of a",
            "  server that keeps up.",
            "- Server CPU is the user + system time of the nodes (and of their Redis in the",
            "  two-node runs) from the start of publishing to the end of the drain",
            "  (`/proc/PID/stat`): the server's own cost per delivery, which does not depend on how",
            "  it shares the cores with the load tool (tool CPU s and the window show that",
            "  sharing). *other CPU s* is what the rest of the machine used meanwhile (`/proc/stat`",
            "  less the servers and the tool): well above 0 means someone else's work shared the",
            "  cores and the phase's numbers are low.",
            "- Before publishing, the tool waits until the nodes and Redis are quiet (*settle s*):",
            "  10,000 joins leave the hub with presence work (every join is a `user_joined` event",
            "  to the room's other members, and on two nodes a Redis publish too) that would",
            "  otherwise delay the first messages; Socket.IO sends no presence events.",
            "- The hub does more per message than Socket.IO: it numbers it (offset) and keeps it",
            "  in the room's history (on two nodes in a Redis stream), while the Redis adapter",
            "  only PUBLISHes it.",
            "- Memory is VmRSS summed over the nodes (Node.js's heap grows in steps and is",
            "  collected lazily, so its figure moves more between runs)."]
    if notes:
        out += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(out) + "\n"


def main() -> None:
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "summary":
        print(summary(json.loads(args[0])))
    elif cmd == "error":
        print(json.dumps(error(args[0])))
    elif cmd == "idle":
        print(json.dumps(idle(*args)))
    elif cmd == "render":
        sys.stdout.write(render(Path(args[0]), [int(n) for n in args[1].split()]))
    else:
        sys.exit(f"unknown command {cmd!r}; see the module docstring")


if __name__ == "__main__":
    main()
