"""Writes ../assets/openapi.json: the admin API's OpenAPI 3.1 document.

The document is generated from the compact table below so that every operation carries its
request body, its answer and its errors the same way; run `python3 openapi.py` after
changing it and commit both (the console crate's tests run it with --check). crates/lintas/tests/it/console.rs checks that every operation
in the document is served by a node.
"""

import json
import sys
from pathlib import Path

def ref(name):
    return {"$ref": f"#/components/schemas/{name}"}

def obj(props, required=()):
    return {"type": "object", "properties": props, "required": list(required)}

S = {"type": "string"}
I = {"type": "integer"}
N = {"type": "number"}
B = {"type": "boolean"}
MS = {"type": ["integer", "null"], "description": "milliseconds since the Unix epoch"}
def arr(x): return {"type": "array", "items": x}
def nullable(x): return {**x, "type": [x["type"], "null"]} if "type" in x and isinstance(x["type"], str) else {"anyOf": [x, {"type": "null"}]}

SCHEMAS = {
    "Error": obj({"error": {**S, "description": "what was wrong and where, for a person"}}, ["error"]),
    "Login": obj({"user": S, "password": S}, ["user", "password"]),
    "Session": obj({"user": S, "csrf": {"type": ["string", "null"], "description": "send it as X-CSRF-Token on every change; null under basic auth"}}, ["user", "csrf"]),
    "LastCheck": obj({"at_unix_ms": I, "ok": B, "detail": S, "duration_ms": I}),
    "Backend": obj({
        "name": S, "addr": S, "weight": I,
        "max_connections": {**I, "description": "requests (TCP: connections) it takes at once; 0 is no limit"},
        "backup": {**B, "description": "takes traffic only while no primary can"},
        "admin": {"enum": ["enabled", "drain", "disabled"]},
        "health": {"enum": ["up", "down", "ejected"]}, "health_since_unix_ms": {**I, "description": "when health last changed"}, "available": B,
        "in_flight": I, "requests": I, "failures": I, "bytes_in": I, "bytes_out": I,
        "latency_ms": {**N, "description": "the balancer's peak-EWMA estimate (decays toward 30 ms while idle)"},
        "response_ms": {"type": ["number", "null"], "description": "mean measured response time of the last ~256 successful requests; null before the first"},
        "rate": {**I, "description": "requests (TCP: connections) per second over about the last second"},
        "rate_max": {**I, "description": "highest rate since the backend was added"},
        "downtime_ms": {**I, "description": "time spent down or ejected since the backend was added"},
        "downs": {**I, "description": "times its health left up"},
        "last_check": nullable(ref("LastCheck")),
    }),
    "Queue": obj({
        "length": {**I, "description": "requests waiting now for a backend below its max_connections"},
        "max_length": I, "size": {**I, "description": "queue_size"}, "timeout_ms": {**I, "description": "queue_timeout"},
        "queued": I, "served": I, "mean_wait_ms": N, "waited_seconds": N,
        "timeouts": {**I, "description": "refused (503) after waiting queue_timeout"},
        "full": {**I, "description": "refused (503) because queue_size requests already waited"},
    }),
    "Pool": obj({"name": S, "strategy": ref("Strategy"), "hash_key": {"type": ["string", "null"]}, "queue": ref("Queue"), "backends": arr(ref("Backend"))}),
    "Strategy": {"enum": ["round_robin", "weighted_round_robin", "least_connections", "random_two_choices", "peak_ewma", "consistent_hash"]},
    "Listener": obj({
        "name": S, "mode": {"enum": ["tcp", "http"]}, "addr": S, "pool": S,
        "connections": I, "active": I, "requests": I,
        "responses": {**arr(I), "description": "1xx, 2xx, 3xx, 4xx, 5xx"},
        "no_backend": I, "connect_failures": I, "retries": I, "timeouts": I,
        "rate": {**I, "description": "requests (TCP: sessions) per second over about the last second"},
        "rate_max": {**I, "description": "highest rate since the listener started"},
        "access_log_dropped": {**I, "description": "access log lines dropped because the log's writer fell behind"},
    }),
    "DnsEntry": obj({
        "pool": S,
        "backend": {**S, "description": "The entry's name; its backends are this name, or this name with #1, #2..."},
        "address": {**S, "description": "host:port as written"},
        "members": arr(obj({"name": S, "address": S}, ["name", "address"])),
        "failures": {**I, "minimum": 0},
        "error": {**S, "description": "Why the last resolution failed (the last addresses are kept); absent after a success."},
        "next_in_s": {**N, "description": "Seconds until the name is resolved again."},
    }, ["pool", "backend", "address", "members", "failures", "next_in_s"]),
    "Stats": obj({
        "listeners": arr(ref("Listener")), "pools": arr(ref("Pool")),
        "dns": {**arr(ref("DnsEntry")), "description": "Backends written as host names: what each resolves to now, and its failed resolutions."},
    }),
    "Weight": obj({"weight": {**I, "minimum": 0, "maximum": 256}}, ["weight"]),
    "NewBackend": obj({"name": S, "address": {**S, "description": "ip:port"}, "weight": {**I, "default": 1}, "max_connections": {**I, "default": 0}, "backup": {**B, "default": False}}, ["name", "address"]),
    "StrategyChange": obj({"strategy": ref("Strategy"), "hash_key": {**S, "description": "client_ip, header:NAME or cookie:NAME; needed by consistent_hash"}}, ["strategy"]),
    "Application": obj({"id": I, "name": S, "declared": B, "created_ms": I, "rotated_ms": MS}),
    "NewApplication": obj({"name": S}, ["name"]),
    "ApplicationKey": obj({"application": ref("Application"), "key": {**S, "description": "the API key, shown this once; only its hash is kept"}}),
    "DestinationSpec": obj({
        "name": S, "kind": {"enum": ["postgres", "mysql", "sqlite"]},
        "url": {**S, "description": "without a password: postgres://user@host:5432/db, mysql://user@host:3306/db, sqlite:///path"},
        "password": {**S, "description": "stored encrypted, never shown back"},
        "max_connections": {**I, "default": 4},
    }, ["name", "kind", "url"]),
    "DestinationStatus": obj({
        "destination": S, "state": {"enum": ["up", "down"]}, "since_ms": I, "next_offset": {"type": ["integer", "null"]},
        "delivered": I, "dead": I, "attempts": I, "last_error": {"type": ["string", "null"]},
        "last_latency_ms": {"type": ["integer", "null"], "description": "arrival of the last committed batch's oldest record to its commit"},
        "broken_routes": arr(obj({"route": S, "error": S})),
    }),
    "Destination": obj({
        "id": I, "name": S, "kind": S, "url": S, "max_connections": I, "start_offset": I, "declared": B,
        "password_env": {"type": ["string", "null"]},
        "status": nullable(ref("DestinationStatus")),
        "backlog": {"type": ["integer", "null"], "description": "records on the stream this destination has not taken"},
    }),
    "ConnectionTest": obj({"ok": B, "destination": S, "tables": arr(S)}),
    "Schema": obj({"destination": S, "tables": arr(obj({"schema": {"type": ["string", "null"]}, "name": S, "columns": arr(obj({"name": S, "data_type": S, "nullable": B, "has_default": B}))}))}),
    "RouteSpec": obj({
        "application": S, "destination": S, "schema": S, "table": S,
        "operation": {"enum": ["insert", "upsert", "update", "delete"]},
        "columns": {"type": "object", "additionalProperties": S, "description": "record field → table column"},
        "keys": {**arr(S), "description": "columns that identify a row (upsert, update, delete)"},
    }, ["application", "destination", "table", "operation", "columns"]),
    "Route": obj({"id": I, "application": S, "destination": S, "schema": {"type": ["string", "null"]}, "table": S, "operation": S,
                  "columns": {"type": "object", "additionalProperties": S}, "keys": arr(S), "declared": B}),
    "Relay": obj({"applications": arr(ref("Application")), "destinations": arr(ref("Destination")), "routes": arr(ref("Route")), "stream_end": I}),
    "DeliveredBatch": obj({"destination": S, "application": S, "first_id": I, "last_id": I, "records": I, "rows": {**I, "description": "rows the database changed"}, "at_ms": {**I, "description": "when the destination committed the batch"}}),
    "DeadLetter": obj({"destination": S, "application": S, "record_id": I, "route_id": I, "error": S, "data_sent": {"description": "the record as received"}, "row": {"type": "object"}, "status": {"enum": ["dead", "replayed"]}, "at_ms": I}),
    "Retrying": obj({"destination": S, "from_id": {"type": ["integer", "null"]}, "waiting": {"type": ["integer", "null"]}, "attempts": I, "last_error": {"type": ["string", "null"]}}),
    "Deliveries": obj({"delivered": arr(ref("DeliveredBatch")), "dead": arr(ref("DeadLetter")), "retrying": arr(ref("Retrying"))}),
    "RecordDelivery": obj({
        "destination": S, "route_id": I, "table": {"type": ["string", "null"]}, "operation": {"type": ["string", "null"]},
        "status": {"enum": ["delivered", "no matching row", "dead", "replayed", "retrying", "pending"]},
        "row": {"type": ["object", "null"]},
        "row_is": {"enum": ["written", "refused", "planned"], "description": "written: as stored when the destination committed it; refused: a dead letter's; planned: what today's route makes of it"},
        "committed_ms": MS, "error": {"type": ["string", "null"]}, "attempts": {"type": ["integer", "null"]}, "last_error": {"type": ["string", "null"]},
    }),
    "Record": obj({"id": I, "application": S, "received_ms": I, "data_sent": {"description": "the record as received"}, "deliveries": arr(ref("RecordDelivery"))}),
    "Skip": obj({"record": I}, ["record"]),
    "Replayed": obj({"replayed": {}}),
    "Target": obj({
        "name": S, "kind": {"enum": ["http", "tcp"]}, "url": {**S, "description": "http targets"}, "address": {**S, "description": "tcp targets: host:port"},
        "interval": {**S, "default": "10s"}, "timeout": S, "fall": I, "rise": I,
        "expect_status": {**S, "description": "e.g. 200-399"}, "body_contains": S, "declared": B,
    }, ["name", "kind"]),
    "Pause": obj({"pattern": S, "from_ms": I, "until_ms": I, "reason": S}),
    "Watch": obj({"down": arr(obj({"target": S, "since_ms": I})), "pauses": arr(ref("Pause")), "targets": arr(ref("Target")), "host": ref("Host")}),
    "Host": obj({"hostname": S, "os": S, "kernel": S, "cores": I, "uptime_s": I}),
    "Sample": obj({"at_ms": I, "cpu": {**N, "description": "percent"}, "cores": arr(N), "mem_used": I, "mem_total": I, "swap_used": I, "swap_total": I,
                   "load": arr(N), "net_rx_per_s": I, "net_tx_per_s": I, "disks": arr(obj({"mount": S, "used": I, "total": I}))}),
    "Metrics": obj({"host": ref("Host"), "samples": arr(ref("Sample"))}),
    "Processes": obj({"processes": arr(obj({"pid": I, "name": S, "cpu": N, "mem": I}))}),
    "Alerts": obj({"alerts": arr(obj({"at_ms": I, "target": S, "kind": {"type": ["string", "null"]}, "channel": S, "recipient": S, "text": S, "status": S, "attempts": I, "error": {"type": ["string", "null"]}}))}),
    "History": obj({"history": arr(obj({"at_ms": I, "target": S, "detail": S, "up": B, "reason": S}))}),
    "Person": obj({"chat_id": I, "name": {"type": ["string", "null"]}, "email": {"type": ["string", "null"]}, "email_confirmed": B, "registered": B,
                   "access": {"enum": ["pending", "approved", "denied"]}, "admin": B, "admin_in_file": B, "muted_until_ms": I}),
    "People": obj({"people": arr(ref("Person"))}),
    "PersonChange": obj({"person": ref("Person"), "notified": {**B, "description": "whether the bot could tell them"}}),
    "CheckTimes": obj({"target": S, "checks": arr(obj({"at_ms": I, "ms": {**N, "description": "probe duration"}, "ok": B}))}),
    "Silence": obj({"pattern": S, "duration": {**S, "description": "e.g. 30m"}}, ["pattern", "duration"]),
}

# (method, path, summary, request body schema, (status, answer schema or None), extra errors)
OPS = [
    ("post", "/login", "Opens a console session (cookie lintas_session)", "Login", (200, "Session"), [401, 422, 429]),
    ("post", "/logout", "Ends the session and clears its cookie", None, (204, None), []),
    ("get", "/api/session", "Who is logged in, and the CSRF token changes need", None, (200, "Session"), []),
    ("post", "/api/reload", "Re-reads the configuration file (like SIGHUP)", None, (200, None), [422, 500]),
    ("get", "/api/stats", "Every listener and pool", None, (200, "Stats"), []),
    ("get", "/api/pools/{pool}", "One pool", None, (200, "Pool"), [404]),
    ("put", "/api/pools/{pool}/strategy", "Changes the pool's strategy live", "StrategyChange", (200, "Pool"), [404, 422]),
    ("post", "/api/pools/{pool}/backends", "Adds a backend", "NewBackend", (201, "Backend"), [404, 409, 422]),
    ("get", "/api/pools/{pool}/backends/{backend}", "One backend", None, (200, "Backend"), [404]),
    ("delete", "/api/pools/{pool}/backends/{backend}", "Removes a backend; its connections finish", None, (200, "Pool"), [404, 409]),
    ("post", "/api/pools/{pool}/backends/{backend}/drain", "No new traffic; checks go on", None, (200, "Backend"), [404]),
    ("post", "/api/pools/{pool}/backends/{backend}/enable", "Takes traffic again when healthy", None, (200, "Backend"), [404]),
    ("post", "/api/pools/{pool}/backends/{backend}/disable", "Maintenance: no traffic, no checks", None, (200, "Backend"), [404]),
    ("put", "/api/pools/{pool}/backends/{backend}/weight", "Sets the weight (0 takes no new traffic)", "Weight", (200, "Backend"), [404, 422]),
    ("get", "/api/relay", "Applications, destinations with status and backlog, routes", None, (200, "Relay"), []),
    ("post", "/api/relay/applications", "Creates an application; its key is shown this once", "NewApplication", (201, "ApplicationKey"), [409, 422]),
    ("delete", "/api/relay/applications/{name}", "Deletes an application and its routes", None, (204, None), [404, 409]),
    ("post", "/api/relay/applications/{name}/rotate", "A new key; the old one stops working", None, (200, "ApplicationKey"), [404, 409]),
    ("post", "/api/relay/destinations", "Creates a destination once lintas can connect with it; with dry_run=true only tests the connection (200 ConnectionTest)", "DestinationSpec", (201, "Destination"), [409, 422]),
    ("put", "/api/relay/destinations/{name}", "Changes a destination once lintas can connect with the new settings (without password the stored one stays); with dry_run=true only tests", "DestinationSpec", (200, "Destination"), [404, 409, 422]),
    ("delete", "/api/relay/destinations/{name}", "Deletes a destination and its routes", None, (204, None), [404, 409]),
    ("get", "/api/relay/destinations/{name}/schema", "Tables and columns, read live", None, (200, "Schema"), [404, 422, 502]),
    ("post", "/api/relay/destinations/{name}/skip", "Dead-letters the record the destination is stuck on", "Skip", (202, None), [404, 409]),
    ("post", "/api/relay/routes", "Creates a route, checked against the live schema", "RouteSpec", (201, "Route"), [409, 422]),
    ("delete", "/api/relay/routes/{id}", "Deletes a route", None, (204, None), [404, 409]),
    ("get", "/api/relay/deliveries", "The delivery log: delivered batches, dead letters, destinations retrying", None, (200, "Deliveries"), [400, 404]),
    ("get", "/api/relay/records/{id}", "A record: what was sent and, per destination, its status and row", None, (200, "Record"), [404]),
    ("post", "/api/relay/dead-letters/{destination}/{record}/replay", "Writes a dead letter again", None, (200, "Replayed"), [404, 422]),
    ("get", "/api/watch", "What is down, pauses, targets, the host", None, (200, "Watch"), []),
    ("get", "/api/watch/metrics", "Host samples since since_ms (default: the last hour)", None, (200, "Metrics"), []),
    ("get", "/api/watch/top", "The busiest processes", None, (200, "Processes"), []),
    ("get", "/api/watch/alerts", "The alert log, newest first", None, (200, "Alerts"), []),
    ("get", "/api/watch/history", "Targets' state changes, newest first", None, (200, "History"), []),
    ("post", "/api/watch/targets", "Watches a target (kept across restarts)", "Target", (201, "Target"), [409, 422]),
    ("delete", "/api/watch/targets/{name}", "Stops watching a target", None, (204, None), [404, 409]),
    ("get", "/api/watch/targets/{name}/checks", "A target's latest checks, for its response-time graph", None, (200, "CheckTimes"), [404]),
    ("post", "/api/watch/silences", "Silences targets matching a pattern for a while", "Silence", (201, "Pause"), [422]),
    ("delete", "/api/watch/silences", "Ends the silences with a pattern", None, (204, None), [404]),
    ("get", "/api/watch/people", "Everyone who talked to the bot", None, (200, "People"), []),
    ("post", "/api/watch/people/{chat}/approve", "Lets a registration in; told through the bot", None, (200, "PersonChange"), [404, 409]),
    ("post", "/api/watch/people/{chat}/revoke", "Turns a person away; told through the bot", None, (200, "PersonChange"), [404, 409]),
]

QUERIES = {
    "/api/relay/destinations": [("dry_run", B)],
    "/api/relay/deliveries": [("application", S), ("destination", S), ("status", {"enum": ["delivered", "retrying", "dead"]}), ("record", I), ("since_ms", I), ("until_ms", I), ("limit", {**I, "default": 100, "maximum": 1000})],
    "/api/watch/metrics": [("since_ms", I)],
    "/api/watch/top": [("n", {**I, "default": 10, "maximum": 100})],
    "/api/watch/alerts": [("target", S), ("limit", I)],
    "/api/watch/history": [("target", S), ("limit", I)],
    "/api/watch/silences": [("pattern", S)],
}

WHY = {400: "a query value that does not parse", 401: "no valid credentials", 403: "a cross-site change, or a session's change without its X-CSRF-Token",
       404: "no such object", 409: "conflicts with the current state (a taken name, an object declared in the configuration file)",
       413: "body over 64 KiB", 422: "well-formed but refused; the message names the field", 429: "too many failed logins from this address (Retry-After)",
       500: "lintas failed", 502: "the destination answered with an error", 503: "the stream cannot be read now"}

def operation(method, path, summary, body, ok, errors):
    status, answer = ok
    responses = {str(status): {"description": "success"}}
    if answer:
        responses[str(status)]["content"] = {"application/json": {"schema": ref(answer)}}
    for code in sorted(set(errors) | {401, 403 if method != "get" else 401}):
        responses[str(code)] = {"description": WHY[code], "content": {"application/json": {"schema": ref("Error")}}}
    op = {"summary": summary, "operationId": (method + path).replace("/", "_").replace("{", "").replace("}", "").replace("-", "_"), "responses": responses}
    params = [{"name": p[1:-1], "in": "path", "required": True, "schema": S} for p in path.split("/") if p.startswith("{")]
    query = QUERIES.get(path, []) + ([("dry_run", B)] if path == "/api/relay/destinations/{name}" and method == "put" else [])
    params += [{"name": n, "in": "query", "required": False, "schema": sch} for n, sch in query if method == "get" or n in ("dry_run", "pattern")]
    if params:
        op["parameters"] = params
    if body:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": ref(body)}}}
    if path == "/api/relay/destinations" and method == "post":
        op["responses"]["200"] = {"description": "dry_run=true: lintas could connect", "content": {"application/json": {"schema": ref("ConnectionTest")}}}
    if path == "/login":
        op["security"] = []
    return op

paths = {}
for method, path, *rest in OPS:
    paths.setdefault(path, {})[method] = operation(method, path, *rest)

doc = {
    "openapi": "3.1.0",
    "info": {"title": "lintas admin API", "version": "0.1.0",
             "description": "The API the admin console uses, on the admin listener. Every refusal is {\"error\": \"...\"} with a status. Authenticate with HTTP basic auth, or with the console's session cookie plus X-CSRF-Token on changes."},
    "security": [{"basic": []}, {"session": []}],
    "paths": paths,
    "components": {
        "schemas": SCHEMAS,
        "securitySchemes": {"basic": {"type": "http", "scheme": "basic"}, "session": {"type": "apiKey", "in": "cookie", "name": "lintas_session"}},
    },
}

out = Path(__file__).resolve().parent.parent / "assets" / "openapi.json"
text = json.dumps(doc, indent=1, sort_keys=False) + "\n"
if sys.argv[1:] == ["--check"]:
    if out.read_text() != text:
        sys.exit(f"{out} is not what {__file__} writes: run it and commit the result")
else:
    out.write_text(text)
    print(f"wrote {out} ({len(OPS)} operations)")
