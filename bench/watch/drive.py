#!/usr/bin/env python3
"""One configuration of the watch benchmark: backend death -> alert, over N kills.

    drive.py measure --bin LINTAS --dir DIR --out RESULT.json [knobs]

Starts, all on 127.0.0.1 with fresh ports:

- a webhook receiver (this process, http.server in threads) that notes when each POST
  arrives (time.time()) and its JSON body, and answers 200;
- the demo backends app1 and app2 (`lintas backend`), and lintas itself (`lintas run`)
  with one HTTP listener, the pool `web` of both backends with HTTP health checks, and
  `[watch]` posting every alert to the receiver.

Then, per kill: app2 is up (its `up` alert arrived); wait a random time within one check
interval, so kills land at random points of the check cycle; SIGKILL app2 and note the
time; wait for the `down` alert for web/app2; restart app2 on the same port; wait for
the `up` alert. Per kill it records

    detection = at_ms (when lintas raised the alert) - kill time
    sending   = receipt at the webhook - at_ms
    total     = receipt at the webhook - kill time

Every alert the receiver got is kept (alerts.jsonl in DIR) and counted by target and
kind, so extra or missing alerts show. Everything this process starts is stopped when it
ends, on success, error, SIGTERM or Ctrl-C; each pid goes to --pids-file first so the
caller can stop what a killed driver left behind. Progress goes to stderr.
"""
from __future__ import annotations

import argparse
import collections
import http.server
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

TARGET = "web/app2"


def log(msg: str) -> None:
    print(f"[bench/watch] {msg}", file=sys.stderr, flush=True)


class Failure(Exception):
    """The run cannot go on (a process died, a wait ran out)."""


def seconds(text: str) -> float:
    """'1s', '200ms', '1m', '1.5s' -> seconds (the subset of lintas durations used here)."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h)\s*", text)
    if not m:
        raise SystemExit(f"unsupported duration {text!r} (use e.g. 1s, 200ms)")
    return float(m.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[m.group(2)]


def free_ports(count: int) -> list[int]:
    held, ports = [], []
    try:
        while len(ports) < count:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            held.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in held:
            s.close()
    return ports


# ------------------------------------------------------------------ receiver --
class Receiver:
    """Threaded HTTP server taking the webhook's POSTs."""

    def __init__(self, port: int, raw: Path):
        self.events: list[dict] = []  # {"recv": float, "alert": dict | None, "raw": str}
        self.cond = threading.Condition()
        self.raw = raw.open("a", encoding="utf-8")
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a real webhook endpoint

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                recv = time.time()  # headers are in: the alert has arrived
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n).decode("utf-8", "replace")
                try:
                    alert = json.loads(body)
                except ValueError:
                    alert = None
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()
                receiver.add({"recv": recv, "path": self.path, "alert": alert, "raw": body})

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def add(self, event: dict) -> None:
        with self.cond:
            self.events.append(event)
            self.raw.write(json.dumps(event) + "\n")
            self.raw.flush()
            self.cond.notify_all()

    def count(self) -> int:
        with self.cond:
            return len(self.events)

    def wait_for(self, start: int, kind: str, deadline: float) -> tuple[dict | None, list[dict]]:
        """First event from index `start` on that is a `kind` alert for TARGET, waiting
        until `deadline` (time.monotonic()); also the other TARGET alerts seen before it."""
        others = []
        i = start
        with self.cond:
            while True:
                while i < len(self.events):
                    e = self.events[i]
                    i += 1
                    a = e["alert"] or {}
                    if a.get("target") != TARGET:
                        continue
                    if a.get("kind") == kind:
                        return e, others
                    others.append(e)
                left = deadline - time.monotonic()
                if left <= 0:
                    return None, others
                self.cond.wait(left)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.raw.close()


# ----------------------------------------------------------------- processes --
class Procs:
    """The processes this driver starts; stop_all() ends the ones still running."""

    def __init__(self, pids_file: Path | None):
        self.running: dict[int, subprocess.Popen] = {}
        self.pids_file = pids_file

    def start(self, argv: list[str], logfile: Path, env: dict | None = None) -> subprocess.Popen:
        out = logfile.open("ab")
        try:
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                 stderr=subprocess.STDOUT, env=env)
        finally:
            out.close()
        self.running[p.pid] = p
        if self.pids_file:
            with self.pids_file.open("a") as f:
                f.write(f"{p.pid}\n")
        return p

    def kill9(self, p: subprocess.Popen) -> None:
        p.send_signal(signal.SIGKILL)
        p.wait()
        self.running.pop(p.pid, None)

    def stop(self, p: subprocess.Popen, grace: float = 10.0) -> int | None:
        """SIGTERM, SIGKILL after `grace` s; returns the exit status (None: SIGKILLed by us)."""
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(grace)
            except subprocess.TimeoutExpired:
                log(f"pid {p.pid} ignored SIGTERM for {grace:.0f} s; killing it")
                p.kill()
                p.wait()
                self.running.pop(p.pid, None)
                return None
        self.running.pop(p.pid, None)
        return p.returncode

    def stop_all(self) -> None:
        for p in list(self.running.values()):
            self.stop(p, grace=5.0)


def tail(path: Path, n: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def wait_line(p: subprocess.Popen, logfile: Path, offset: int, needle: str, timeout: float,
              what: str) -> float:
    """Polls `logfile` from byte `offset` on until it contains `needle`; returns when it was
    seen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with logfile.open("rb") as f:
                f.seek(offset)
                if needle.encode() in f.read():
                    return time.time()
        except OSError:
            pass
        if p.poll() is not None:
            raise Failure(f"{what} exited with status {p.returncode} before printing "
                          f"{needle!r}; last lines of {logfile}:\n{tail(logfile)}")
        time.sleep(0.005)
    raise Failure(f"{what} did not print {needle!r} within {timeout:.0f} s; last lines:\n{tail(logfile)}")


def http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


# --------------------------------------------------------------------- stats --
def pct(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100) of `values`; None when empty."""
    if not values:
        return None
    v = sorted(values)
    k = max(1, -(-len(v) * p // 100))  # ceil(n * p / 100), at least 1
    return v[int(k) - 1]


# ---------------------------------------------------------------------- main --
def config_text(a, data: Path, p1: int, p2: int, listen: int, hook: int) -> str:
    flap = f"flap_changes = {a.flap_changes}\n" if a.flap_changes else ""
    return f"""data_dir = "{data}"

[proxy.pools.web]
backends = [{{ name = "app1", address = "127.0.0.1:{p1}" }}, {{ name = "app2", address = "127.0.0.1:{p2}" }}]
health = {{ kind = "http", path = "/health", interval = "{a.interval}", timeout = "{a.timeout}", rise = {a.rise}, fall = {a.fall} }}

[[proxy.listeners]]
name = "web"
mode = "http"
listen = "127.0.0.1:{listen}"
pool = "web"

[watch]
repeat = "{a.repeat}"
{flap}webhooks = [{{ url = "http://127.0.0.1:{hook}/hook" }}]
"""


def measure(a) -> int:
    work = Path(a.dir)
    work.mkdir(parents=True, exist_ok=True)
    interval, timeout = seconds(a.interval), seconds(a.timeout)
    bound = a.fall * interval + timeout
    seed = a.seed if a.seed is not None else random.SystemRandom().randrange(1 << 32)
    rng = random.Random(seed)
    p1, p2, listen, hook = free_ports(4)
    cfg = work / "lintas.toml"
    cfg.write_text(config_text(a, work / "data", p1, p2, listen, hook))
    lintas_log = work / "lintas.log"

    result: dict = {
        "label": a.label, "interval": a.interval, "fall": a.fall, "rise": a.rise,
        "timeout": a.timeout, "repeat": a.repeat, "flap_changes": a.flap_changes,
        "kills_planned": a.kills, "seed": seed, "bound_ms": bound * 1000,
        "kills": [], "notes": [], "counts": {}, "startup_alerts": 0,
    }
    notes = result["notes"]
    procs = Procs(Path(a.pids_file) if a.pids_file else None)
    receiver = Receiver(hook, work / "alerts.jsonl")
    lintas = None

    def backend(name: str, port: int) -> tuple[subprocess.Popen, float, float]:
        logfile = work / f"{name}.log"  # every instance appends; its own part is from offset
        offset = logfile.stat().st_size if logfile.exists() else 0
        t0 = time.time()
        p = procs.start([a.bin, "backend", "--name", name, "--listen", f"127.0.0.1:{port}"], logfile)
        # The line is printed after bind(): from then on the port accepts connections.
        seen = wait_line(p, logfile, offset, f"listening on 127.0.0.1:{port}", a.ready_timeout, name)
        return p, t0, seen

    try:
        app1, _, _ = backend("app1", p1)
        app2, _, _ = backend("app2", p2)
        env = dict(os.environ, NO_COLOR="1", RUST_LOG=os.environ.get("RUST_LOG", "info"))
        lintas = procs.start([a.bin, "run", "-c", str(cfg)], lintas_log, env)
        deadline = time.monotonic() + a.ready_timeout
        while True:
            if lintas.poll() is not None:
                raise Failure(f"lintas exited with status {lintas.returncode} during startup; "
                              f"last lines of {lintas_log}:\n{tail(lintas_log)}")
            if http_status(f"http://127.0.0.1:{listen}/health") == 200:
                break
            if time.monotonic() > deadline:
                raise Failure(f"lintas did not answer 200 on :{listen}/health within "
                              f"{a.ready_timeout} s; last lines:\n{tail(lintas_log)}")
            time.sleep(0.05)
        # A few check rounds with both backends up: nothing should be said.
        time.sleep(2 * interval + 0.5)
        result["startup_alerts"] = receiver.count()
        if result["startup_alerts"]:
            notes.append(f"{result['startup_alerts']} alert(s) arrived at startup with both "
                         "backends up (see alerts.jsonl)")
        log(f"[{a.label}] lintas up (pid {lintas.pid}), app1 :{p1}, app2 :{p2}, webhook :{hook}; "
            f"{a.kills} kills, bound fall x interval + timeout = {bound * 1000:.0f} ms, seed {seed}")

        misses_in_row = 0
        for k in range(1, a.kills + 1):
            delay = rng.uniform(0, interval)
            time.sleep(delay)
            if lintas.poll() is not None:
                raise Failure(f"lintas exited (status {lintas.returncode}) during the run; "
                              f"last lines:\n{tail(lintas_log)}")
            start = receiver.count()
            t_kill = time.time()
            procs.kill9(app2)
            row: dict = {"n": k, "delay_ms": delay * 1000, "kill": t_kill}
            down, others = receiver.wait_for(start, "down",
                                             time.monotonic() + bound + a.alert_timeout)
            if others:
                row["other_alerts_before_down"] = [e["alert"] for e in others]
            if down is None:
                row["down_missing"] = True
                got = ", ".join(e["alert"]["kind"] for e in others)
                notes.append(f"[kill {k}] no `down` alert for {TARGET} within "
                             f"{bound + a.alert_timeout:.1f} s of the kill"
                             + (f" (got: {got})" if got else ""))
                log(f"[{a.label}] kill {k}/{a.kills}: NO down alert")
                misses_in_row += 1
            else:
                misses_in_row = 0
                at = down["alert"].get("at_ms", 0) / 1000
                row.update(at_ms=down["alert"].get("at_ms"), recv=down["recv"],
                           detect_ms=(at - t_kill) * 1000,
                           send_ms=(down["recv"] - at) * 1000,
                           total_ms=(down["recv"] - t_kill) * 1000,
                           reason=down["alert"].get("reason"))
                log(f"[{a.label}] kill {k}/{a.kills}: down alert after {row['total_ms']:.0f} ms "
                    f"(detection {row['detect_ms']:.0f}, sending {row['send_ms']:.1f})")
            start = receiver.count()
            app2, t_start, t_listen = backend("app2", p2)
            row["restart"], row["listening"] = t_start, t_listen
            wait_up = (a.rise + 1) * interval + timeout + a.alert_timeout
            up, others = receiver.wait_for(start, "up", time.monotonic() + wait_up)
            if others:
                row["other_alerts_before_up"] = [e["alert"] for e in others]
            if up is None:
                row["up_missing"] = True
                if down is not None:
                    got = ", ".join(e["alert"]["kind"] for e in others)
                    notes.append(f"[kill {k}] no `up` alert for {TARGET} within {wait_up:.1f} s "
                                 "of app2 listening again" + (f" (got: {got})" if got else ""))
                # No alert to go by: give the checks rise rounds (and one more) instead.
                time.sleep(max(0.0, t_listen + (a.rise + 1) * interval - time.time()))
            else:
                row["up_recv"] = up["recv"]
                row["up_ms"] = (up["recv"] - t_listen) * 1000
            result["kills"].append(row)
            if misses_in_row >= 3:
                raise Failure(f"no `down` alert for the last 3 kills; giving up on {a.label}")

        # Late extras (a reminder, a flapping notice) would come in now.
        time.sleep(2 * interval + 1.0)
    except Failure as e:
        notes.append(f"run aborted: {e}".splitlines()[0])
        result["error"] = str(e)
        log(f"[{a.label}] error: {e}")
    finally:
        if lintas is not None:
            alive = lintas.poll() is None
            status = procs.stop(lintas)
            if not alive:
                notes.append(f"lintas exited on its own before the end of the run (status {status})")
            elif status not in (0, None):
                notes.append(f"lintas exited with status {status} on SIGTERM")
            elif status is None:
                notes.append("lintas ignored SIGTERM for 10 s and was killed")
        procs.stop_all()
        receiver.close()

    # Counts of everything the webhook got, by target and kind.
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for e in receiver.events:
        al = e["alert"] or {}
        counts[al.get("target", "(not JSON)")][al.get("kind", "?")] += 1
    result["counts"] = {t: dict(c) for t, c in sorted(counts.items())}
    result["alerts_total"] = len(receiver.events)
    bad_paths = sum(1 for e in receiver.events if e["path"] != "/hook")
    if bad_paths:
        notes.append(f"{bad_paths} POST(s) to a path other than /hook")

    # lintas's own complaints.
    try:
        lines = lintas_log.read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    # Expected: one WARN per kill as the pool takes app2 out of rotation.
    expected = [ln for ln in lines if " WARN " in ln and "backend is out of rotation" in ln
                and "backend=app2 " in ln]
    result["out_of_rotation_warns"] = len(expected)
    if len(expected) != len(result["kills"]):
        notes.append(f"lintas logged {len(expected)} `backend is out of rotation` WARN line(s) for "
                     f"app2 over {len(result['kills'])} kill(s)")
    bad = [ln for ln in lines if re.search(r" (WARN|ERROR) ", ln) and ln not in expected]
    if bad:
        notes.append(f"lintas logged {len(bad)} WARN/ERROR line(s), first: {bad[0][:300]}")
    result["lintas_log_lines"] = len(lines)

    rows = [r for r in result["kills"] if "total_ms" in r]
    summary = {}
    for key in ("total_ms", "detect_ms", "send_ms", "up_ms"):
        vals = [r[key] for r in result["kills"] if key in r]
        summary[key] = {"n": len(vals), "p50": pct(vals, 50), "p90": pct(vals, 90),
                        "max": max(vals) if vals else None, "min": min(vals) if vals else None}
    summary["send_share"] = (sum(r["send_ms"] for r in rows) / sum(r["total_ms"] for r in rows)
                             if rows else None)
    result["summary"] = summary
    Path(a.out).write_text(json.dumps(result, indent=1))
    if rows:
        s = summary
        log(f"[{a.label}] total p50 {s['total_ms']['p50']:.0f} ms, max {s['total_ms']['max']:.0f} ms; "
            f"detection p50 {s['detect_ms']['p50']:.0f} ms; counts {result['counts']}")
    return 1 if "error" in result else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("measure")
    m.add_argument("--bin", required=True)
    m.add_argument("--dir", required=True)
    m.add_argument("--out", required=True)
    m.add_argument("--label", default="run")
    m.add_argument("--kills", type=int, default=20)
    m.add_argument("--interval", default="1s")
    m.add_argument("--timeout", default="500ms")
    m.add_argument("--fall", type=int, default=2)
    m.add_argument("--rise", type=int, default=1)
    m.add_argument("--repeat", default="10s")
    m.add_argument("--flap-changes", type=int, default=0, help="0: lintas's default")
    m.add_argument("--ready-timeout", type=float, default=15)
    m.add_argument("--alert-timeout", type=float, default=10,
                   help="seconds past the bound before an alert counts as missing")
    m.add_argument("--seed", type=int)
    m.add_argument("--pids-file")
    a = ap.parse_args()

    # SIGTERM (the caller's cleanup) and SIGHUP end the run through the finally blocks.
    def stop(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)
    return measure(a)


if __name__ == "__main__":
    sys.exit(main())
