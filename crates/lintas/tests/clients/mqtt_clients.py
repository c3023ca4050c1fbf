#!/usr/bin/env python3
"""Many paho-mqtt clients in one process, driven by the MQTT cluster tests.

Usage: mqtt_clients.py PLAN.json

The plan is {"clients": [CLIENT, ...]}, each CLIENT one of
  {"id": ..., "host": ..., "port": ..., "clean": bool, "subscribe": [FILTER, ...], "qos": 0-2,
   "probes": N}
  {"id": ..., "host": ..., "port": ..., "clean": bool,
   "publish": {"topic": ..., "count": M, "qos": [Q, ...]}}
A publisher's message i has QoS qos[i % len(qos)] and the payload "ID SEQ QOS", so a
subscriber's list of payloads says who sent what, at which QoS, how often. A probe
(payload "ID probe", QoS 0) is not listed: a subscriber counts as probed once it got one from
N different publishers, which tells the test its subscription is known wherever they are.

One thread drives every client through paho's external-loop interface (loop_read,
loop_write, loop_misc over one selector): hundreds of loop_start threads would be heavier
than the broker under test. A client whose connection ends reconnects (to the same address,
every 100 ms until it succeeds); one that comes back without its session (session present 0)
subscribes again and is listed in "sessions_lost".

Standard output, one JSON object a line:
  {"event": "ready"}                           every client connected (and SUBACKed) once,
                                               right after a progress line
  {"event": "progress", "received": N, "acked": N, "connected": N, "subscribed": N,
   (received: distinct messages, a duplicate counted once)
   "probed": N, "clients": N, "reconnects": N} every 200 ms (subscribed: connected clients
                                               whose subscriptions are in place)
  {"event": "report", "received": {ID: [PAYLOAD, ...]}, "acked": {ID: [PAYLOAD, ...]},
   "sessions_lost": [ID, ...], "reconnects": N}   on "report", then the process exits
Standard input, one command a line: "probe" (every publisher sends one probe), "publish"
(every publisher queues its next `count` messages, SEQ going on from the last round; paho keeps those of QoS > 0 across
reconnections), "report" (also what the end of standard input means).
"""
import json
import selectors
import sys
import time

import paho.mqtt.client as mqtt

RECONNECT_EVERY = 0.1
PROGRESS_EVERY = 0.2


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


class Driver:
    def __init__(self, plan):
        self.sel = selectors.DefaultSelector()
        self.clients = {}
        self.spec = {}
        self.received = {}
        self.distinct = 0  # payloads received, each counted once per subscriber
        self.seen = {}
        self.probes = {}  # subscriber id -> publishers it got a probe from
        self.published = {}
        self.sessions_lost = set()
        self.reconnects = 0
        self.connected = set()
        self.subscribed = set()
        self.ready_sent = False
        self.ever_connected = set()
        self.due = {}  # client id -> time of its next reconnection attempt
        for c in plan["clients"]:
            self.add(c)

    def add(self, spec):
        cid = spec["id"]
        client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=cid,
            clean_session=spec.get("clean", True),
            protocol=mqtt.MQTTv311,
        )
        client.max_inflight_messages_set(20)
        client.user_data_set(cid)
        client.on_connect = self.on_connect
        client.on_disconnect = self.on_disconnect
        client.on_subscribe = self.on_subscribe
        client.on_message = self.on_message
        client.on_socket_open = self.on_socket_open
        client.on_socket_close = self.on_socket_close
        client.on_socket_register_write = self.on_register_write
        client.on_socket_unregister_write = self.on_unregister_write
        self.spec[cid] = spec
        self.clients[cid] = client
        if "subscribe" in spec:
            self.received[cid] = []
            self.seen[cid] = set()
            self.probes[cid] = set()
        if "publish" in spec:
            self.published[cid] = []
        self.due[cid] = 0.0

    # --- sockets: one selector for every client --------------------------------------
    def watch(self, client, sock, write):
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if write else 0)
        try:
            self.sel.modify(sock, events, client)
        except KeyError:
            self.sel.register(sock, events, client)

    def on_socket_open(self, client, userdata, sock):
        self.watch(client, sock, client.want_write())

    def on_socket_close(self, client, userdata, sock):
        try:
            self.sel.unregister(sock)
        except (KeyError, ValueError):
            pass

    def on_register_write(self, client, userdata, sock):
        self.watch(client, sock, True)

    def on_unregister_write(self, client, userdata, sock):
        try:
            self.sel.modify(sock, selectors.EVENT_READ, client)
        except (KeyError, ValueError):
            pass

    # --- MQTT callbacks --------------------------------------------------------------
    def on_connect(self, client, cid, flags, reason, properties):
        if reason.is_failure:
            return
        self.connected.add(cid)
        spec = self.spec[cid]
        again = cid in self.ever_connected
        self.ever_connected.add(cid)
        if again:
            self.reconnects += 1
        if "subscribe" in spec and not flags.session_present:
            if again:
                self.sessions_lost.add(cid)
            client.subscribe([(f, spec.get("qos", 0)) for f in spec["subscribe"]])
        else:
            self.subscribed.add(cid)

    def on_subscribe(self, client, cid, mid, reason_codes, properties):
        if any(rc.is_failure for rc in reason_codes):
            emit({"event": "error", "client": cid, "error": f"SUBACK {reason_codes}"})
        self.subscribed.add(cid)

    def on_message(self, client, cid, message):
        payload = message.payload.decode()
        sender, _, what = payload.partition(" ")
        if what == "probe":
            self.probes[cid].add(sender)
        else:
            self.received[cid].append(payload)
            if payload not in self.seen[cid]:
                self.seen[cid].add(payload)
                self.distinct += 1

    def on_disconnect(self, client, cid, flags, reason, properties):
        self.connected.discard(cid)
        self.subscribed.discard(cid)
        self.due[cid] = time.monotonic() + RECONNECT_EVERY

    # --- the loop --------------------------------------------------------------------
    def connect_due(self, now):
        for cid, client in self.clients.items():
            at = self.due.get(cid)
            if at is None or at > now:
                continue
            del self.due[cid]
            spec = self.spec[cid]
            try:
                if cid in self.ever_connected:
                    client.reconnect()
                else:
                    client.connect(spec["host"], spec["port"], keepalive=60)
            except OSError:
                self.due[cid] = now + RECONNECT_EVERY

    def publish(self):
        for cid, client in self.clients.items():
            p = self.spec[cid].get("publish")
            if p is None:
                continue
            levels = p.get("qos", [1])
            first = len(self.published[cid])
            for seq in range(first, first + p["count"]):
                qos = levels[seq % len(levels)]
                payload = f"{cid} {seq} {qos}"
                info = client.publish(p["topic"], payload, qos=qos)
                self.published[cid].append((payload, info))

    def probe(self):
        for cid, client in self.clients.items():
            p = self.spec[cid].get("publish")
            if p is not None:
                client.publish(p["topic"], f"{cid} probe", qos=0)

    def probed(self):
        return sum(
            1 for cid, got in self.probes.items() if len(got) >= self.spec[cid].get("probes", 0)
        )

    def acked(self):
        return {
            cid: [payload for payload, info in msgs if info.is_published()]
            for cid, msgs in self.published.items()
        }

    def command(self, line):
        line = line.strip()
        if line == "publish":
            self.publish()
        elif line == "probe":
            self.probe()
        elif line == "report" or line == "":
            emit({
                "event": "report",
                "received": self.received,
                "acked": self.acked(),
                "sessions_lost": sorted(self.sessions_lost),
                "reconnects": self.reconnects,
            })
            sys.exit(0)
        else:
            emit({"event": "error", "error": f"unknown command {line!r}"})

    def run(self):
        self.sel.register(sys.stdin, selectors.EVENT_READ, None)
        last_misc = last_progress = 0.0
        while True:
            now = time.monotonic()
            self.connect_due(now)
            for key, mask in self.sel.select(timeout=0.05):
                client = key.data
                if client is None:
                    self.command(sys.stdin.readline())
                    continue
                if mask & selectors.EVENT_READ:
                    client.loop_read(100)
                if mask & selectors.EVENT_WRITE and client.want_write():
                    client.loop_write()
            now = time.monotonic()
            if now - last_misc >= 1.0:
                last_misc = now
                for client in self.clients.values():
                    client.loop_misc()
            ready = not self.ready_sent and len(self.subscribed) == len(self.clients)
            if ready or now - last_progress >= PROGRESS_EVERY:
                last_progress = now
                self.progress()
            if ready:
                self.ready_sent = True
                emit({"event": "ready"})

    def progress(self):
        emit({
            "event": "progress",
            "received": self.distinct,
            "acked": sum(len(a) for a in self.acked().values()),
            "connected": len(self.connected),
            "subscribed": len(self.subscribed),
            "probed": self.probed(),
            "clients": len(self.clients),
            "reconnects": self.reconnects,
        })


def main():
    with open(sys.argv[1]) as f:
        plan = json.load(f)
    Driver(plan).run()


if __name__ == "__main__":
    main()
