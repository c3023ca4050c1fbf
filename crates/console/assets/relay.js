// The relay's objects: applications (a key shown once), destinations (saved only after a
// passing connection test) and routes (table and columns picked from the live schema).

import { h, fill, table, when, toast } from "./dom.js";
import { call, poll } from "./api.js";

const enc = encodeURIComponent;

// Shows an API refusal at the form, and at the field it names when it names one
// ("columns.x: ..." → the input whose data-field is "columns.x" or "columns").
function refuse(form, error) {
  for (const el of form.querySelectorAll(".invalid")) el.classList.remove("invalid");
  const out = form.querySelector(".form-error");
  out.textContent = error ? error.message : "";
  if (!error) return;
  const field = error.message.split(":")[0];
  const input = form.querySelector(`[data-field="${CSS.escape(field)}"]`) || form.querySelector(`[data-field="${CSS.escape(field.split(".")[0])}"]`);
  if (input) { input.classList.add("invalid"); input.focus(); }
}

const declaredNote = (o) => o.declared ? h("span", { class: "muted", title: "declared in the configuration file: change it there" }, "file") : "api";

// ---------- applications ----------

export function applications(main) {
  const list = h("div", { id: "applications" });
  const name = h("input", { id: "app-name", "data-field": "name", required: true, placeholder: "crm" });
  const shown = h("div", { id: "new-key", class: "secret", hidden: true });
  const form = h("form", { id: "app-form", class: "card-form", onsubmit: async (e) => {
    e.preventDefault();
    try {
      const created = await call("POST", "/api/relay/applications", { name: name.value });
      refuse(form, null);
      showKey(shown, created.application.name, created.key);
      name.value = "";
      await load();
    } catch (err) { refuse(form, err); }
  } }, h("h2", {}, "New application"), h("label", {}, "Name ", name), h("button", { type: "submit" }, "Create"), h("p", { class: "form-error error" }));
  fill(main, h("h1", {}, "Applications"), form, shown, list);

  async function load() {
    const relay = await call("GET", "/api/relay");
    fill(list, table("app-table", ["name", "created", "key rotated", "from", ""], relay.applications.map((a) =>
      h("tr", { dataset: { application: a.name } },
        h("td", {}, a.name), h("td", {}, when(a.created_ms)), h("td", {}, when(a.rotated_ms)), h("td", {}, declaredNote(a)),
        h("td", { class: "actions" },
          h("button", { type: "button", class: "rotate", disabled: a.declared, onclick: async () => {
            if (!confirm(`Rotate the key of ${a.name}? The old key stops working at once.`)) return;
            try { const r = await call("POST", `/api/relay/applications/${enc(a.name)}/rotate`); showKey(shown, a.name, r.key); await load(); } catch (err) { toast(err.message, "error"); }
          } }, "Rotate key"),
          h("button", { type: "button", class: "delete danger", disabled: a.declared, onclick: async () => {
            if (!confirm(`Delete ${a.name} and its routes?`)) return;
            try { await call("DELETE", `/api/relay/applications/${enc(a.name)}`); toast(`${a.name} deleted`); await load(); } catch (err) { toast(err.message, "error"); }
          } }, "Delete"))))));
  }
  return poll(load, 10000, (e) => toast(e.message, "error"));
}

// The key, this once, with a copy button; lintas keeps only its hash.
function showKey(box, app, key) {
  const value = h("code", { id: "key-value" }, key);
  fill(box, h("p", {}, `API key of ${app} — copy it now: it is not shown again.`), value,
    h("button", { type: "button", id: "copy-key", onclick: async () => {
      try { await navigator.clipboard.writeText(key); toast("key copied"); } catch {
        const range = document.createRange(); range.selectNodeContents(value);
        getSelection().removeAllRanges(); getSelection().addRange(range); toast("key selected: press Ctrl+C");
      }
    } }, "Copy"),
    h("button", { type: "button", onclick: () => { fill(box); box.hidden = true; } }, "Done"));
  box.hidden = false;
}

// ---------- destinations ----------

const URL_HINTS = {
  postgres: "postgres://user@127.0.0.1:5432/dbname",
  mysql: "mysql://user@127.0.0.1:3306/dbname",
  sqlite: "sqlite:///var/lib/lintas/app.db",
};

export function destinations(main) {
  const list = h("div", { id: "destinations" });
  const name = h("input", { id: "dest-name", "data-field": "name", required: true });
  const kind = h("select", { id: "dest-kind", "data-field": "kind" }, ["postgres", "mysql", "sqlite"].map((k) => h("option", { value: k }, k)));
  const url = h("input", { id: "dest-url", "data-field": "url", required: true, size: 48, placeholder: URL_HINTS.postgres });
  const password = h("input", { id: "dest-password", "data-field": "password", type: "password", autocomplete: "new-password" });
  const maxConnections = h("input", { id: "dest-max", "data-field": "max_connections", type: "number", min: 1, value: 4 });
  const test = h("button", { type: "button", id: "dest-test" }, "Test connection");
  const save = h("button", { type: "submit", id: "dest-save", disabled: true, title: "test the connection first" }, "Save");
  const result = h("p", { id: "dest-test-result" });
  const title = h("h2", {}, "New destination");
  const cancel = h("button", { type: "button", id: "dest-cancel", hidden: true }, "Cancel");
  // The destination being edited, or null when creating one.
  let editing = null;
  const setEditing = (d) => {
    editing = d ? d.name : null;
    title.textContent = d ? `Edit ${d.name}` : "New destination";
    name.readOnly = !!d;
    cancel.hidden = !d;
    password.placeholder = d ? "unchanged unless typed" : "";
    if (d) {
      name.value = d.name; kind.value = d.kind; url.value = d.url; maxConnections.value = d.max_connections;
      password.value = ""; password.disabled = d.kind === "sqlite";
    }
  };
  cancel.addEventListener("click", () => { form.reset(); setEditing(null); untested(); });
  const target = (dry) => editing
    ? `/api/relay/destinations/${enc(editing)}${dry ? "?dry_run=true" : ""}`
    : `/api/relay/destinations${dry ? "?dry_run=true" : ""}`;
  const spec = () => {
    const s = { name: name.value, kind: kind.value, url: url.value, max_connections: Number(maxConnections.value) };
    if (password.value) s.password = password.value;
    return s;
  };
  // Any edit voids the last test: Save is for the values that passed.
  const untested = () => { save.disabled = true; result.textContent = ""; result.className = ""; };
  for (const input of [name, kind, url, password, maxConnections]) input.addEventListener("input", untested);
  kind.addEventListener("change", () => {
    url.placeholder = URL_HINTS[kind.value];
    password.disabled = kind.value === "sqlite";
    if (password.disabled) password.value = "";
  });
  test.addEventListener("click", async () => {
    untested();
    test.disabled = true;
    try {
      const r = await call(editing ? "PUT" : "POST", target(true), spec());
      refuse(form, null);
      result.className = "ok";
      result.textContent = `Connected: ${r.tables.length} table(s) — ${r.tables.join(", ")}`;
      save.disabled = false;
    } catch (err) {
      refuse(form, err);
      result.className = "error";
      result.textContent = "Test failed: fix the connection and test again.";
    } finally { test.disabled = false; }
  });
  const form = h("form", { id: "dest-form", class: "card-form", onsubmit: async (e) => {
    e.preventDefault();
    if (save.disabled) return;
    try {
      await call(editing ? "PUT" : "POST", target(false), spec());
      refuse(form, null);
      toast(`${name.value} saved`);
      form.reset(); setEditing(null); untested();
      await load();
    } catch (err) { refuse(form, err); save.disabled = true; }
  } }, title,
    h("label", {}, "Name ", name), h("label", {}, "Database ", kind), h("label", {}, "URL (no password) ", url),
    h("label", {}, "Password ", password), h("label", {}, "Connections ", maxConnections),
    h("div", {}, test, " ", save, " ", cancel), result, h("p", { class: "form-error error" }));
  fill(main, h("h1", {}, "Destinations"), form, list);

  async function load() {
    const relay = await call("GET", "/api/relay");
    fill(list, table("dest-table", ["name", "database", "url", "state", "since", "backlog", "delivered", "dead", "last error", "from", ""],
      relay.destinations.map((d) => {
        const s = d.status || {};
        return h("tr", { dataset: { destination: d.name, state: s.state || "starting" } },
          h("td", {}, d.name), h("td", {}, d.kind), h("td", { class: "wrap" }, d.url),
          h("td", { class: s.state === "up" ? "ok" : "bad" }, s.state || "starting"), h("td", {}, when(s.since_ms)),
          h("td", { class: "num" }, d.backlog ?? "…"), h("td", { class: "num" }, s.delivered ?? 0), h("td", { class: "num" }, s.dead ?? 0),
          h("td", { class: "wrap" }, s.last_error || ""), h("td", {}, declaredNote(d)),
          h("td", { class: "actions" }, h("button", { type: "button", class: "edit", disabled: d.declared, onclick: () => {
            setEditing(d); untested(); form.scrollIntoView({ block: "nearest" }); url.focus();
          } }, "Edit"), h("button", { type: "button", class: "danger", disabled: d.declared, onclick: async () => {
            if (!confirm(`Delete ${d.name} and its routes?`)) return;
            try { await call("DELETE", `/api/relay/destinations/${enc(d.name)}`); await load(); } catch (err) { toast(err.message, "error"); }
          } }, "Delete")));
      })));
  }
  return poll(load, 5000, (e) => toast(e.message, "error"));
}

// ---------- routes ----------

// Field names seen in an application's recent records, to suggest for each column.
async function recentFields(application) {
  const log = await call("GET", `/api/relay/deliveries?application=${enc(application)}&limit=5`);
  const ids = new Set();
  for (const b of log.delivered || []) ids.add(b.last_id);
  for (const d of log.dead || []) ids.add(d.record_id);
  const fields = new Set();
  for (const id of [...ids].slice(0, 5)) {
    try {
      const record = await call("GET", `/api/relay/records/${id}`);
      for (const f of Object.keys(record.data_sent || {})) fields.add(f);
    } catch { /* a record past retention */ }
  }
  return [...fields].sort();
}

export async function routes(main) {
  const relay = await call("GET", "/api/relay");
  const list = h("div", { id: "routes" });
  const app = h("select", { id: "route-app", "data-field": "application" }, relay.applications.map((a) => h("option", { value: a.name }, a.name)));
  const dest = h("select", { id: "route-dest", "data-field": "destination" }, h("option", { value: "" }, "— pick —"), relay.destinations.map((d) => h("option", { value: d.name }, d.name)));
  const tableSelect = h("select", { id: "route-table", "data-field": "table", disabled: true });
  const operation = h("select", { id: "route-op", "data-field": "operation" }, ["insert", "upsert", "update", "delete"].map((o) => h("option", { value: o }, o)));
  const columns = h("div", { id: "route-columns", "data-field": "columns" });
  const suggestions = h("datalist", { id: "route-fields" });
  let schema = [];

  const drawColumns = () => {
    const t = schema.find((t) => tableKey(t) === tableSelect.value);
    fill(columns, t ? table("column-map", ["column", "type", "record field", "key"], t.columns.map((c) =>
      h("tr", { dataset: { column: c.name } },
        h("td", {}, c.name, c.nullable || c.has_default ? "" : h("span", { class: "required", title: "NOT NULL without a default" }, " *")),
        h("td", { class: "muted" }, c.data_type),
        h("td", {}, h("input", { class: "field", list: "route-fields", placeholder: "not sent", "aria-label": `record field for ${c.name}`, "data-field": `columns.${c.name}` })),
        h("td", {}, h("input", { type: "checkbox", class: "key", "aria-label": `${c.name} is a key` }))))) : "");
  };
  const loadSchema = async () => {
    fill(tableSelect); tableSelect.disabled = true; schema = []; drawColumns();
    if (!dest.value) return;
    try {
      schema = (await call("GET", `/api/relay/destinations/${enc(dest.value)}/schema`)).tables;
      fill(tableSelect, h("option", { value: "" }, "— pick —"), schema.map((t) => h("option", { value: tableKey(t) }, tableKey(t))));
      tableSelect.disabled = false;
    } catch (err) { toast(err.message, "error"); }
  };
  const loadFields = async () => {
    if (!app.value) return;
    fill(suggestions, (await recentFields(app.value)).map((f) => h("option", { value: f })));
  };
  dest.addEventListener("change", loadSchema);
  tableSelect.addEventListener("change", drawColumns);
  app.addEventListener("change", loadFields);

  const form = h("form", { id: "route-form", class: "card-form", onsubmit: async (e) => {
    e.preventDefault();
    const t = schema.find((t) => tableKey(t) === tableSelect.value);
    const body = { application: app.value, destination: dest.value, table: t ? t.name : "", operation: operation.value, columns: {}, keys: [] };
    if (t && t.schema) body.schema = t.schema;
    for (const row of columns.querySelectorAll("tr[data-column]")) {
      const field = row.querySelector(".field").value.trim();
      if (field) body.columns[field] = row.dataset.column;
      if (row.querySelector(".key").checked) body.keys.push(row.dataset.column);
    }
    try {
      await call("POST", "/api/relay/routes", body);
      refuse(form, null);
      toast("route saved");
      await load();
    } catch (err) { refuse(form, err); }
  } }, h("h2", {}, "New route"),
    h("label", {}, "Application ", app), h("label", {}, "Destination ", dest), h("label", {}, "Table ", tableSelect),
    h("label", {}, "Operation ", operation), columns, suggestions, h("button", { type: "submit", id: "route-save" }, "Save route"),
    h("p", { class: "form-error error" }));
  fill(main, h("h1", {}, "Routes"), form, list);
  loadFields().catch(() => {});

  async function load() {
    const now = await call("GET", "/api/relay");
    fill(list, table("route-table-list", ["id", "application", "destination", "table", "operation", "field → column", "keys", "from", ""],
      now.routes.map((r) => h("tr", { dataset: { route: r.id } },
        h("td", {}, r.id), h("td", {}, r.application), h("td", {}, r.destination), h("td", {}, r.schema ? `${r.schema}.${r.table}` : r.table),
        h("td", {}, r.operation), h("td", {}, Object.entries(r.columns).map(([f, c]) => `${f} → ${c}`).join(", ")),
        h("td", {}, r.keys.join(", ")), h("td", {}, declaredNote(r)),
        h("td", {}, h("button", { type: "button", class: "danger", disabled: r.declared, onclick: async () => {
          try { await call("DELETE", `/api/relay/routes/${r.id}`); await load(); } catch (err) { toast(err.message, "error"); }
        } }, "Delete"))))));
  }
  return poll(load, 10000, (e) => toast(e.message, "error"));
}

function tableKey(t) {
  return t.schema ? `${t.schema}.${t.name}` : t.name;
}
