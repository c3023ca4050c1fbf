//! The HTML stats page: HAProxy's stats page for lintas, one self-contained document.
//!
//! No scripts, fonts or stylesheets are fetched: the page must work on a machine without
//! internet access and cannot leak the operator's session to a third party. It reloads itself
//! every five seconds. Every piece of text that came from a configuration, an API call or the
//! query (pool, backend and listener names, check details, a form's outcome) goes through
//! [`Html`], so a backend named `<script>` is shown, not run.
//!
//! Like HAProxy's `stats admin`, each backend row has buttons (drain, enable, disable, set
//! the weight): plain forms posting to `forms`, carrying the session's CSRF token in a
//! hidden field when the page was opened with a session. What a form did comes back as
//! `?done=` or `?error=` and is shown once: the next refresh goes to plain `/stats`.
//!
//! Per backend, besides the counters: how long its health has held ("for", HAProxy's last
//! change), its total downtime and how often it went down, its request rate now and at most,
//! and its *measured* response time (not the balancer's decaying estimate).

use std::fmt::{self, Display, Formatter};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use admin::FormToken;
use admin::extract::Query;
use axum::Extension;
use axum::extract::State;
use axum::response::Html as HtmlResponse;
use balance::{AdminState as BackendAdmin, BackendSnapshot, Health, PoolSnapshot, QueueSnapshot};
use serde::Deserialize;

use super::forms;
use crate::Proxy;
use crate::registry::ListenerSnapshot;

/// The query `GET /stats` reads: what the last form did (see `forms`).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Outcome {
    done: Option<String>,
    error: Option<String>,
}

/// `GET /stats`.
pub(crate) async fn page(
    State(proxy): State<Arc<Proxy>>,
    Query(outcome): Query<Outcome>,
    token: Option<Extension<FormToken>>,
) -> HtmlResponse<String> {
    let notice = match (&outcome.error, &outcome.done) {
        (Some(error), _) => Some(Notice::Error(error)),
        (None, Some(done)) => Some(Notice::Done(done)),
        (None, None) => None,
    };
    let page = Page {
        listeners: &proxy.registry().listener_snapshots(),
        pools: &proxy.registry().pool_snapshots(),
        now: SystemTime::now(),
        notice,
        csrf: token.as_ref().map(|Extension(FormToken(t))| t.as_str()),
    };
    HtmlResponse(page.to_string())
}

/// What a form did, shown above the tables.
#[derive(Debug, Clone, Copy)]
enum Notice<'a> {
    Done(&'a str),
    Error(&'a str),
}

/// Text escaped for HTML element content and quoted attribute values.
pub(crate) struct Html<'a>(pub &'a str);

impl Display for Html<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(i) = rest.find(['&', '<', '>', '"', '\'']) {
            f.write_str(&rest[..i])?;
            f.write_str(match rest.as_bytes()[i] {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&quot;",
                _ => "&#39;",
            })?;
            rest = &rest[i + 1..];
        }
        f.write_str(rest)
    }
}

/// What the state column says, combining the operator's wish and health the way HAProxy
/// does: maintenance first (nothing else matters), then health trouble, then draining.
pub(crate) fn state_label(b: &BackendSnapshot) -> &'static str {
    match (b.admin, b.health) {
        (BackendAdmin::Disabled, _) => "MAINT",
        (_, Health::Down) => "DOWN",
        (_, Health::Ejected) => "EJECTED",
        (BackendAdmin::Drain, Health::Up) => "DRAIN",
        // Weight 0 takes no new traffic, which is what draining means to an operator.
        (BackendAdmin::Enabled, Health::Up) if b.weight == 0 => "DRAIN",
        (BackendAdmin::Enabled, Health::Up) => "UP",
    }
}

struct Page<'a> {
    listeners: &'a [ListenerSnapshot],
    pools: &'a [PoolSnapshot],
    now: SystemTime,
    /// What the last form did, from the query.
    notice: Option<Notice<'a>>,
    /// The session's CSRF token for the forms; `None` under basic auth, which needs none.
    csrf: Option<&'a str>,
}

const STYLE: &str = "\
body{font:13px/1.4 system-ui,sans-serif;margin:1em 2em;color:#222;background:#fafafa}\
h1{font-size:20px;margin:0 0 .2em}h2{font-size:15px;margin:1.4em 0 .4em}\
h2 small{font-weight:normal;color:#666}p.meta{color:#666;margin:0}\
table{border-collapse:collapse;background:#fff;margin-bottom:.5em}\
th,td{border:1px solid #ccc;padding:2px 6px;text-align:right;white-space:nowrap}\
th{background:#e4e4ee;font-weight:600}td.t{text-align:left}\
tr.up td.s{background:#c6efc6}tr.down td.s{background:#f4b4b4}\
tr.ejected td.s{background:#f8d19a}tr.drain td.s{background:#b8d4f4}\
tr.maint td.s{background:#c9b79c}tr.down,tr.maint{color:#777}\
td.bad{color:#b00}\
p.done,p.error{padding:.3em .6em;margin:.6em 0;border:1px solid}\
p.done{background:#e6f6e6;border-color:#9c9}p.error{background:#fbe4e4;border-color:#d99}\
td form{display:flex;gap:3px;margin:0}td input{width:3.5em}";

impl Display for Page<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        // After a form's outcome, the next refresh drops it from the address.
        let refresh = match self.notice {
            Some(_) => "5; url=/stats",
            None => "5",
        };
        write!(
            f,
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta http-equiv=\"refresh\" content=\"{refresh}\">\
             <meta name=\"viewport\" content=\"width=device-width\">\
             <title>lintas stats</title><style>{STYLE}</style></head><body>\n\
             <h1>lintas</h1><p class=\"meta\">refreshes every 5 s · \
             <a href=\"/api/stats\">JSON</a> · <a href=\"/metrics\">metrics</a></p>\n"
        )?;
        match self.notice {
            Some(Notice::Done(text)) => {
                writeln!(f, "<p class=\"done\">{}</p>", Html(forms::cut(text)))?
            }
            Some(Notice::Error(text)) => {
                writeln!(f, "<p class=\"error\">{}</p>", Html(forms::cut(text)))?
            }
            None => {}
        }
        self.listeners_table(f)?;
        for pool in self.pools {
            self.pool_table(f, pool)?;
        }
        if self.pools.is_empty() {
            f.write_str("<h2>Pools</h2><p>No pool is configured.</p>\n")?;
        }
        f.write_str("</body></html>\n")
    }
}

impl Page<'_> {
    fn listeners_table(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str("<h2>Listeners</h2>\n")?;
        if self.listeners.is_empty() {
            return f.write_str("<p>No listener is running.</p>\n");
        }
        f.write_str(
            "<table><tr><th>name</th><th>mode</th><th>address</th><th>pool</th>\
             <th>conn total</th><th>conn active</th><th>requests</th><th>rate</th>\
             <th>rate max</th><th>2xx</th><th>3xx</th><th>4xx</th><th>5xx</th><th>no backend</th>\
             <th>connect failures</th><th>retries</th><th>timeouts</th></tr>\n",
        )?;
        for l in self.listeners {
            let mode = l.mode.as_str();
            writeln!(
                f,
                "<tr><td class=\"t\">{}</td><td class=\"t\">{mode}</td><td class=\"t\">{}</td>\
                 <td class=\"t\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
                 <td>{}</td><td>{}</td><td>{}</td><td>{}</td>{}{}<td>{}</td>{}</tr>",
                Html(&l.name),
                Html(&l.addr),
                Html(&l.pool),
                l.connections,
                l.active,
                l.requests,
                l.rate,
                l.rate_max,
                l.responses[1],
                l.responses[2],
                l.responses[3],
                l.responses[4],
                Count(l.no_backend),
                Count(l.connect_failures),
                l.retries,
                Count(l.timeouts),
            )?;
        }
        f.write_str("</table>\n")
    }

    fn pool_table(&self, f: &mut Formatter<'_>, pool: &PoolSnapshot) -> fmt::Result {
        write!(
            f,
            "<h2>Pool {} <small>({})</small></h2>\n{}\
             <table><tr><th>backend</th><th>address</th><th>state</th><th>for</th><th>weight</th>\
             <th>in flight</th><th>max conn</th><th>requests</th><th>rate</th><th>rate max</th><th>failures</th>\
             <th>downs</th><th>downtime</th><th>bytes in</th><th>bytes out</th>\
             <th>response ms</th><th>last check</th><th>detail</th><th>age</th><th>admin</th>\
             </tr>\n",
            Html(&pool.name),
            pool.strategy,
            QueueLine(&pool.queue),
        )?;
        for b in &pool.backends {
            let state = state_label(b);
            // How long its health has been what it is (HAProxy's last change).
            let since = std::time::UNIX_EPOCH + Duration::from_millis(b.health_since_unix_ms);
            let held = self.now.duration_since(since).unwrap_or(Duration::ZERO);
            let downtime = Duration::from_millis(b.downtime_ms);
            write!(
                f,
                "<tr class=\"{}\"><td class=\"t\">{}</td><td class=\"t\">{}</td>\
                 <td class=\"s t\">{state}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
                 <td>{}</td><td>{}</td><td>{}</td>{}{}<td{}>{}</td><td>{}</td><td>{}</td><td>{}</td>",
                state.to_ascii_lowercase(),
                Html(&b.name),
                Html(&b.addr),
                Age(held),
                b.weight,
                b.in_flight,
                match b.max_connections {
                    0 => "-".to_owned(),
                    max => max.to_string(),
                },
                b.requests,
                b.rate,
                b.rate_max,
                Count(b.failures),
                Count(b.downs),
                if downtime.is_zero() {
                    ""
                } else {
                    " class=\"bad\""
                },
                Age(downtime),
                b.bytes_in,
                b.bytes_out,
                // Blank until the backend has answered once.
                b.response_ms
                    .map(|ms| format!("{ms:.1}"))
                    .unwrap_or_default(),
            )?;
            match &b.last_check {
                Some(c) => {
                    let at = std::time::UNIX_EPOCH + Duration::from_millis(c.at_unix_ms);
                    let age = self.now.duration_since(at).unwrap_or(Duration::ZERO);
                    write!(
                        f,
                        "<td class=\"t{}\">{}</td><td class=\"t\">{}</td><td>{} ago</td>",
                        if c.ok { "" } else { " bad" },
                        if c.ok { "passed" } else { "failed" },
                        Html(&c.detail),
                        Age(age),
                    )?;
                }
                None => f.write_str("<td class=\"t\">none</td><td></td><td></td>")?,
            }
            self.admin_forms(f, &pool.name, b)?;
            f.write_str("</tr>\n")?;
        }
        f.write_str("</table>\n")
    }

    /// The row's buttons: one form whose default (Enter) is setting the weight, the others
    /// posting the same form elsewhere with `formaction`.
    fn admin_forms(&self, f: &mut Formatter<'_>, pool: &str, b: &BackendSnapshot) -> fmt::Result {
        let to = |action| forms::action(pool, &b.name, action);
        write!(
            f,
            "<td class=\"t\"><form method=\"post\" action=\"{}\">",
            Html(&to("weight"))
        )?;
        if let Some(token) = self.csrf {
            write!(
                f,
                "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
                admin::CSRF_FIELD,
                Html(token)
            )?;
        }
        write!(
            f,
            "<input name=\"weight\" value=\"{}\" inputmode=\"numeric\" aria-label=\"weight of {}\">\
             <button>Set</button>",
            b.weight,
            Html(&b.name)
        )?;
        for (action, label) in [
            ("drain", "Drain"),
            ("enable", "Enable"),
            ("disable", "Disable"),
        ] {
            write!(
                f,
                "<button formaction=\"{}\">{label}</button>",
                Html(&to(action))
            )?;
        }
        f.write_str("</form></td>")
    }
}

/// The pool's queue under its heading (HAProxy's queue columns), once anything queued.
struct QueueLine<'a>(&'a QueueSnapshot);

impl Display for QueueLine<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let q = self.0;
        if q.queued == 0 {
            return Ok(());
        }
        writeln!(
            f,
            "<p class=\"meta\">queue: {} waiting (max {} of {}) · {} queued · {} served after \
             {:.1} ms on average · {}{} timed out after {}{} · {}{} refused full{}</p>",
            q.length,
            q.max_length,
            q.size,
            q.queued,
            q.served,
            q.mean_wait_ms,
            if q.timeouts > 0 {
                "<b class=\"bad\">"
            } else {
                ""
            },
            q.timeouts,
            configkit::format_duration(Duration::from_millis(q.timeout_ms)),
            if q.timeouts > 0 { "</b>" } else { "" },
            if q.full > 0 { "<b class=\"bad\">" } else { "" },
            q.full,
            if q.full > 0 { "</b>" } else { "" },
        )
    }
}

/// A counter of trouble: shown in red when not zero, so problems stand out in a big table.
struct Count(u64);

impl Display for Count {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            write!(f, "<td>0</td>")
        } else {
            write!(f, "<td class=\"bad\">{}</td>", self.0)
        }
    }
}

/// A duration rounded for people: `42s`, `3m 5s`, `2h 10m`, `3d 4h`.
struct Age(Duration);

impl Display for Age {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let s = self.0.as_secs();
        match s {
            0..60 => write!(f, "{s}s"),
            60..3600 => write!(f, "{}m {}s", s / 60, s % 60),
            3600..86400 => write!(f, "{}h {}m", s / 3600, s % 3600 / 60),
            _ => write!(f, "{}d {}h", s / 86400, s % 86400 / 3600),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use balance::{BackendSpec, HealthPolicy, Pool, StrategyKind};

    #[test]
    fn the_queue_line_shows_waits_and_refusals() {
        let mut q = QueueSnapshot::default();
        assert_eq!(QueueLine(&q).to_string(), "");
        q = QueueSnapshot {
            length: 2,
            max_length: 7,
            size: 100,
            timeout_ms: 1500,
            queued: 40,
            served: 35,
            mean_wait_ms: 812.25,
            waited_seconds: 28.4,
            timeouts: 3,
            full: 0,
        };
        assert_eq!(
            QueueLine(&q).to_string(),
            "<p class=\"meta\">queue: 2 waiting (max 7 of 100) · 40 queued · 35 served after \
             812.2 ms on average · <b class=\"bad\">3 timed out after 1s 500ms</b> · 0 refused full</p>\n"
        );
    }

    #[test]
    fn html_escapes_markup_and_quotes() {
        assert_eq!(
            Html("<script>alert('x' & \"y\")</script>").to_string(),
            "&lt;script&gt;alert(&#39;x&#39; &amp; &quot;y&quot;)&lt;/script&gt;"
        );
        assert_eq!(Html("plain é").to_string(), "plain é");
        assert_eq!(Html("").to_string(), "");
    }

    #[test]
    fn ages_read_like_people_write_them() {
        let age = |s| Age(Duration::from_secs(s)).to_string();
        assert_eq!(age(0), "0s");
        assert_eq!(age(59), "59s");
        assert_eq!(age(185), "3m 5s");
        assert_eq!(age(7800), "2h 10m");
        assert_eq!(age(3 * 86400 + 4 * 3600 + 59), "3d 4h");
    }

    #[test]
    fn notices_are_cut_on_a_character_boundary() {
        let long = "é".repeat(forms::MAX_NOTICE + 10);
        assert_eq!(forms::cut(&long).chars().count(), forms::MAX_NOTICE);
        assert_eq!(forms::cut("short"), "short");
    }

    #[test]
    fn form_routes_are_where_the_shell_reads_a_form_token() {
        assert!(forms::ROUTE.starts_with(admin::FORM_PREFIX));
    }

    #[test]
    fn state_combines_admin_and_health() {
        let pool = Pool::new(
            "p",
            StrategyKind::RoundRobin,
            None,
            &[BackendSpec {
                name: "a".into(),
                addr: "127.0.0.1:1".parse().unwrap(),
                weight: 1,
                max_connections: 0,
                backup: false,
            }],
            HealthPolicy::default(),
        )
        .unwrap();
        let label = || state_label(&pool.snapshot().backends[0]);
        assert_eq!(label(), "UP");
        pool.set_weight("a", 0).unwrap();
        assert_eq!(label(), "DRAIN");
        pool.set_weight("a", 1).unwrap();
        pool.set_admin("a", BackendAdmin::Drain).unwrap();
        assert_eq!(label(), "DRAIN");
        pool.set_admin("a", BackendAdmin::Disabled).unwrap();
        assert_eq!(label(), "MAINT");
    }

    #[test]
    fn page_escapes_names_and_refreshes() {
        let pool = Pool::new(
            "<p>",
            StrategyKind::LeastConnections,
            None,
            &[BackendSpec {
                name: "<script>x</script>".into(),
                addr: "127.0.0.1:1".parse().unwrap(),
                weight: 1,
                max_connections: 0,
                backup: false,
            }],
            HealthPolicy::default(),
        )
        .unwrap();
        let page = Page {
            listeners: &[],
            pools: &[pool.snapshot()],
            now: SystemTime::now(),
            notice: Some(Notice::Error("<b>x</b>")),
            csrf: Some("t\"k"),
        }
        .to_string();
        assert!(page.contains("<h2>Pool &lt;p&gt; <small>(least_connections)</small></h2>"));
        assert!(page.contains("<td class=\"t\">&lt;script&gt;x&lt;/script&gt;</td>"));
        assert!(!page.contains("<script>"));
        assert!(page.contains("<p>No listener is running.</p>"));
        assert!(page.contains("<meta http-equiv=\"refresh\" content=\"5; url=/stats\">"));
        assert!(page.contains("<p class=\"error\">&lt;b&gt;x&lt;/b&gt;</p>"));
        assert!(page.contains(
            "<form method=\"post\" action=\"/forms/pools/%3Cp%3E/backends/%3Cscript%3Ex%3C%2Fscript%3E/weight\">\
             <input type=\"hidden\" name=\"csrf\" value=\"t&quot;k\">"
        ), "{page}");
    }
}
