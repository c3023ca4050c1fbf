// The console's only way to the node: the documented JSON API, with the session cookie
// and, on every change, the session's CSRF token.

let csrf = null;

// A refusal: the status and the API's {"error": "..."} message.
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// Who is logged in; remembers the token changes must carry.
export async function session() {
  const s = await call("GET", "/api/session");
  csrf = s.csrf;
  return s;
}

// Calls the API; resolves to the parsed body (null when empty), rejects with ApiError.
// Without a session any more, the browser goes to the login page and comes back here.
export async function call(method, path, body) {
  const headers = {};
  if (body !== undefined) headers["content-type"] = "application/json";
  if (method !== "GET" && csrf) headers["x-csrf-token"] = csrf;
  let resp;
  try {
    resp = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
    });
  } catch (e) {
    throw new ApiError(0, `the node does not answer (${e.message})`);
  }
  if (resp.status === 401) {
    location.assign(`/login?next=${encodeURIComponent(location.pathname + location.hash)}`);
    throw new ApiError(401, "the session has ended; log in again");
  }
  const text = await resp.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = { error: text }; }
  }
  if (!resp.ok) throw new ApiError(resp.status, (data && data.error) || resp.statusText);
  return data;
}

// GET that answers null for a service this node does not run (404).
export async function optional(path) {
  try {
    return await call("GET", path);
  } catch (e) {
    if (e.status === 404) return null;
    throw e;
  }
}

// Logs out and goes to the login page.
export async function logout() {
  try { await call("POST", "/logout"); } finally { location.assign("/login"); }
}

// Runs `load` now and every `ms` while the page is shown; returns the function that stops
// it. A failed refresh is shown once, not every time.
export function poll(load, ms, onError) {
  let timer = null;
  let stopped = false;
  let failing = false;
  const run = async () => {
    try {
      await load();
      failing = false;
    } catch (e) {
      if (!failing && onError) onError(e);
      failing = true;
    }
    if (!stopped) timer = setTimeout(run, ms);
  };
  run();
  return () => { stopped = true; clearTimeout(timer); };
}
