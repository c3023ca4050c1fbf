#!/usr/bin/env python3
"""Hub clients written with the Python `websockets` library, driven by the hub cluster tests.

Usage: hub_clients.py PLAN.json

The plan is {"clients": [{"id": ID, "name": NAME, "urls": [URL, ...], "rooms": [ROOM, ...]}]}.
Each client connects anonymously as NAME to its first URL, joins its rooms and records every
frame. When its connection ends it reconnects to its URLs in turn (every 200 ms until one
answers), connects again and joins each room with `recover: {epoch, offset}` (offset: the next
one it expects), and records what the `joined` reply recovered.

Standard input, one JSON command a line:
  {"cmd": "publish", "client": ID, "room": ROOM, "count": N, "tag": TAG}
      the client publishes N messages {"tag": TAG, "seq": S} (S going on from its last), each
      retried every 100 ms while the hub answers `unavailable`, one at a time
  {"cmd": "send", "client": ID, "to": USER, "data": ANY}   a direct message
  {"cmd": "report"}   prints the report
  {"cmd": "quit"}     (also what the end of standard input means)
Standard output, one JSON object a line:
  {"event": "ready"}   every client connected and joined its rooms once
  {"event": "presence", "client": ID, "type": "user_joined"|"user_left"|"listed", "room", "user",
   "at": T}   an event, or a user the `joined` reply listed
  {"event": "reconnected", "client": ID, "node": NODE, "recovered": {ROOM: bool}}
  {"event": "published", "client": ID, "tag": TAG, "count": N}   a publish command is done
  {"event": "error", "client": ID, "error": TEXT}   a publish was refused other than `unavailable`
  {"event": "report", "clients": {ID: {"node": NODE, "messages": {ROOM: [[OFFSET, DATA], ...]},
   "directs": [DATA, ...], "recovered": {ROOM: [bool, ...]}, "refused": N, "slowest": S,
   "reconnects": N}}}
T is seconds on the monotonic clock of this process.
"""
import asyncio
import itertools
import json
import sys
import time

import websockets

RETRY = 0.1
RECONNECT_EVERY = 0.2


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


class Client:
    def __init__(self, spec):
        self.id = spec["id"]
        self.name = spec["name"]
        self.urls = itertools.cycle(spec["urls"])
        self.rooms = spec["rooms"]
        self.node = None
        self.ws = None
        self.next = {}  # room -> (epoch, next offset)
        self.messages = {room: [] for room in self.rooms}
        self.directs = []
        self.recovered = {room: [] for room in self.rooms}
        self.refused = 0
        self.slowest = 0.0  # seconds, the longest a publish took to be acknowledged
        self.reconnects = 0
        self.replies = {}  # id -> future
        self.ids = itertools.count(1)
        self.seq = 0
        self.joined_once = asyncio.Event()

    async def run(self):
        first = True
        while True:
            try:
                async with websockets.connect(next(self.urls), max_size=None) as ws:
                    self.ws = ws
                    await self.session(ws, first)
            except (OSError, websockets.WebSocketException, asyncio.TimeoutError):
                pass
            self.ws = None
            for fut in self.replies.values():
                if not fut.done():
                    fut.set_exception(ConnectionError("connection lost"))
            self.replies.clear()
            first = False
            self.reconnects += 1
            await asyncio.sleep(RECONNECT_EVERY)

    async def session(self, ws, first):
        await ws.send(json.dumps({"type": "connect", "name": self.name}))
        connected = json.loads(await ws.recv())
        if connected.get("type") != "connected":
            raise ConnectionError(f"connect refused: {connected}")
        self.node = connected["node"]
        reader = asyncio.create_task(self.read(ws))
        try:
            recovered = {}
            for room in self.rooms:
                frame = {"type": "join", "room": room}
                if room in self.next:
                    epoch, offset = self.next[room]
                    frame["recover"] = {"epoch": epoch, "offset": offset}
                joined = await self.ask(frame)
                if joined.get("type") != "joined":
                    raise ConnectionError(f"join refused: {joined}")
                if "recovered" in joined:
                    recovered[room] = joined["recovered"]
                    self.recovered[room].append(joined["recovered"])
                self.next[room] = (joined["epoch"], max(joined["offset"], self.next.get(room, ("", 0))[1]))
            if first:
                self.joined_once.set()
            else:
                emit({"event": "reconnected", "client": self.id, "node": self.node, "recovered": recovered})
            await reader
        finally:
            reader.cancel()

    async def read(self, ws):
        async for text in ws:
            frame = json.loads(text)
            kind = frame.get("type")
            if "id" in frame and frame["id"] in self.replies:
                # What a join recovered comes before the live messages read after it.
                for m in frame.get("messages", []) if kind == "joined" else []:
                    self.take(m)
                fut = self.replies.pop(frame["id"])
                if not fut.done():
                    fut.set_result(frame)
            elif kind == "message":
                self.take(frame)
            elif kind == "direct":
                self.directs.append(frame["data"])
            if kind == "joined" and "presence" in frame:
                for p in frame["presence"]:
                    emit({"event": "presence", "client": self.id, "type": "listed",
                          "room": frame["room"], "user": p["user"], "at": time.monotonic()})
            elif kind in ("user_joined", "user_left"):
                emit({"event": "presence", "client": self.id, "type": kind, "room": frame["room"],
                      "user": frame["user"], "at": time.monotonic()})

    def take(self, m):
        room = m["room"]
        self.messages[room].append([m["offset"], m["data"]])
        self.next[room] = (m["epoch"], m["offset"] + 1)

    async def ask(self, frame):
        if self.ws is None:
            raise ConnectionError("not connected")
        n = next(self.ids)
        frame["id"] = n
        fut = asyncio.get_running_loop().create_future()
        self.replies[n] = fut
        await self.ws.send(json.dumps(frame))
        return await asyncio.wait_for(fut, 30)

    async def publish(self, room, count, tag):
        try:
            await self.publish_all(room, count, tag)
        except Exception as e:  # reported, so the test fails with the reason
            emit({"event": "error", "client": self.id, "error": repr(e)})

    async def publish_all(self, room, count, tag):
        for _ in range(count):
            data = {"tag": tag, "seq": self.seq}
            started = time.monotonic()
            while True:
                try:
                    reply = await self.ask({"type": "publish", "room": room, "data": data})
                except (ConnectionError, websockets.WebSocketException, asyncio.TimeoutError):
                    await asyncio.sleep(RETRY)
                    continue
                if reply["type"] == "published":
                    break
                self.refused += 1
                if reply.get("code") != "unavailable":
                    raise RuntimeError(f"publish refused: {reply}")
                await asyncio.sleep(RETRY)
            self.slowest = max(self.slowest, time.monotonic() - started)
            self.seq += 1
        emit({"event": "published", "client": self.id, "tag": tag, "count": count})

    async def send(self, to, data):
        while True:
            try:
                reply = await self.ask({"type": "send", "to": to, "data": data})
                if reply["type"] == "sent":
                    return
            except (ConnectionError, websockets.WebSocketException, asyncio.TimeoutError):
                pass
            await asyncio.sleep(RETRY)

    def report(self):
        return {"node": self.node, "messages": self.messages, "directs": self.directs,
                "recovered": self.recovered, "refused": self.refused, "slowest": self.slowest,
                "reconnects": self.reconnects}


async def commands():
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = await reader.readline()
        if not line:
            return
        if line.strip():
            yield json.loads(line)


async def main(plan):
    clients = {c["id"]: Client(c) for c in plan["clients"]}
    runners = [asyncio.create_task(c.run()) for c in clients.values()]
    await asyncio.gather(*(c.joined_once.wait() for c in clients.values()))
    emit({"event": "ready"})
    work = []
    async for cmd in commands():
        if cmd["cmd"] == "publish":
            c = clients[cmd["client"]]
            work.append(asyncio.create_task(c.publish(cmd["room"], cmd["count"], cmd["tag"])))
        elif cmd["cmd"] == "send":
            work.append(asyncio.create_task(clients[cmd["client"]].send(cmd["to"], cmd["data"])))
        elif cmd["cmd"] == "report":
            emit({"event": "report", "clients": {i: c.report() for i, c in clients.items()}})
        elif cmd["cmd"] == "quit":
            break
    for t in runners + work:
        t.cancel()


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        asyncio.run(main(json.load(f)))
