//! Connection options of a destination, built from its URL and password alone.
//!
//! sqlx's `PgConnectOptions::from_str` starts from the environment, like libpq: `PGPASSWORD`,
//! `PGUSER`, `PGHOST`, `PGSSLMODE`, ... and `~/.pgpass` fill whatever the URL leaves out. A
//! destination created through the admin API names any host, so a server there could ask for
//! a cleartext password and receive lintas's own `PGPASSWORD`. Here every setting that says
//! where to connect, as whom, with which password and how securely is set from the URL, so
//! nothing comes from the environment or `.pgpass`: no password means an empty one. (sqlx
//! offers no way to unset `PGSSLROOTCERT`, `PGSSLCERT`, `PGSSLKEY` and `PGOPTIONS`; those
//! are the operator's own files and options and send no secret.)
//!
//! The URL takes only the parameters listed in [`PG_PARAMS`] and [`MYSQL_PARAMS`]: no
//! password, no socket path, nothing that would let the URL reach further than its host.
//! TLS is on when the server offers it (`prefer`/`PREFERRED`, the default) and can be
//! required and verified: `sslmode=verify-full` (PostgreSQL), `ssl-mode=VERIFY_IDENTITY`
//! (MySQL/MariaDB), against the system's roots or `sslrootcert`/`ssl-ca`.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;
use sqlx::mysql::{MySqlConnectOptions, MySqlSslMode};
use sqlx::postgres::{PgConnectOptions, PgSslMode};
use url::{Host, Url};

/// URL parameters a PostgreSQL destination takes (libpq's names).
pub const PG_PARAMS: [&str; 4] = ["sslmode", "sslrootcert", "sslcert", "sslkey"];

/// URL parameters a MySQL/MariaDB destination takes (the `mysql` client's names).
pub const MYSQL_PARAMS: [&str; 4] = ["ssl-mode", "ssl-ca", "ssl-cert", "ssl-key"];

/// The parts of a destination URL every server kind has.
struct Parts {
    url: Url,
    host: String,
    user: String,
    /// The path without its `/`, decoded; empty when absent.
    database: String,
}

/// Splits `url` into host, user and database, refusing a password and any parameter not in
/// `params`.
fn parts(url: &str, kind: &str, params: &[&str]) -> Result<Parts, String> {
    let url = Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
    let host = match url.host() {
        Some(Host::Domain(name)) if !name.is_empty() => decode(name, "host name")?.into_owned(),
        Some(Host::Ipv4(ip)) => ip.to_string(),
        Some(Host::Ipv6(ip)) => ip.to_string(),
        _ => {
            return Err(format!(
                "the URL names no host: {kind}://user@HOST:port/database"
            ));
        }
    };
    if url.password().is_some() {
        return Err(
            "the URL holds a password; give it in password_env (file) or password (admin API)"
                .into(),
        );
    }
    let user = decode(url.username(), "user name")?.into_owned();
    if user.is_empty() {
        return Err(format!(
            "the URL names no user: {kind}://USER@host:port/database"
        ));
    }
    let database = decode(url.path().trim_start_matches('/'), "database name")?.into_owned();
    if let Some((key, _)) = url
        .query_pairs()
        .find(|(k, _)| !params.contains(&k.as_ref()))
    {
        return Err(format!(
            "unknown URL parameter `{key}`; a {kind} destination takes {}, {}, {} and {}",
            params[0], params[1], params[2], params[3]
        ));
    }
    Ok(Parts {
        url,
        host,
        user,
        database,
    })
}

fn decode<'a>(text: &'a str, what: &str) -> Result<Cow<'a, str>, String> {
    percent_decode_str(text)
        .decode_utf8()
        .map_err(|_| format!("the {what} in the URL is not UTF-8"))
}

/// Options for a PostgreSQL destination at `url`, connecting with `password` (empty when
/// `None`).
pub fn postgres(url: &str, password: Option<&str>) -> Result<PgConnectOptions, String> {
    let p = parts(url, "postgres", &PG_PARAMS)?;
    let database = if p.database.is_empty() {
        &p.user
    } else {
        &p.database
    };
    // `new_without_pgpass` still reads the environment; every field it reads that matters is
    // set again below.
    let mut o = PgConnectOptions::new_without_pgpass()
        .host(&p.host)
        .port(p.url.port().unwrap_or(5432))
        .username(&p.user)
        .database(database)
        .password(password.unwrap_or_default())
        .ssl_mode(PgSslMode::Prefer)
        .application_name("lintas");
    for (key, value) in p.url.query_pairs() {
        o = match key.as_ref() {
            "sslmode" => o.ssl_mode(value.parse().map_err(|_| {
                format!(
                    "sslmode `{value}` is not one of disable, allow, prefer, require, verify-ca, \
                     verify-full"
                )
            })?),
            "sslrootcert" => o.ssl_root_cert(value.as_ref()),
            "sslcert" => o.ssl_client_cert(value.as_ref()),
            _ => o.ssl_client_key(value.as_ref()),
        };
    }
    Ok(o)
}

/// Options for a MySQL or MariaDB destination at `url`, connecting with `password`.
///
/// Without TLS, MySQL 8's `caching_sha2_password` has the client fetch the server's RSA key
/// over the plain connection to encrypt the password, which a man in the middle can answer
/// with its own key: across networks you do not trust, use `ssl-mode=VERIFY_IDENTITY`.
pub fn mysql(url: &str, password: Option<&str>) -> Result<MySqlConnectOptions, String> {
    let p = parts(url, "mysql", &MYSQL_PARAMS)?;
    let mut o = MySqlConnectOptions::new()
        .host(&p.host)
        .port(p.url.port().unwrap_or(3306))
        .username(&p.user)
        .ssl_mode(MySqlSslMode::Preferred);
    if !p.database.is_empty() {
        o = o.database(&p.database);
    }
    if let Some(password) = password {
        o = o.password(password);
    }
    for (key, value) in p.url.query_pairs() {
        o = match key.as_ref() {
            "ssl-mode" => o.ssl_mode(value.parse().map_err(|_| {
                format!(
                    "ssl-mode `{value}` is not one of DISABLED, PREFERRED, REQUIRED, VERIFY_CA, \
                     VERIFY_IDENTITY"
                )
            })?),
            "ssl-ca" => o.ssl_ca(value.as_ref()),
            "ssl-cert" => o.ssl_client_cert(value.as_ref()),
            _ => o.ssl_client_key(value.as_ref()),
        };
    }
    Ok(o)
}
