// Pools: every listener and every pool's backends with their state, weight, connections,
// latency and errors; drain / enable / disable, weight and strategy, each shown as the node
// answers it.

import { h, fill, table, bytes, when, span, toast } from "./dom.js";
import { call, poll } from "./api.js";

const STRATEGIES = ["round_robin", "weighted_round_robin", "least_connections", "random_two_choices", "peak_ewma", "consistent_hash"];

async function act(method, path, body, done) {
  try {
    await call(method, path, body);
    toast(done);
  } catch (e) {
    toast(e.message, "error");
  }
}

function backendRow(pool, b, refresh) {
  const base = `/api/pools/${encodeURIComponent(pool.name)}/backends/${encodeURIComponent(b.name)}`;
  const state = b.admin !== "enabled" ? b.admin : b.health;
  const weight = h("input", { type: "number", min: 0, max: 256, value: b.weight, class: "weight", "aria-label": `weight of ${b.name}` });
  const button = (label, action) => h("button", {
    type: "button", class: `action-${action}`, disabled: b.admin === (action === "enable" ? "enabled" : action === "drain" ? "drain" : "disabled"),
    onclick: async () => { await act("POST", `${base}/${action}`, undefined, `${b.name}: ${label.toLowerCase()}`); refresh(); },
  }, label);
  return h("tr", { dataset: { backend: b.name, state } },
    h("td", {}, b.name), h("td", {}, b.addr),
    h("td", { class: `state ${state}` }, state),
    h("td", { class: "since", title: when(b.health_since_unix_ms) }, `${b.health} for ${span(Date.now() - b.health_since_unix_ms)}`),
    h("td", {}, b.last_check ? `${b.last_check.ok ? "ok" : "failed"} ${when(b.last_check.at_unix_ms)}: ${b.last_check.detail}` : "—"),
    h("td", { class: "num" }, b.in_flight), h("td", { class: "num" }, b.requests), h("td", { class: "num" }, b.failures),
    h("td", { class: "num" }, `${b.latency_ms.toFixed(1)} ms`),
    h("td", { class: "num" }, `${bytes(b.bytes_in)} / ${bytes(b.bytes_out)}`),
    h("td", {}, h("form", { class: "inline", onsubmit: async (e) => {
      e.preventDefault();
      await act("PUT", `${base}/weight`, { weight: Number(weight.value) }, `${b.name}: weight ${weight.value}`);
      refresh();
    } }, weight, h("button", { type: "submit" }, "Set"))),
    h("td", { class: "actions" }, button("Drain", "drain"), button("Enable", "enable"), button("Disable", "disable")));
}

function poolSection(pool, refresh) {
  const select = h("select", { class: "strategy", "aria-label": `strategy of ${pool.name}` },
    STRATEGIES.map((s) => h("option", { value: s, selected: s === pool.strategy }, s)));
  const hashKey = h("input", { class: "hash-key", placeholder: "client_ip | header:NAME | cookie:NAME", value: pool.hash_key || "" });
  return h("section", { class: "pool", dataset: { pool: pool.name, strategy: pool.strategy } },
    h("h2", {}, `Pool ${pool.name}`),
    h("form", { class: "inline", onsubmit: async (e) => {
      e.preventDefault();
      const body = { strategy: select.value };
      if (select.value === "consistent_hash" || hashKey.value) body.hash_key = hashKey.value;
      await act("PUT", `/api/pools/${encodeURIComponent(pool.name)}/strategy`, body, `${pool.name}: ${select.value}`);
      refresh();
    } }, h("label", {}, "strategy ", select), h("label", {}, " hash key ", hashKey), h("button", { type: "submit" }, "Apply")),
    table(null, ["backend", "address", "state", "since", "last check", "in flight", "requests", "failures", "latency", "in / out", "weight", ""],
      pool.backends.map((b) => backendRow(pool, b, refresh))));
}

export function render(main) {
  const listeners = h("section", { id: "listeners" });
  const pools = h("div", { id: "pools" });
  fill(main, h("h1", {}, "Pools"), pools, listeners);
  // Redrawn from the node's answer after every action and every 2 s; an input being
  // edited is not redrawn under the person's cursor.
  const load = async () => {
    if (main.contains(document.activeElement) && document.activeElement.tagName !== "BUTTON") return;
    const stats = await call("GET", "/api/stats");
    fill(pools, stats.pools.map((p) => poolSection(p, load)));
    fill(listeners, h("h2", {}, "Listeners"), table("listener-table",
      ["listener", "mode", "address", "pool", "connections", "open", "requests", "1xx", "2xx", "3xx", "4xx", "5xx", "no backend", "connect failures", "retries", "timeouts"],
      stats.listeners.map((l) => h("tr", { dataset: { listener: l.name } },
        h("td", {}, l.name), h("td", {}, l.mode), h("td", {}, l.addr), h("td", {}, l.pool),
        [l.connections, l.active, l.requests, ...l.responses, l.no_backend, l.connect_failures, l.retries, l.timeouts]
          .map((n) => h("td", { class: "num" }, n))))));
  };
  return poll(load, 2000, (e) => toast(e.message, "error"));
}
