// The console's frame: the navigation, the session, and one page at a time chosen by the
// URL's fragment (#/pools, #/relay/deliveries, ...), each page refreshing itself while shown.

import { h, fill, toast } from "./dom.js";
import { session, logout } from "./api.js";
import * as overview from "./overview.js";
import * as pools from "./pools.js";
import * as relay from "./relay.js";
import * as deliveries from "./deliveries.js";
import * as watch from "./watch.js";

// Fragment → [title, render(main, params) returning an optional stop function].
const PAGES = {
  "overview": ["Overview", overview.render],
  "pools": ["Pools", pools.render],
  "relay/applications": ["Applications", relay.applications],
  "relay/destinations": ["Destinations", relay.destinations],
  "relay/routes": ["Routes", relay.routes],
  "relay/deliveries": ["Delivery log", deliveries.render],
  "watch/targets": ["Targets", watch.targets],
  "watch/host": ["Host", watch.host],
  "watch/alerts": ["Alerts", watch.alerts],
  "watch/people": ["Bot people", watch.people],
};

let stop = null;
// Counts the pages shown, so a page whose first load ends after the next was opened stops
// at once instead of refreshing in the background.
let shown = 0;

function current() {
  const [path, query] = location.hash.replace(/^#\/?/, "").split("?");
  return { path: PAGES[path] ? path : "overview", params: new URLSearchParams(query || "") };
}

function show() {
  if (stop) { stop(); stop = null; }
  const { path, params } = current();
  for (const a of document.querySelectorAll("#nav a")) {
    a.classList.toggle("active", a.dataset.page === path);
  }
  const [title, render] = PAGES[path];
  document.title = `${title} — lintas`;
  const main = fill(document.getElementById("page"));
  main.dataset.page = path;
  const mine = ++shown;
  Promise.resolve(render(main, params)).then((s) => {
    if (mine === shown) stop = s || null;
    else if (s) s();
  }).catch((e) => { toast(e.message, "error"); });
}

async function start() {
  const nav = document.getElementById("nav");
  const groups = [["", ["overview", "pools"]], ["relay", ["relay/applications", "relay/destinations", "relay/routes", "relay/deliveries"]], ["watch", ["watch/targets", "watch/host", "watch/alerts", "watch/people"]]];
  for (const [group, pages] of groups) {
    if (group) nav.append(h("span", { class: "group" }, group));
    for (const page of pages) nav.append(h("a", { href: `#/${page}`, dataset: { page } }, PAGES[page][0]));
  }
  document.getElementById("logout").addEventListener("click", logout);
  const s = await session();
  document.getElementById("who").textContent = s.user;
  window.addEventListener("hashchange", show);
  show();
}

start().catch((e) => toast(e.message, "error"));
