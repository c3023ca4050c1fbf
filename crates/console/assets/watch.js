// Watch: targets with their state history and uptime, host graphs from the stored samples,
// the busiest processes, the alert log and silences.

import { h, fill, table, bytes, when, span, toast } from "./dom.js";
import { call, poll } from "./api.js";
import { lineChart } from "./graph.js";

const DAY = 86400e3;

// Share of [now - window, now] a target was up, from its state changes (newest first).
// Before its first recorded change a target counts as up (watch records the first down).
export function uptime(changes, window, now = Date.now()) {
  const from = now - window;
  const asc = [...changes].sort((a, b) => a.at_ms - b.at_ms);
  let up = true;
  let since = from;
  let downMs = 0;
  for (const c of asc) {
    if (c.at_ms <= from) { up = c.up; continue; }
    if (!up) downMs += c.at_ms - since;
    up = c.up;
    since = c.at_ms;
  }
  if (!up) downMs += now - since;
  return 100 * (1 - downMs / window);
}

export async function targets(main) {
  const list = h("div", { id: "targets" });
  const changes = h("section", { id: "history" });
  const kind = h("select", { id: "target-kind", "data-field": "kind" }, h("option", { value: "http" }, "http"), h("option", { value: "tcp" }, "tcp"));
  const name = h("input", { id: "target-name", "data-field": "name", required: true });
  const where = h("input", { id: "target-where", "data-field": "url", required: true, size: 40, placeholder: "http://127.0.0.1:8080/health" });
  const interval = h("input", { id: "target-interval", value: "10s", class: "short" });
  kind.addEventListener("change", () => { where.placeholder = kind.value === "http" ? "http://127.0.0.1:8080/health" : "127.0.0.1:5432"; where.dataset.field = kind.value === "http" ? "url" : "address"; });
  const form = h("form", { id: "target-form", class: "inline card-form", onsubmit: async (e) => {
    e.preventDefault();
    const body = { name: name.value, kind: kind.value, interval: interval.value };
    body[kind.value === "http" ? "url" : "address"] = where.value;
    try { await call("POST", "/api/watch/targets", body); form.querySelector(".form-error").textContent = ""; toast(`${name.value} is watched`); form.reset(); await load(); }
    catch (err) { form.querySelector(".form-error").textContent = err.message; }
  } }, h("label", {}, "Name ", name), h("label", {}, "Kind ", kind), h("label", {}, "URL or address ", where), h("label", {}, "Every ", interval),
    h("button", { type: "submit" }, "Watch"), h("p", { class: "form-error error" }));
  const times = h("canvas", { id: "graph-response", class: "graph" });
  const pick = h("select", { id: "response-target", "aria-label": "target" });
  const graph = h("figure", { id: "response" }, h("figcaption", {}, "Response time of ", pick), times);
  fill(main, h("h1", {}, "Targets"), list, graph, form, changes);

  async function load() {
    const [watch, log] = await Promise.all([call("GET", "/api/watch"), call("GET", "/api/watch/history?limit=1000")]);
    const down = new Map(watch.down.map((d) => [d.target, d.since_ms]));
    const byTarget = (t) => log.history.filter((c) => c.target === t);
    const names = [...new Set([...watch.targets.map((t) => t.name), ...watch.down.map((d) => d.target)])];
    fill(list, table("target-table", ["target", "checks", "state", "since", "uptime 24 h", "uptime 7 d", ""], names.map((n) => {
      const t = watch.targets.find((x) => x.name === n);
      const c = byTarget(n);
      const last = c[0];
      const isDown = down.has(n);
      return h("tr", { dataset: { target: n, state: isDown ? "down" : "up" } },
        h("td", {}, n), h("td", { class: "wrap" }, t ? `${t.kind} ${t.url || t.address} every ${t.interval}` : "pool health check"),
        h("td", { class: isDown ? "bad" : "ok" }, isDown ? "down" : "up"),
        h("td", {}, isDown ? `${when(down.get(n))} (${span(Date.now() - down.get(n))})` : last ? when(last.at_ms) : "—"),
        h("td", { class: "num" }, `${uptime(c, DAY).toFixed(2)} %`), h("td", { class: "num" }, `${uptime(c, 7 * DAY).toFixed(2)} %`),
        h("td", {}, t && !t.declared ? h("button", { type: "button", class: "danger", onclick: async () => {
          try { await call("DELETE", `/api/watch/targets/${encodeURIComponent(n)}`); await load(); } catch (err) { toast(err.message, "error"); }
        } }, "Stop watching") : ""));
    })));
    const own = watch.targets.map((t) => t.name);
    graph.hidden = own.length === 0;
    if (own.length) {
      const chosen = own.includes(pick.value) ? pick.value : own[0];
      fill(pick, own.map((n) => h("option", { value: n, selected: n === chosen }, n)));
      const r = await call("GET", `/api/watch/targets/${encodeURIComponent(chosen)}/checks`);
      lineChart(times, [
        { label: "passed", points: r.checks.filter((c) => c.ok).map((c) => [c.at_ms, c.ms]) },
        { label: "failed", points: r.checks.filter((c) => !c.ok).map((c) => [c.at_ms, c.ms]) },
      ], { unit: "ms" });
    }
    fill(changes, h("h2", {}, "State changes"), table("history-table", ["at", "target", "now", "detail", "reason"], log.history.slice(0, 100).map((c) =>
      h("tr", {}, h("td", {}, when(c.at_ms)), h("td", {}, c.target), h("td", { class: c.up ? "ok" : "bad" }, c.up ? "up" : "down"), h("td", { class: "wrap" }, c.detail), h("td", { class: "wrap" }, c.reason)))));
  }
  pick.addEventListener("change", () => load().catch((e) => toast(e.message, "error")));
  return poll(load, 5000, (e) => toast(e.message, "error"));
}

export function host(main, params) {
  const range = params.get("range") === "day" ? "day" : "hour";
  const canvases = {};
  const graph = (id, title) => {
    canvases[id] = h("canvas", { id: `graph-${id}`, class: "graph" });
    return h("figure", {}, h("figcaption", {}, title), canvases[id]);
  };
  const info = h("p", { id: "host-info", class: "muted" });
  const processes = h("section", { id: "processes" });
  fill(main, h("h1", {}, "Host"), info,
    h("p", {}, h("a", { href: "#/watch/host?range=hour", class: range === "hour" ? "active" : "" }, "last hour"), " · ",
      h("a", { href: "#/watch/host?range=day", class: range === "day" ? "active" : "" }, "last day")),
    h("div", { class: "graphs" }, graph("cpu", "CPU per core"), graph("memory", "Memory"), graph("disk", "Disk used"),
      graph("network", "Network"), graph("load", "Load average")), processes);

  return poll(async () => {
    const window = range === "day" ? DAY : 3600e3;
    const now = Date.now();
    const [m, top] = await Promise.all([call("GET", `/api/watch/metrics?since_ms=${now - window}`), call("GET", "/api/watch/top?n=15")]);
    const s = m.samples;
    info.textContent = `${m.host.hostname} — ${m.host.os}, kernel ${m.host.kernel}, ${m.host.cores} cores, up ${span(m.host.uptime_s * 1000)}`;
    const axis = { from: now - window, to: now };
    const cores = s.length ? s[s.length - 1].cores.length : 0;
    lineChart(canvases.cpu, Array.from({ length: cores }, (_, i) => ({ label: `core ${i}`, points: s.map((x) => [x.at_ms, x.cores[i]]) })), { ...axis, unit: "%", max: 100 });
    const total = s.length ? s[s.length - 1].mem_total : 0;
    lineChart(canvases.memory, [{ label: "used", points: s.map((x) => [x.at_ms, x.mem_used]) }, { label: "swap used", points: s.map((x) => [x.at_ms, x.swap_used]) }],
      { ...axis, unit: "B", max: total || undefined, format: bytes });
    const mounts = s.length ? s[s.length - 1].disks.map((d) => d.mount) : [];
    lineChart(canvases.disk, mounts.map((mount) => ({ label: mount, points: s.flatMap((x) => x.disks.filter((d) => d.mount === mount && d.total).map((d) => [x.at_ms, (100 * d.used) / d.total])) })),
      { ...axis, unit: "%", max: 100 });
    lineChart(canvases.network, [{ label: "received", points: s.map((x) => [x.at_ms, x.net_rx_per_s]) }, { label: "sent", points: s.map((x) => [x.at_ms, x.net_tx_per_s]) }],
      { ...axis, unit: "B/s", format: (v) => `${bytes(v)}/s` });
    lineChart(canvases.load, ["1 min", "5 min", "15 min"].map((label, i) => ({ label, points: s.map((x) => [x.at_ms, x.load[i]]) })), { ...axis, unit: "" });
    fill(processes, h("h2", {}, "Busiest processes"), table("process-table", ["pid", "name", "CPU", "memory"], top.processes.map((p) =>
      h("tr", {}, h("td", { class: "num" }, p.pid), h("td", {}, p.name), h("td", { class: "num" }, `${p.cpu.toFixed(1)} %`), h("td", { class: "num" }, bytes(p.mem))))));
  }, range === "day" ? 60000 : 5000, (e) => toast(e.message, "error"));
}

export function alerts(main) {
  const silences = h("section", { id: "silences" });
  const log = h("section", { id: "alert-log" });
  const pattern = h("input", { id: "silence-pattern", required: true, placeholder: "demo/* or a target name" });
  const duration = h("input", { id: "silence-duration", required: true, value: "1h", class: "short" });
  const form = h("form", { id: "silence-form", class: "inline card-form", onsubmit: async (e) => {
    e.preventDefault();
    try { await call("POST", "/api/watch/silences", { pattern: pattern.value, duration: duration.value }); form.querySelector(".form-error").textContent = ""; toast(`alerts for ${pattern.value} silenced`); await load(); }
    catch (err) { form.querySelector(".form-error").textContent = err.message; }
  } }, h("label", {}, "Silence ", pattern), h("label", {}, "for ", duration), h("button", { type: "submit" }, "Silence"), h("p", { class: "form-error error" }));
  fill(main, h("h1", {}, "Alerts"), silences, form, log);

  async function load() {
    const [watch, a] = await Promise.all([call("GET", "/api/watch"), call("GET", "/api/watch/alerts?limit=200")]);
    fill(silences, h("h2", {}, "Silences and maintenance"), watch.pauses.length ? table("silence-table", ["pattern", "from", "until", "reason", ""], watch.pauses.map((p) =>
      h("tr", { dataset: { pattern: p.pattern } }, h("td", {}, p.pattern), h("td", {}, when(p.from_ms)), h("td", {}, when(p.until_ms)), h("td", {}, p.reason),
        h("td", {}, h("button", { type: "button", onclick: async () => {
          try { await call("DELETE", `/api/watch/silences?pattern=${encodeURIComponent(p.pattern)}`); await load(); } catch (err) { toast(err.message, "error"); }
        } }, "End"))))) : h("p", { class: "muted" }, "no silence"));
    fill(log, h("h2", {}, "Alert log"), table("alert-table", ["at", "target", "channel", "recipient", "status", "attempts", "text", "error"], a.alerts.map((x) =>
      h("tr", {}, h("td", {}, when(x.at_ms)), h("td", {}, x.target), h("td", {}, x.channel), h("td", {}, x.recipient), h("td", {}, x.status),
        h("td", { class: "num" }, x.attempts), h("td", { class: "wrap" }, x.text), h("td", { class: "wrap" }, x.error || "")))));
  }
  return poll(load, 5000, (e) => toast(e.message, "error"));
}

// People who talked to the bot: approve a registration, or turn someone away; each is told
// through the bot, as /approve and /deny tell them.
export function people(main) {
  const list = h("div", { id: "people" });
  fill(main, h("h1", {}, "Bot people"), h("p", { class: "muted" }, "Registrations wait here for approval when watch.telegram.registration is \"approval\". Admins of the configuration file are changed there."), list);
  async function act(chat, action) {
    try {
      const r = await call("POST", `/api/watch/people/${chat}/${action}`);
      toast(`${r.person.name ?? chat}: ${r.person.access}${r.notified ? ", told through the bot" : ""}`);
    } catch (e) { toast(e.message, "error"); }
    await load();
  }
  async function load() {
    const r = await call("GET", "/api/watch/people");
    fill(list, r.people.length ? table("people-table", ["chat id", "name", "email", "registered", "access", "admin", ""], r.people.map((p) =>
      h("tr", { dataset: { chat: p.chat_id, access: p.access } },
        h("td", { class: "num" }, p.chat_id), h("td", {}, p.name ?? ""), h("td", {}, p.email ?? "", p.email && !p.email_confirmed ? h("span", { class: "muted" }, " (unconfirmed)") : ""),
        h("td", {}, p.registered ? "yes" : "in progress"), h("td", { class: p.access === "approved" ? "ok" : p.access === "denied" ? "bad" : "" }, p.access),
        h("td", {}, p.admin ? (p.admin_in_file ? "admin (file)" : "admin") : ""),
        h("td", { class: "actions" },
          h("button", { type: "button", class: "approve", disabled: !p.registered || p.access === "approved", onclick: () => act(p.chat_id, "approve") }, "Approve"),
          h("button", { type: "button", class: "revoke danger", disabled: p.admin_in_file || p.access === "denied", onclick: () => act(p.chat_id, "revoke") }, "Revoke")))))
      : h("p", { class: "muted" }, "nobody has talked to the bot yet"));
  }
  return poll(load, 10000, (e) => toast(e.message, "error"));
}
