// The Socket.IO side of bench/hub: one node, the lintas hub's semantics as far as Socket.IO
// offers them. A client connects with auth {name}, emits "join" (a room name) and "publish"
// ({room, data}), each acknowledged; a publish reaches every member of the room, the
// publisher included, as "message" {room, from, data}.
//
//   PORT=8090 node server.js                                # a single node
//   PORT=8090 REDIS_URL=redis://127.0.0.1:6379 node server.js   # one of several nodes
//
// WebSocket transport only: no HTTP long-polling, as the hub has none. Prints "listening"
// on stdout once the port (and, with REDIS_URL, the adapter's Redis) is ready.
"use strict";

const http = require("node:http");
const { Server } = require("socket.io");

const port = Number(process.env.PORT);
if (!Number.isInteger(port) || port <= 0) {
  console.error("server.js: PORT must be a port number");
  process.exit(2);
}

async function adapter() {
  if (!process.env.REDIS_URL) return undefined;
  const { createClient } = require("redis");
  const { createAdapter } = require("@socket.io/redis-adapter");
  const pub = createClient({ url: process.env.REDIS_URL });
  const sub = pub.duplicate();
  for (const c of [pub, sub]) c.on("error", (e) => console.error("redis:", e.message));
  await Promise.all([pub.connect(), sub.connect()]);
  return createAdapter(pub, sub);
}

async function main() {
  const httpServer = http.createServer();
  const io = new Server(httpServer, {
    transports: ["websocket"],
    serveClient: false,
    adapter: await adapter(),
  });

  io.on("connection", (socket) => {
    const name = typeof socket.handshake.auth?.name === "string" ? socket.handshake.auth.name : "";
    socket.on("join", (room, ack) => {
      if (typeof room !== "string") return;
      socket.join(room);
      if (typeof ack === "function") ack({ room });
    });
    socket.on("publish", (msg, ack) => {
      if (!msg || typeof msg.room !== "string" || !socket.rooms.has(msg.room)) return;
      io.to(msg.room).emit("message", { room: msg.room, from: name, data: msg.data });
      if (typeof ack === "function") ack({ room: msg.room });
    });
  });

  httpServer.listen(port, "127.0.0.1", () => console.log("listening"));
  const stop = () => io.close(() => process.exit(0));
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

main().catch((e) => {
  console.error("server.js:", e);
  process.exit(1);
});
