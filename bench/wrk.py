"""Parsing `wrk --latency` output, shared by the benchmark reports."""

from __future__ import annotations

import re
from dataclasses import dataclass

UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


@dataclass
class Wrk:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int  # socket errors + non-2xx/3xx responses
    requests: int  # responses wrk completed ("N requests in ...")
    seconds: float  # how long the run took


def parse_wrk(text: str) -> Wrk:
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    requests = re.search(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m)", text, re.M)
    pct = {
        m[1]: float(m[2]) * UNIT_MS[m[3]]
        for m in re.finditer(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)
    }
    if not rps or not requests or "50" not in pct or "99" not in pct:
        raise ValueError("not a complete `wrk --latency` output")
    errors = 0
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if sock:
        errors += sum(int(g) for g in sock.groups())
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if non2xx:
        errors += int(non2xx[1])
    seconds = float(requests[2]) * UNIT_MS[requests[3]] / 1e3
    return Wrk(float(rps[1]), pct["50"], pct["99"], errors, int(requests[1]), seconds)
