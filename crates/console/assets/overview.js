// Overview: which services run, pools with backend health and requests per second, the
// relay's backlog and dead letters per destination, open alerts, and the host's CPU and
// memory.

import { h, fill, table, bytes, when, span, toast } from "./dom.js";
import { call, optional, poll } from "./api.js";

// The previous sample of each listener's request count, for requests per second.
let previous = null;

function rates(stats) {
  const now = Date.now();
  const counts = {};
  for (const l of stats.listeners) counts[l.pool] = (counts[l.pool] || 0) + l.requests;
  const out = {};
  if (previous) {
    const seconds = (now - previous.at) / 1000;
    for (const [pool, n] of Object.entries(counts)) out[pool] = Math.max(0, (n - (previous.counts[pool] || 0)) / seconds);
  }
  previous = { at: now, counts };
  return out;
}

export function render(main) {
  previous = null;
  const services = h("div", { class: "cards", id: "services" });
  const pools = h("section", { id: "overview-pools" });
  const relay = h("section", { id: "overview-relay" });
  const alerts = h("section", { id: "overview-alerts" });
  const host = h("section", { id: "overview-host" });
  fill(main, h("h1", {}, "Overview"), services, h("div", { class: "columns" }, pools, host), relay, alerts);

  return poll(async () => {
    const [stats, relayState, watch, mqtt, hub] = await Promise.all([
      optional("/api/stats"), optional("/api/relay"), optional("/api/watch"),
      optional("/api/mqtt"), optional("/api/hub"),
    ]);
    const on = { proxy: stats && stats.listeners.length > 0, relay: !!relayState, watch: !!watch, mqtt: !!mqtt, hub: !!hub };
    fill(services, Object.entries(on).map(([name, running]) =>
      h("div", { class: `card ${running ? "up" : "off"}`, dataset: { service: name, state: running ? "on" : "off" } },
        h("div", { class: "label" }, name), h("div", { class: "value" }, running ? "on" : "off"))));

    if (stats) {
      const rps = rates(stats);
      fill(pools, h("h2", {}, "Pools"), table("pool-summary", ["pool", "strategy", "backends up", "requests/s"],
        stats.pools.map((p) => {
          const up = p.backends.filter((b) => b.available).length;
          return h("tr", { dataset: { pool: p.name } },
            h("td", {}, h("a", { href: "#/pools" }, p.name)), h("td", {}, p.strategy),
            h("td", { class: up === p.backends.length ? "ok" : "bad" }, `${up} / ${p.backends.length}`),
            h("td", { class: "num" }, p.name in rps ? rps[p.name].toFixed(1) : "…"));
        })));
    } else fill(pools);

    if (relayState) {
      fill(relay, h("h2", {}, "Relay"), table("relay-summary", ["destination", "state", "backlog", "last latency", "delivered", "dead letters", "since"],
        relayState.destinations.map((d) => h("tr", { dataset: { destination: d.name } },
          h("td", {}, d.name), h("td", { class: d.status && d.status.state === "up" ? "ok" : "bad" }, d.status ? d.status.state : "starting"),
          h("td", { class: "num" }, d.backlog ?? "…"),
          h("td", { class: "num", title: "arrival of the last batch's oldest record to its commit" }, d.status && d.status.last_latency_ms !== null ? `${d.status.last_latency_ms} ms` : "—"),
          h("td", { class: "num" }, d.status ? d.status.delivered : 0),
          h("td", { class: "num" }, h("a", { href: `#/relay/deliveries?status=dead&destination=${encodeURIComponent(d.name)}` }, d.status ? d.status.dead : 0)),
          h("td", {}, d.status ? when(d.status.since_ms) : "—")))));
    } else fill(relay);

    if (watch) {
      const [metrics, log] = await Promise.all([
        call("GET", `/api/watch/metrics?since_ms=${Date.now() - 120e3}`),
        call("GET", "/api/watch/alerts?limit=5"),
      ]);
      const last = metrics.samples[metrics.samples.length - 1];
      fill(host, h("h2", {}, `Host ${watch.host.hostname}`), last ? h("div", { class: "cards" },
        h("div", { class: "card", id: "host-cpu" }, h("div", { class: "label" }, `CPU (${watch.host.cores} cores)`), h("div", { class: "value" }, `${last.cpu.toFixed(1)} %`)),
        h("div", { class: "card", id: "host-mem" }, h("div", { class: "label" }, "memory"), h("div", { class: "value" }, `${bytes(last.mem_used)} / ${bytes(last.mem_total)}`)),
        h("div", { class: "card" }, h("div", { class: "label" }, "load"), h("div", { class: "value" }, last.load.map((l) => l.toFixed(2)).join(" ")))) : "no samples yet",
        h("a", { href: "#/watch/host" }, "graphs →"));
      fill(alerts, h("h2", {}, `Down now: ${watch.down.length}`),
        watch.down.length ? table("down-now", ["target", "down for"], watch.down.map((d) =>
          h("tr", {}, h("td", {}, d.target), h("td", {}, span(Date.now() - d.since_ms))))) : h("p", { class: "muted" }, "every target is up"),
        h("h3", {}, "Latest alerts"),
        table("latest-alerts", ["at", "target", "channel", "status", "text"], log.alerts.map((a) =>
          h("tr", {}, h("td", {}, when(a.at_ms)), h("td", {}, a.target), h("td", {}, a.channel), h("td", {}, a.status), h("td", {}, a.text)))));
    } else { fill(host); fill(alerts); }
  }, 2000, (e) => toast(e.message, "error"));
}
