// The delivery log as the relay's users had it: one row per record and destination — Id,
// Source, Destination, Host, Status, Data Sent, Data Received, Sent At — with filters,
// paging, a record's detail, replay of dead letters and skipping a record a destination is
// stuck on. Built from GET /api/relay/deliveries (batches, dead letters, retrying) and
// GET /api/relay/records/{id} (what was sent and what each destination got).

import { h, fill, table, when, toast } from "./dom.js";
import { call } from "./api.js";

const enc = encodeURIComponent;
const PAGE_BATCHES = 20;
// Rows per page: each needs its record's detail, and one batch can hold a thousand records.
const PAGE_ROWS = 50;

// Where a destination's database is: the URL's host, or the file for SQLite.
function hostOf(url) {
  if (url.startsWith("sqlite:")) return `file ${url.replace(/^sqlite:\/\//, "")}`;
  try { const u = new URL(url); return u.port ? `${u.hostname}:${u.port}` : u.hostname; } catch { return "?"; }
}

const ROW_IS = {
  written: "the row as written, kept when the destination committed it",
  refused: "the row lintas tried to write",
  planned: "the row the route makes of this record today",
};

const compact = (v) => v === undefined || v === null ? "" : JSON.stringify(v);

export async function render(main, params) {
  const relay = await call("GET", "/api/relay");
  const hosts = Object.fromEntries(relay.destinations.map((d) => [d.name, hostOf(d.url)]));
  const select = (id, label, values, chosen) => h("label", {}, `${label} `, h("select", { id, name: id },
    h("option", { value: "" }, "all"), values.map((v) => h("option", { value: v, selected: v === chosen }, v))));
  const localTime = (ms) => ms ? new Date(ms - new Date(ms).getTimezoneOffset() * 60e3).toISOString().slice(0, 16) : "";
  const filters = h("form", { id: "log-filters", class: "inline card-form" },
    select("application", "Source", relay.applications.map((a) => a.name), params.get("application")),
    select("destination", "Destination", relay.destinations.map((d) => d.name), params.get("destination")),
    select("status", "Status", ["delivered", "dead", "retrying"], params.get("status")),
    h("label", {}, "From ", h("input", { type: "datetime-local", name: "since", value: localTime(Number(params.get("since_ms"))) })),
    h("label", {}, "Until ", h("input", { type: "datetime-local", name: "until", value: localTime(Number(params.get("until_ms"))) })),
    h("label", {}, "Record ", h("input", { type: "number", min: 0, name: "record", value: params.get("record") || "", class: "short" })),
    h("button", { type: "submit" }, "Show"));
  const rows = h("div", { id: "log" });
  const pager = h("div", { class: "pager" });
  const detail = h("section", { id: "record-detail" });
  fill(main, h("h1", {}, "Delivery log"), filters, rows, pager, detail);

  filters.addEventListener("submit", (e) => {
    e.preventDefault();
    const q = new URLSearchParams();
    const form = new FormData(filters);
    for (const k of ["application", "destination", "status", "record"]) if (form.get(k)) q.set(k, form.get(k));
    if (form.get("since")) q.set("since_ms", new Date(form.get("since")).getTime());
    if (form.get("until")) q.set("until_ms", new Date(form.get("until")).getTime());
    location.hash = `#/relay/deliveries?${q}`;
  });

  const query = new URLSearchParams(params);
  query.delete("below");
  query.set("limit", PAGE_BATCHES);
  const log = await call("GET", `/api/relay/deliveries?${query}`);
  const records = new Map();
  const record = async (id) => {
    if (!records.has(id)) records.set(id, call("GET", `/api/relay/records/${id}`).catch(() => null));
    return records.get(id);
  };

  // One entry per record and destination, newest first.
  const entries = [];
  for (const b of log.delivered || []) {
    for (let id = b.last_id; id >= b.first_id; id--) entries.push({ id, application: b.application, destination: b.destination, status: "delivered", at: b.at_ms });
  }
  for (const d of log.dead || []) entries.push({ id: d.record_id, application: d.application, destination: d.destination, status: d.status, at: d.at_ms, error: d.error });
  for (const r of log.retrying || []) if (r.from_id !== null && r.from_id !== undefined) entries.push({ id: r.from_id, destination: r.destination, status: "retrying", at: null, error: r.last_error, waiting: r.waiting });
  entries.sort((a, b) => (b.at ?? Infinity) - (a.at ?? Infinity) || b.id - a.id);
  // A page that ended inside a batch goes on below the last id it showed (`until_ms` is
  // that batch's time, `below` the id).
  const until = Number(params.get("until_ms"));
  const below = params.has("below") ? Number(params.get("below")) : Infinity;
  const unseen = entries.filter((e) => !(e.at === until && e.id >= below));
  const page = unseen.slice(0, PAGE_ROWS);
  const cut = unseen.length > PAGE_ROWS ? page[page.length - 1] : null;

  const details = await Promise.all(page.map((e) => record(e.id)));
  const shown = [];
  page.forEach((e, i) => {
    const r = details[i];
    // A batch's id range can hold another application's records: keep this destination's.
    const mine = r && r.deliveries.find((d) => d.destination === e.destination);
    if (e.status === "delivered" && (!r || r.application !== e.application || !mine || mine.status !== "delivered")) return;
    // Sent At is when this destination committed the record (the log keeps it per row).
    const at = e.status === "delivered" && mine && mine.committed_ms ? mine.committed_ms : e.at;
    shown.push({ ...e, at, application: e.application || (r && r.application), sent: r && r.data_sent, row: mine && mine.row });
  });

  fill(rows, shown.length ? table("delivery-log", ["Id", "Source", "Destination", "Host", "Status", "Data Sent", "Data Received", "Sent At"],
    shown.map((e) => h("tr", { dataset: { record: e.id, destination: e.destination, status: e.status } },
      h("td", {}, h("a", { href: "#", class: "record-link", onclick: (ev) => { ev.preventDefault(); showRecord(detail, e.id); } }, e.id)),
      h("td", {}, e.application ?? ""), h("td", {}, e.destination), h("td", { class: "host" }, hosts[e.destination] ?? ""),
      h("td", { class: `status ${e.status}` }, e.status, e.error ? h("div", { class: "muted wrap" }, e.error) : ""),
      h("td", { class: "json" }, compact(e.sent)), h("td", { class: "json" }, compact(e.row)),
      h("td", { class: "sent-at" }, e.status === "delivered" ? when(e.at) : "—"))))
    : h("p", { class: "muted", id: "log-empty" }, "nothing matches these filters"));

  const oldest = Math.min(...(log.delivered || []).map((b) => b.at_ms), ...(log.dead || []).map((d) => d.at_ms));
  const more = (log.delivered || []).length >= PAGE_BATCHES || (log.dead || []).length >= PAGE_BATCHES;
  const older = cut && cut.at !== null
    ? withParam(withParam(params, "until_ms", cut.at), "below", cut.id)
    : more && isFinite(oldest) ? withParam(withParam(params, "until_ms", oldest - 1), "below", null) : null;
  fill(pager,
    params.get("until_ms") ? h("a", { href: `#/relay/deliveries?${withParam(withParam(params, "until_ms", null), "below", null)}` }, "← newest") : "",
    " ",
    older ? h("a", { id: "older", href: `#/relay/deliveries?${older}` }, "older →") : "");
  if (params.get("record")) showRecord(detail, Number(params.get("record")));
}

function withParam(params, key, value) {
  const q = new URLSearchParams(params);
  if (value === null) q.delete(key); else q.set(key, value);
  return q;
}

// A record: what the application sent and, per destination, its status, the row written
// or the error, with Replay for a dead letter and Skip for a record a destination is stuck on.
async function showRecord(box, id) {
  let r;
  try { r = await call("GET", `/api/relay/records/${id}`); } catch (e) { toast(e.message, "error"); return; }
  const reload = () => showRecord(box, id);
  fill(box, h("h2", {}, `Record ${r.id}`),
    h("p", {}, `from ${r.application}, received ${when(r.received_ms)}`),
    h("pre", { class: "json", id: "record-sent" }, JSON.stringify(r.data_sent, null, 2)),
    table("record-deliveries", ["destination", "table", "operation", "status", "row", "committed", "error", ""], r.deliveries.map((d) =>
      h("tr", { dataset: { destination: d.destination, status: d.status } },
        h("td", {}, d.destination), h("td", {}, d.table ?? "(route deleted)"), h("td", {}, d.operation ?? ""), h("td", { class: `status ${d.status}` }, d.status),
        h("td", { class: "json", title: ROW_IS[d.row_is] || "" }, compact(d.row)), h("td", {}, when(d.committed_ms)),
        h("td", { class: "wrap" }, d.error || d.last_error || ""),
        h("td", {},
          d.status === "dead" ? h("button", { type: "button", class: "replay", onclick: async () => {
            try { await call("POST", `/api/relay/dead-letters/${enc(d.destination)}/${r.id}/replay`); toast(`record ${r.id} replayed to ${d.destination}`); } catch (e) { toast(`replay refused: ${e.message}`, "error"); }
            reload();
          } }, "Replay") : "",
          d.status === "retrying" ? h("button", { type: "button", class: "skip danger", onclick: async () => {
            if (!confirm(`Skip record ${r.id} on ${d.destination}? It becomes a dead letter and delivery goes on.`)) return;
            try { await call("POST", `/api/relay/destinations/${enc(d.destination)}/skip`, { record: r.id }); toast(`record ${r.id} skipped on ${d.destination}`); } catch (e) { toast(e.message, "error"); }
            reload();
          } }, "Skip") : "")))));
  box.scrollIntoView({ block: "nearest" });
}
