#!/usr/bin/env python3
"""MQTT 3.1.1 and 5.0 conformance cases driven through paho-mqtt 2.x, against any broker.

    conformance.py --host H --port P [--version 311|5] [--case NAME ...]
                   [--acl-user U --acl-password P --denied-topic T]

Prints one JSON line per case, {"case", "version", "ok", "detail"}, and exits 1 if any case
failed (2 on bad arguments). `detail` is the failure, or on success what the broker chose
where the specification lets it choose (PUBACK 0x10 or 0x00 without subscribers, copies per
overlapping subscription, ...), so a run against Mosquitto records its behaviour.

Design. Every connection is a `Peer`: one paho client, one network loop thread, and
everything the broker sent it (CONNACK, SUBACK, UNSUBACK, PUBACK/PUBCOMP, PUBLISH,
DISCONNECT) appended under one condition variable, so a case waits for a condition with a
deadline and then asserts the exact record. Client ids and topics carry a random run
prefix plus the case name, so runs and cases never see each other's traffic. Absence
("no will after a clean DISCONNECT", "no message after UNSUBSCRIBE") is never shown by
sleeping: a sentinel is published after the event and the case waits for it; what did not
arrive before the sentinel did not arrive. That assumes the broker forwards one
publisher's messages to one subscriber in order, which the specification requires for a
topic (§4.6) and every broker we know of keeps across topics. The one real sleep is in
`message_expiry`, where the passing of time is what is tested.
"""

import argparse
import json
import secrets
import socket
import struct
import sys
import threading
import time
import traceback
from typing import Callable, NamedTuple

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

WAIT = 5.0
"""Seconds any single expected event may take before the case fails."""

SENTINEL = b"~sentinel"

DEVIATIONS = {
    "takeover-without-disconnect": "5.0: a taken-over connection is closed without DISCONNECT 0x8E "
                                   "(§3.1.4-3; Mosquitto 2.0.11)",
    "overlap-qos-not-highest": "3.1.1: one copy for overlapping subscriptions, at the QoS of one of them "
                               "rather than the highest (§3.3.5-1; Mosquitto 2.0.11)",
}
"""Known departures of a reference broker from the specification, each accepted only when
named with --tolerate, so a run against that broker still passes and says what it saw."""


class Failure(Exception):
    """An expectation that did not hold; its text is the case's detail."""


def equal(got, want, what):
    if got != want:
        raise Failure(f"{what}: got {got!r}, want {want!r}")


def check(cond, what):
    if not cond:
        raise Failure(what)


class Msg(NamedTuple):
    topic: str
    payload: bytes
    qos: int
    retain: bool
    props: Properties | None

    def prop(self, name):
        return getattr(self.props, name, None) if self.props is not None else None


class Connack(NamedTuple):
    session_present: bool
    reason: int
    props: Properties | None


class Run:
    """What every case shares: where the broker is, the version, the run's unique prefix."""

    def __init__(self, args, version):
        self.host = args.host
        self.port = args.port
        self.version = version
        self.v5 = version == "5"
        self.args = args
        self.prefix = f"c{secrets.token_hex(4)}v{version}"
        self.case = ""
        self.peers = []
        # One condition for every peer of the run, so a case can wait on several at once.
        self.cond = threading.Condition()

    def wait(self, cond: Callable[[], object], what, within=WAIT):
        deadline = time.monotonic() + within
        with self.cond:
            while True:
                got = cond()
                if got:
                    return got
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Failure(f"no {what} within {within}s")
                self.cond.wait(left)

    def unless(self, holds, deviation, what):
        """Fails with `what` when `holds` is false, unless `deviation` is tolerated."""
        if holds:
            return ""
        if deviation in self.args.tolerate:
            return f"tolerated {deviation}: {what}"
        raise Failure(what)

    def topic(self, *parts):
        return "/".join([self.prefix, self.case, *parts])

    def peer(self, name, **kw):
        p = Peer(self, name, **kw)
        self.peers.append(p)
        return p

    def close_all(self):
        for p in self.peers:
            p.close()
        self.peers = []


class Peer:
    """One connection and everything the broker sent on it."""

    def __init__(self, run, name, clean=True, expiry=None, will=None, auth=None):
        self.run = run
        self.id = f"{run.prefix}-{run.case}-{name}"
        self.v5 = run.v5
        self.cond = run.cond
        self.connacks = []
        self.subacks = {}
        self.unsubacks = {}
        self.acks = {}
        self.messages = []
        self.disconnects = []
        self.closed = False
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.id,
            clean_session=None if self.v5 else clean,
            protocol=mqtt.MQTTv5 if self.v5 else mqtt.MQTTv311,
            reconnect_on_failure=False,
        )
        c.on_connect = self._on_connect
        c.on_subscribe = self._on_subscribe
        c.on_unsubscribe = self._on_unsubscribe
        c.on_publish = self._on_publish
        c.on_message = self._on_message
        c.on_disconnect = self._on_disconnect
        if will is not None:
            c.will_set(**will)
        if auth is not None:
            c.username_pw_set(*auth)
        self.client = c
        kwargs = {}
        if self.v5:
            props = Properties(PacketTypes.CONNECT)
            if expiry is not None:
                props.SessionExpiryInterval = expiry
            kwargs = {"clean_start": clean, "properties": props}
        c.connect(run.host, run.port, keepalive=30, **kwargs)
        c.loop_start()
        self.wait(lambda: self.connacks, "CONNACK")
        self.connack = self.connacks[0]
        equal(self.connack.reason, 0, f"{name}: CONNACK reason code")

    # paho callbacks (network thread) ------------------------------------------------------

    def _record(self, f):
        with self.cond:
            f()
            self.cond.notify_all()

    def _on_connect(self, _c, _u, flags, rc, props):
        self._record(lambda: self.connacks.append(Connack(flags.session_present, rc.value, props)))

    def _on_subscribe(self, _c, _u, mid, rcs, _props):
        self._record(lambda: self.subacks.__setitem__(mid, [rc.value for rc in rcs]))

    def _on_unsubscribe(self, _c, _u, mid, rcs, _props):
        codes = [rc.value for rc in rcs] if isinstance(rcs, list) else [rcs.value]
        self._record(lambda: self.unsubacks.__setitem__(mid, codes))

    def _on_publish(self, _c, _u, mid, rc, _props):
        self._record(lambda: self.acks.__setitem__(mid, rc.value))

    def _on_message(self, _c, _u, m):
        msg = Msg(m.topic, bytes(m.payload), m.qos, bool(m.retain), getattr(m, "properties", None))
        self._record(lambda: self.messages.append(msg))

    def _on_disconnect(self, _c, _u, flags, rc, _props):
        self._record(lambda: self.disconnects.append((rc.value, flags.is_disconnect_packet_from_server)))

    # what cases call ----------------------------------------------------------------------

    def wait(self, cond: Callable[[], object], what, within=WAIT):
        return self.run.wait(cond, f"{what} at {self.id}", within)

    def subscribe(self, *subs, props=None):
        """Each sub is (filter, qos) or (filter, SubscribeOptions); returns the reason codes."""
        kw = {"properties": props} if props is not None else {}
        rc, mid = self.client.subscribe(list(subs), **kw)
        equal(rc, mqtt.MQTT_ERR_SUCCESS, "subscribe() queued")
        return self.wait(lambda: self.subacks.get(mid), f"SUBACK for {[s[0] for s in subs]}")

    def unsubscribe(self, *filters):
        rc, mid = self.client.unsubscribe(list(filters))
        equal(rc, mqtt.MQTT_ERR_SUCCESS, "unsubscribe() queued")
        # Wrapped in a list: 3.1.1's UNSUBACK has no reason codes, and [] would read as "not yet".
        return self.wait(lambda: self.unsubacks.get(mid) is not None and [self.unsubacks[mid]], "UNSUBACK")[0]

    def publish(self, topic, payload, qos=0, retain=False, props=None):
        """Publishes and waits for the flow to end; returns the PUBACK/PUBCOMP reason code."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain, properties=props)
        equal(info.rc, mqtt.MQTT_ERR_SUCCESS, f"publish({topic!r}) queued")
        if qos == 0:
            info.wait_for_publish(WAIT)
            check(info.is_published(), f"{self.id}: QoS 0 PUBLISH to {topic!r} not sent within {WAIT}s")
            return 0
        return self.wait(lambda: info.mid in self.acks and [self.acks[info.mid]], f"ack of QoS {qos} PUBLISH")[0]

    def received(self, n, what="messages"):
        """Waits until at least n messages arrived; returns all of them."""
        self.wait(lambda: len(self.messages) >= n, f"{n} {what} (have {len(self.messages)})")
        with self.cond:
            return list(self.messages)

    def until_sentinel(self, topic, publisher, qos=2):
        """Publishes the sentinel on `topic` from `publisher`; returns what came before it.

        QoS 2 by default because paho hands a QoS 2 message over at PUBREL, a round trip
        after its PUBLISH: a QoS 1 sentinel could overtake one (the subscription's QoS caps
        the sentinel's, so it never overtakes a lower QoS)."""
        publisher.publish(topic, SENTINEL, qos=qos)
        return self.before_sentinel(topic)

    def before_sentinel(self, topic):
        """Waits for a sentinel someone published on `topic`; returns what came before it."""

        def at(m):
            return m.payload == SENTINEL and m.topic == topic

        self.wait(lambda: any(at(m) for m in self.messages), f"sentinel on {topic}")
        with self.cond:
            return list(self.messages[: next(i for i, m in enumerate(self.messages) if at(m))])

    def disconnect(self, reason=None):
        kw = {}
        if reason is not None:
            kw["reasoncode"] = ReasonCode(PacketTypes.DISCONNECT, identifier=reason)
        self.client.disconnect(**kw)
        self.wait(lambda: self.disconnects, "disconnect callback")
        self.client.loop_stop()
        self.closed = True

    def kill(self):
        """Ends the connection without DISCONNECT: the loop stops, the socket resets."""
        sock = self.client.socket()
        self.client.loop_stop()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
        self.closed = True

    def close(self):
        if not self.closed:
            self.closed = True
            self.client.disconnect()
            self.client.loop_stop()


def forget_session(run, name):
    """Connects `name` clean and leaves, so a persistent session does not outlive its case."""
    run.peer(name, clean=True).disconnect()


def pub_props(**kw):
    p = Properties(PacketTypes.PUBLISH)
    for k, v in kw.items():
        setattr(p, k, v)
    return p


def expect_msgs(got, want, what):
    """Compares (topic, payload, qos, retain) of each received message, in order."""
    equal([(m.topic, m.payload, m.qos, m.retain) for m in got], want, what)


CASES = {}


def case(*versions, acl=False):
    def register(f):
        CASES[f.__name__] = (f, versions, acl)
        return f

    return register


# QoS flows ----------------------------------------------------------------------------------


def round_trip(run, qos):
    t = run.topic("t")
    sub = run.peer("sub")
    equal(sub.subscribe((t, qos)), [qos], "SUBACK granted QoS")
    pub = run.peer("pub")
    for payload in (b"one", b"\x00\x01\xfe\xff"):
        equal(pub.publish(t, payload, qos=qos), 0, f"QoS {qos} ack reason")
    expect_msgs(sub.until_sentinel(t, pub, qos=qos), [(t, b"one", qos, False), (t, b"\x00\x01\xfe\xff", qos, False)],
                "messages received, once each")


@case("311", "5")
def qos0(run):
    round_trip(run, 0)


@case("311", "5")
def qos1(run):
    round_trip(run, 1)


@case("311", "5")
def qos2(run):
    round_trip(run, 2)


@case("311", "5")
def qos_downgrade(run):
    """A QoS 2 PUBLISH reaches a QoS 1 subscription at QoS 1, and a QoS 0 one at QoS 0."""
    t = run.topic("t")
    s1 = run.peer("s1")
    equal(s1.subscribe((t, 1)), [1], "SUBACK")
    s0 = run.peer("s0")
    equal(s0.subscribe((t, 0)), [0], "SUBACK")
    pub = run.peer("pub")
    equal(pub.publish(t, b"down", qos=2), 0, "PUBCOMP reason")
    pub.publish(t, SENTINEL, qos=2)
    expect_msgs(s1.before_sentinel(t), [(t, b"down", 1, False)], "QoS 1 subscriber")
    expect_msgs(s0.before_sentinel(t), [(t, b"down", 0, False)], "QoS 0 subscriber")


# Retained messages --------------------------------------------------------------------------


@case("311", "5")
def retained_set(run):
    t = run.topic("r")
    pub = run.peer("pub")
    pub.publish(t, b"kept", qos=1, retain=True)
    s = run.peer("s")
    equal(s.subscribe((t, 2)), [2], "SUBACK")
    expect_msgs(s.until_sentinel(t, pub), [(t, b"kept", 1, True)], "retained message on subscribe")
    pub.publish(t, b"", qos=1, retain=True)


@case("311", "5")
def retained_replaced(run):
    t = run.topic("r")
    pub = run.peer("pub")
    pub.publish(t, b"first", qos=1, retain=True)
    pub.publish(t, b"second", qos=0, retain=True)
    s = run.peer("s")
    equal(s.subscribe((t, 1)), [1], "SUBACK")
    expect_msgs(s.until_sentinel(t, pub), [(t, b"second", 0, True)], "only the newest retained message")
    pub.publish(t, b"", qos=1, retain=True)


@case("311", "5")
def retained_cleared(run):
    """An empty retained PUBLISH reaches live subscribers as an empty message and clears."""
    t = run.topic("r")
    pub = run.peer("pub")
    live = run.peer("live")
    live.subscribe((t, 1))
    pub.publish(t, b"doomed", qos=1, retain=True)
    pub.publish(t, b"", qos=1, retain=True)
    expect_msgs(live.until_sentinel(t, pub), [(t, b"doomed", 1, False), (t, b"", 1, False)],
                "live subscriber sees the retained message and the empty one")
    late = run.peer("late")
    late.subscribe((t, 1))
    expect_msgs(late.until_sentinel(t, pub), [], "retained messages after the clear")


@case("311", "5")
def retain_flag_live_vs_retained(run):
    """Live delivery of a retained PUBLISH has RETAIN 0; delivery on subscribe has RETAIN 1."""
    t = run.topic("r")
    live = run.peer("live")
    live.subscribe((t, 1))
    pub = run.peer("pub")
    pub.publish(t, b"flag", qos=1, retain=True)
    expect_msgs(live.until_sentinel(t, pub), [(t, b"flag", 1, False)], "live delivery")
    late = run.peer("late")
    late.subscribe((t, 1))
    expect_msgs(late.until_sentinel(t, pub), [(t, b"flag", 1, True)], "delivery on subscribe")
    pub.publish(t, b"", qos=1, retain=True)


# Wildcards ----------------------------------------------------------------------------------

WILD_TOPICS = ["a", "a/b", "a/b/c", "a//c", "a/b/c/d", "a/x/c", "b/b/c"]


def wildcard(run, flt, want):
    base = run.topic()
    s = run.peer("s")
    equal(s.subscribe((f"{base}/{flt}", 1)), [1], "SUBACK")
    pub = run.peer("pub")
    for t in WILD_TOPICS:
        pub.publish(f"{base}/{t}", t.encode(), qos=1)
    got = s.until_sentinel(f"{base}/{want[0]}", pub)
    equal([m.topic[len(base) + 1:] for m in got], want, f"topics matched by {flt!r}")


@case("311", "5")
def wildcard_plus(run):
    wildcard(run, "a/+/c", ["a/b/c", "a//c", "a/x/c"])


@case("311", "5")
def wildcard_hash(run):
    wildcard(run, "a/#", ["a", "a/b", "a/b/c", "a//c", "a/b/c/d", "a/x/c"])


@case("311", "5")
def hash_excludes_dollar(run):
    """`#` and `+/...` match no topic starting with `$` (§4.7.2): neither a client's
    `$conf/...` PUBLISH, which an exact filter receives, nor the broker's retained `$SYS`
    topics, which `$SYS/#` receives (the detail says how many; a broker without `$SYS` has
    none, and only the `$conf` half is tested)."""
    dollar = f"$conf/{run.topic('d')}"
    plain = f"x/{run.topic('d')}"
    sys_topics = run.peer("sys")
    sys_topics.subscribe(("$SYS/#", 0), (plain, 0))
    everything = run.peer("hash")
    everything.subscribe(("#", 0))
    plus = run.peer("plus")
    plus.subscribe((f"+/{run.topic('d')}", 0))
    exact = run.peer("exact")
    exact.subscribe((dollar, 0))
    pub = run.peer("pub")
    pub.publish(dollar, b"dollar", qos=1)
    expect_msgs(exact.received(1), [(dollar, b"dollar", 0, False)], "exact subscriber of the $ topic")
    seen = {m.topic for m in sys_topics.until_sentinel(plain, pub)}
    check(all(t.startswith("$SYS/") for t in seen), f"'$SYS/#' received {sorted(seen)}")
    equal([m.topic for m in everything.before_sentinel(plain) if m.topic.startswith("$")], [],
          "'#' received $-topics")
    equal(plus.before_sentinel(plain), [], "'+/...' received $-topic messages")
    return f"{len(seen)} $SYS topics seen by '$SYS/#'"


# Will ---------------------------------------------------------------------------------------


def will_of(run, t):
    w = {"topic": t, "payload": b"gone", "qos": 1, "retain": False}
    if run.v5:
        p = Properties(PacketTypes.WILLMESSAGE)
        p.UserProperty = [("who", "will")]
        p.ContentType = "text/plain"
        w["properties"] = p
    return w


@case("311", "5")
def will_on_abrupt_close(run):
    t = run.topic("will")
    watch = run.peer("watch")
    watch.subscribe((t, 2))
    doomed = run.peer("doomed", will=will_of(run, t))
    doomed.kill()
    watch.received(1, "will")
    got = watch.until_sentinel(t, run.peer("pub"))
    expect_msgs(got, [(t, b"gone", 1, False)], "will message, once")
    if run.v5:
        equal(got[0].prop("UserProperty"), [("who", "will")], "will user property")
        equal(got[0].prop("ContentType"), "text/plain", "will content type")


@case("311", "5")
def no_will_on_disconnect(run):
    t = run.topic("will")
    watch = run.peer("watch")
    watch.subscribe((t, 2))
    run.peer("leaver", will=will_of(run, t)).disconnect()
    pub = run.peer("pub")
    expect_msgs(watch.until_sentinel(t, pub), [], "messages after a clean DISCONNECT")


@case("5")
def will_on_disconnect_0x04(run):
    """DISCONNECT with reason 0x04 (Disconnect with Will Message) publishes the will."""
    t = run.topic("will")
    watch = run.peer("watch")
    watch.subscribe((t, 2))
    run.peer("leaver", will=will_of(run, t)).disconnect(reason=0x04)
    watch.received(1, "will")
    expect_msgs(watch.until_sentinel(t, run.peer("pub")), [(t, b"gone", 1, False)], "will message, once")


# Sessions -----------------------------------------------------------------------------------


@case("311", "5")
def session_resume(run):
    """Messages published while a persistent session is away arrive once on its return."""
    t = run.topic("q")
    first = run.peer("sub", clean=False, expiry=300)
    equal(first.connack.session_present, False, "session_present on the first connect")
    equal(first.subscribe((t, 2)), [2], "SUBACK")
    first.disconnect()
    pub = run.peer("pub")
    equal(pub.publish(t, b"q1", qos=1), 0, "PUBACK reason")
    equal(pub.publish(t, b"q2", qos=2), 0, "PUBCOMP reason")
    back = run.peer("sub", clean=False, expiry=300)
    equal(back.connack.session_present, True, "session_present on return")
    expect_msgs(back.until_sentinel(t, pub), [(t, b"q1", 1, False), (t, b"q2", 2, False)],
                "queued messages, once each")
    back.disconnect()
    forget_session(run, "sub")


@case("311", "5")
def clean_start_discards_session(run):
    t = run.topic("q")
    first = run.peer("sub", clean=False, expiry=300)
    first.subscribe((t, 1))
    first.disconnect()
    pub = run.peer("pub")
    pub.publish(t, b"lost", qos=1)
    fresh = run.peer("sub", clean=True)
    equal(fresh.connack.session_present, False, "session_present with clean start")
    fresh.subscribe((t, 1))
    expect_msgs(fresh.until_sentinel(t, pub), [], "messages of the discarded session")


@case("5")
def session_expiry_zero_ends_session(run):
    """Without Session Expiry Interval a 5.0 session ends with the connection (§3.1.2.11.2)."""
    t = run.topic("q")
    first = run.peer("sub", clean=False)
    first.subscribe((t, 1))
    first.disconnect()
    back = run.peer("sub", clean=False)
    equal(back.connack.session_present, False, "session_present after expiry 0")
    other = run.topic("other")
    back.subscribe((other, 1))
    pub = run.peer("pub")
    pub.publish(t, b"old", qos=1)
    expect_msgs(back.until_sentinel(other, pub), [], "messages for the ended session's subscription")


@case("311", "5")
def takeover(run):
    """A second connection with the same client id closes the first (5.0: DISCONNECT 0x8E)."""
    t = run.topic("t")
    first = run.peer("same")
    second = run.peer("same")
    got = first.wait(lambda: first.disconnects, "disconnect of the first connection")
    note = ""
    if run.v5:
        note = run.unless(got[0] == (0x8E, True), "takeover-without-disconnect",
                          f"(reason, from server) on the first connection: got {got[0]}, want (0x8E, True)")
    equal(second.disconnects, [], "disconnects of the second connection")
    equal(second.subscribe((t, 1)), [1], "SUBACK on the second connection")
    pub = run.peer("pub")
    pub.publish(t, b"after", qos=1)
    expect_msgs(second.until_sentinel(t, pub), [(t, b"after", 1, False)], "second connection receives")
    return note


# Subscriptions ------------------------------------------------------------------------------


@case("311", "5")
def unsubscribe(run):
    t = run.topic("t")
    other = run.topic("other")
    s = run.peer("s")
    equal(s.subscribe((t, 1), (other, 1)), [1, 1], "SUBACK")
    pub = run.peer("pub")
    pub.publish(t, b"before", qos=1)
    expect_msgs(s.received(1), [(t, b"before", 1, False)], "before UNSUBSCRIBE")
    codes = s.unsubscribe(t)
    if run.v5:
        equal(codes, [0], "UNSUBACK reason codes")
    pub.publish(t, b"after", qos=1)
    expect_msgs(s.until_sentinel(other, pub), [(t, b"before", 1, False)], "messages after UNSUBSCRIBE")


@case("5")
def unsubscribe_unknown_filter(run):
    """UNSUBSCRIBE of a filter never subscribed: 0x11 (No subscription existed) or 0x00."""
    codes = run.peer("s").unsubscribe(run.topic("never"))
    check(codes in ([0x11], [0x00]), f"UNSUBACK reason codes {codes}")
    return f"UNSUBACK {codes[0]:#04x}"


@case("311", "5")
def shared_subscription(run):
    """30 messages over `$share/g/...` with 3 members: each delivered once, every member used."""
    t = run.topic("s")
    end = run.topic("end")
    members = [run.peer(f"m{i}") for i in range(3)]
    for m in members:
        equal(m.subscribe((f"$share/g/{t}", 1), (end, 1)), [1, 1], "SUBACK of a shared and a plain subscription")
    pub = run.peer("pub")
    sent = [f"n{i}".encode() for i in range(30)]
    for p in sent:
        pub.publish(t, p, qos=1)
    pub.publish(end, SENTINEL, qos=1)
    for m in members:
        m.before_sentinel(end)
    got = [msg.payload for m in members for msg in m.messages if msg.topic == t]
    equal(sorted(got), sorted(sent), "payloads received by the group")
    counts = [sum(1 for msg in m.messages if msg.topic == t) for m in members]
    check(all(c >= 1 for c in counts), f"a member received nothing: {counts}")
    return f"per member {counts}"


@case("311", "5")
def overlapping_subscriptions(run):
    """Two filters of one client match a PUBLISH: one copy at the highest QoS, or one per
    subscription (5.0 allows both); a single copy carries every Subscription Identifier."""
    t = run.topic("o", "x")
    s = run.peer("s")
    if run.v5:
        s.subscribe((t, 1), props=sub_id(1))
        s.subscribe((run.topic("o", "#"), 2), props=sub_id(2))
    else:
        s.subscribe((t, 1), (run.topic("o", "#"), 2))
    pub = run.peer("pub")
    pub.publish(t, b"both", qos=2)
    got = s.until_sentinel(run.topic("o", "end"), pub)
    check(got and all(m.payload == b"both" for m in got), f"received {got}")
    if len(got) == 1:
        if run.v5:
            equal(sorted(got[0].prop("SubscriptionIdentifier") or []), [1, 2], "identifiers on the single copy")
        return "one copy " + run.unless(got[0].qos == 2, "overlap-qos-not-highest",
                                        f"QoS of the single copy: got {got[0].qos}, want 2")
    equal(sorted(m.qos for m in got), [1, 2], "QoS of the copies")
    if run.v5:
        equal(sorted(tuple(m.prop("SubscriptionIdentifier") or []) for m in got), [(1,), (2,)], "identifiers")
    return f"{len(got)} copies, one per subscription"


# 5.0 properties and options -----------------------------------------------------------------


def sub_id(n):
    p = Properties(PacketTypes.SUBSCRIBE)
    p.SubscriptionIdentifier = n
    return p


@case("5")
def user_properties(run):
    """User properties reach the subscriber in order, repeated names included (§3.3.2.3.7)."""
    t = run.topic("t")
    s = run.peer("s")
    s.subscribe((t, 1))
    pairs = [("b", "2"), ("a", "1"), ("b", "3"), ("ключ", "значение")]
    pub = run.peer("pub")
    pub.publish(t, b"p", qos=1, props=pub_props(UserProperty=pairs))
    got = s.until_sentinel(t, pub)
    expect_msgs(got, [(t, b"p", 1, False)], "messages")
    equal(got[0].prop("UserProperty"), pairs, "user properties")


@case("5")
def request_response_properties(run):
    t = run.topic("t")
    s = run.peer("s")
    s.subscribe((t, 1))
    props = pub_props(ContentType="application/json", ResponseTopic=run.topic("reply"),
                      CorrelationData=b"\x00corr\xff", PayloadFormatIndicator=1)
    pub = run.peer("pub")
    pub.publish(t, b"{}", qos=1, props=props)
    got = s.until_sentinel(t, pub)
    expect_msgs(got, [(t, b"{}", 1, False)], "messages")
    m = got[0]
    equal((m.prop("ContentType"), m.prop("ResponseTopic"), m.prop("CorrelationData"), m.prop("PayloadFormatIndicator")),
          ("application/json", run.topic("reply"), b"\x00corr\xff", 1), "forwarded properties")


@case("5")
def message_expiry(run):
    """A message with expiry 1 s queued for an offline session is gone 3 s later; one with
    100 s arrives with the interval lowered by the time it waited (§3.3.2.3.3)."""
    t = run.topic("q")
    first = run.peer("sub", clean=False, expiry=300)
    first.subscribe((t, 1))
    first.disconnect()
    pub = run.peer("pub")
    pub.publish(t, b"short", qos=1, props=pub_props(MessageExpiryInterval=1))
    pub.publish(t, b"long", qos=1, props=pub_props(MessageExpiryInterval=100))
    time.sleep(3)
    back = run.peer("sub", clean=False, expiry=300)
    equal(back.connack.session_present, True, "session_present")
    got = back.until_sentinel(t, pub)
    expect_msgs(got, [(t, b"long", 1, False)], "messages after 3 s")
    left = got[0].prop("MessageExpiryInterval")
    check(left is not None and 90 <= left <= 97, f"Message Expiry Interval forwarded as {left}, want 90..=97")
    back.disconnect()
    forget_session(run, "sub")
    return f"expiry forwarded as {left}"


@case("5")
def subscription_identifier(run):
    t = run.topic("t")
    s = run.peer("s")
    s.subscribe((t, 1), props=sub_id(7))
    pub = run.peer("pub")
    pub.publish(t, b"id", qos=1)
    got = s.until_sentinel(t, pub)
    expect_msgs(got, [(t, b"id", 1, False)], "messages")
    equal(got[0].prop("SubscriptionIdentifier"), [7], "Subscription Identifier")


@case("5")
def no_local(run):
    t = run.topic("t")
    me = run.peer("me")
    me.subscribe((t, SubscribeOptions(qos=1, noLocal=True)))
    me.publish(t, b"mine", qos=1)
    expect_msgs(me.until_sentinel(t, run.peer("other")), [], "own messages with No Local")


@case("5")
def retain_as_published(run):
    t = run.topic("t")
    rap = run.peer("rap")
    rap.subscribe((t, SubscribeOptions(qos=1, retainAsPublished=True)))
    plain = run.peer("plain")
    plain.subscribe((t, SubscribeOptions(qos=1, retainAsPublished=False)))
    pub = run.peer("pub")
    pub.publish(t, b"r", qos=1, retain=True)
    pub.publish(t, b"n", qos=1, retain=False)
    pub.publish(t, SENTINEL, qos=2)
    expect_msgs(rap.before_sentinel(t), [(t, b"r", 1, True), (t, b"n", 1, False)], "Retain As Published")
    expect_msgs(plain.before_sentinel(t), [(t, b"r", 1, False), (t, b"n", 1, False)], "without Retain As Published")
    pub.publish(t, b"", qos=1, retain=True)


@case("5")
def retain_handling(run):
    """0 sends retained on every SUBSCRIBE, 1 only when the subscription is new, 2 never."""
    t = run.topic("t")
    pub = run.peer("pub")
    pub.publish(t, b"kept", qos=1, retain=True)
    seen = []
    for rh in (0, 1, 2):
        s = run.peer(f"rh{rh}")
        for _ in range(2):
            s.subscribe((t, SubscribeOptions(qos=1, retainHandling=rh)))
        seen.append(len(s.until_sentinel(t, pub)))
    equal(seen, [2, 1, 0], "retained deliveries for two SUBSCRIBEs with Retain Handling 0, 1, 2")
    pub.publish(t, b"", qos=1, retain=True)


@case("5")
def topic_alias(run):
    """A client-set Topic Alias names the topic on later PUBLISHes with an empty topic."""
    t = run.topic("t")
    s = run.peer("s")
    s.subscribe((t, 1))
    pub = run.peer("pub")
    maximum = pub.connack.props.TopicAliasMaximum if hasattr(pub.connack.props, "TopicAliasMaximum") else 0
    check(maximum >= 1, f"CONNACK Topic Alias Maximum {maximum}")
    pub.publish(t, b"set", qos=1, props=pub_props(TopicAlias=1))
    pub.publish("", b"used", qos=1, props=pub_props(TopicAlias=1))
    got = s.until_sentinel(t, pub)
    expect_msgs(got, [(t, b"set", 1, False), (t, b"used", 1, False)], "messages by alias")
    equal([m.prop("TopicAlias") for m in got], [None, None], "aliases towards a client that allows none")
    return f"Topic Alias Maximum {maximum}"


@case("5")
def puback_no_subscribers(run):
    """PUBACK reason for a PUBLISH no one subscribed to: 0x10 (No matching subscribers) or 0x00."""
    code = run.peer("pub").publish(run.topic("nobody"), b"x", qos=1)
    check(code in (0x00, 0x10), f"PUBACK reason {code:#04x}")
    return f"PUBACK {code:#04x}"


# ACL ----------------------------------------------------------------------------------------


@case("311", "5", acl=True)
def acl_subscribe_denied(run):
    """SUBACK 0x80 (3.1.1) / 0x87 Not authorized (5.0) for a filter the user may not read."""
    a = run.args
    s = run.peer("acl", auth=(a.acl_user, a.acl_password))
    equal(s.subscribe((a.denied_topic, 1)), [0x87 if run.v5 else 0x80], "SUBACK reason codes")
    equal(s.subscribe((a.denied_topic, 1)), [0x87 if run.v5 else 0x80], "SUBACK reason codes, again")


@case("311", "5", acl=True)
def acl_publish_denied(run):
    """5.0: PUBACK 0x87 for a topic the user may not write; 3.1.1 has no way to say it, so
    a plain PUBACK; the connection stays up in both, as a second PUBLISH shows."""
    a = run.args
    p = run.peer("acl", auth=(a.acl_user, a.acl_password))
    for attempt in ("first", "second"):
        equal(p.publish(a.denied_topic, b"denied", qos=1), 0x87 if run.v5 else 0x00, f"{attempt} PUBACK reason")
    equal(p.disconnects, [], "disconnects")


# Driver -------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--version", choices=["311", "5"], action="append",
                    help="protocol version; repeat for both (default: both)")
    ap.add_argument("--case", action="append", help="run only this case; repeatable")
    ap.add_argument("--acl-user")
    ap.add_argument("--acl-password")
    ap.add_argument("--denied-topic")
    ap.add_argument("--tolerate", action="append", default=[], choices=sorted(DEVIATIONS),
                    help="accept this known departure from the specification; repeatable")
    ap.add_argument("--list", action="store_true", help="print the case names and exit")
    args = ap.parse_args()
    if args.list:
        print("\n".join(CASES))
        return 0
    acl = args.acl_user is not None
    if acl and (args.acl_password is None or args.denied_topic is None):
        ap.error("--acl-user needs --acl-password and --denied-topic")
    unknown = set(args.case or []) - set(CASES)
    if unknown:
        ap.error(f"unknown case(s) {sorted(unknown)}; --list shows them")
    failed = 0
    for version in args.version or ["311", "5"]:
        run = Run(args, version)
        for name, (f, versions, needs_acl) in CASES.items():
            if version not in versions or (args.case and name not in args.case) or (needs_acl and not acl):
                continue
            run.case = name
            try:
                detail = f(run) or ""
                ok = True
            except Failure as e:
                ok, detail = False, str(e)
            except Exception as e:  # a broker that breaks the client library fails the case too
                ok, detail = False, f"{type(e).__name__}: {e} at {traceback.format_exc(limit=-1).strip()}"
            finally:
                run.close_all()
            failed += not ok
            print(json.dumps({"case": name, "version": version, "ok": ok, "detail": detail}), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
