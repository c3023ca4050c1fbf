// The login page: posts the password as JSON and, once the session cookie is set, goes
// where the person was headed (a path on this listener only).

const form = document.getElementById("login");
const error = document.getElementById("error");

function destination() {
  // The server never sees a fragment (#/pools): it stayed on this page's URL.
  const next = (new URLSearchParams(location.search).get("next") || "") + (location.hash || "");
  // Resolved as the browser will resolve it (it drops tabs and newlines, reads `\` as `/`),
  // and followed only when it stays on this listener.
  try {
    const url = new URL(next, location.origin);
    if (next.startsWith("/") && url.origin === location.origin) return url.pathname + url.search + url.hash;
  } catch { /* not a URL */ }
  return "/console";
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  error.textContent = "";
  const button = document.getElementById("submit");
  button.disabled = true;
  try {
    const resp = await fetch("/login", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        user: document.getElementById("user").value,
        password: document.getElementById("password").value,
      }),
      credentials: "same-origin",
    });
    if (resp.ok) {
      location.assign(destination());
      return;
    }
    const body = await resp.json().catch(() => ({}));
    error.textContent = body.error || `login failed (${resp.status})`;
    document.getElementById("password").select();
  } catch (e) {
    error.textContent = `the node does not answer (${e.message})`;
  } finally {
    button.disabled = false;
  }
});
