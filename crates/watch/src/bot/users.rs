//! People registered with the bot, in the store: their registration step, whether an admin
//! let them in ([`Access`]), and whether their email address is confirmed.

use sqlx::Row;
use store::Store;

use crate::now_ms;

/// Where a person is in registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Asked for their name.
    Name,
    /// Asked for their email.
    Email,
    /// Registered.
    Done,
}

impl Step {
    fn as_str(self) -> &'static str {
        match self {
            Self::Name => "name",
            Self::Email => "email",
            Self::Done => "done",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "name" => Self::Name,
            "email" => Self::Email,
            _ => Self::Done,
        }
    }
}

/// Whether a registered person is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Waits for an admin's `/approve`: `/help` only, no alerts.
    Pending,
    /// Gets alerts and the commands of their role.
    Approved,
    /// Turned away by an admin (`/deny`): no alerts, no answers beyond saying so.
    Denied,
}

impl Access {
    /// Its name in the store and the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Denied => "denied",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "approved" => Self::Approved,
            "denied" => Self::Denied,
            _ => Self::Pending,
        }
    }
}

/// A person who talked to the bot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Their Telegram chat.
    pub chat_id: i64,
    /// Name, once given.
    pub name: Option<String>,
    /// Email, once given.
    pub email: Option<String>,
    /// Registration step.
    pub step: Step,
    /// Approved as an admin by another admin.
    pub admin: bool,
    /// Alerts are not sent to them before this time.
    pub muted_until_ms: i64,
    /// Let in, waiting or turned away.
    pub access: Access,
    /// The email address answered the code mailed to it; only then does alert mail go there.
    pub email_confirmed: bool,
}

impl User {
    /// Registered (name and valid email given).
    pub fn registered(&self) -> bool {
        self.step == Step::Done
    }

    /// "Ann (123)".
    pub fn label(&self) -> String {
        format!("{} ({})", self.name.as_deref().unwrap_or("?"), self.chat_id)
    }
}

fn user(r: &sqlx::sqlite::SqliteRow) -> User {
    User {
        chat_id: r.get(0),
        name: r.get(1),
        email: r.get(2),
        step: Step::parse(r.get(3)),
        admin: r.get(4),
        muted_until_ms: r.get(5),
        access: Access::parse(r.get(6)),
        email_confirmed: r.get(7),
    }
}

const COLUMNS: &str = "chat_id, name, email, step, admin, muted_until_ms, access, email_confirmed";

/// Longest name kept, in characters: a name is shown inside lists and messages.
pub const NAME_MAX: usize = 64;

/// A name as given, made safe to show on one line of a list: control characters (newlines
/// included) become spaces, invisible formatting characters (bidi overrides and isolates,
/// zero-width ones) are dropped, runs of spaces become one, and it is cut to [`NAME_MAX`]
/// characters. Empty when nothing visible was given.
pub fn clean_name(raw: &str) -> String {
    let mut out = String::new();
    for c in raw.chars() {
        if matches!(c, '\u{061C}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
        {
            continue;
        }
        let c = if c.is_control() || c.is_whitespace() {
            ' '
        } else {
            c
        };
        if c == ' ' && (out.is_empty() || out.ends_with(' ')) {
            continue;
        }
        out.push(c);
    }
    let cut: String = out.chars().take(NAME_MAX).collect();
    cut.trim_end().to_owned()
}

/// The person behind `chat_id`, if they ever started.
pub async fn get(store: &Store, chat_id: i64) -> Result<Option<User>, sqlx::Error> {
    let r = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM watch_users WHERE chat_id = ?"
    ))
    .bind(chat_id)
    .fetch_optional(store.pool())
    .await?;
    Ok(r.as_ref().map(user))
}

/// Everyone, registered first, by name.
pub async fn all(store: &Store) -> Result<Vec<User>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM watch_users ORDER BY step <> 'done', name, chat_id"
    ))
    .fetch_all(store.pool())
    .await?;
    Ok(rows.iter().map(user).collect())
}

/// (Re)starts registration: asks for the name.
pub async fn start(store: &Store, chat_id: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO watch_users (chat_id, step, created_ms) VALUES (?, 'name', ?)
         ON CONFLICT (chat_id) DO UPDATE SET step = 'name'",
    )
    .bind(chat_id)
    .bind(now_ms())
    .execute(store.pool())
    .await?;
    Ok(())
}

/// Records the name; asks for the email.
pub async fn set_name(store: &Store, chat_id: i64, name: &str) -> Result<(), sqlx::Error> {
    set(store, chat_id, "name = ?, step = ?", name, Step::Email).await
}

/// Records the email, not yet confirmed; registration is done.
pub async fn set_email(store: &Store, chat_id: i64, email: &str) -> Result<(), sqlx::Error> {
    set(
        store,
        chat_id,
        "email_confirmed = 0, email_code = NULL, email = ?, step = ?",
        email,
        Step::Done,
    )
    .await
}

async fn set(
    store: &Store,
    chat_id: i64,
    sets: &str,
    value: &str,
    step: Step,
) -> Result<(), sqlx::Error> {
    sqlx::query(&format!("UPDATE watch_users SET {sets} WHERE chat_id = ?"))
        .bind(value)
        .bind(step.as_str())
        .bind(chat_id)
        .execute(store.pool())
        .await?;
    Ok(())
}

/// Makes `chat_id` an admin, approved by `by`.
pub async fn approve(store: &Store, chat_id: i64, by: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE watch_users SET admin = 1, access = 'approved', approved_by = ? WHERE chat_id = ?",
    )
    .bind(by)
    .bind(chat_id)
    .execute(store.pool())
    .await?;
    Ok(())
}

/// Lets `chat_id` in or turns them away (which also ends being an admin).
pub async fn set_access(store: &Store, chat_id: i64, access: Access) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE watch_users SET access = ?, admin = admin AND ? = 'approved' WHERE chat_id = ?",
    )
    .bind(access.as_str())
    .bind(access.as_str())
    .bind(chat_id)
    .execute(store.pool())
    .await?;
    Ok(())
}

/// Admins approved through the bot (not those of the file), who hear of new registrations.
pub async fn admins(store: &Store) -> Result<Vec<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT chat_id FROM watch_users WHERE admin = 1 AND access = 'approved' ORDER BY chat_id",
    )
    .fetch_all(store.pool())
    .await
}

/// How long a mailed code is good for.
pub const CODE_VALID_MS: i64 = 3_600_000;
/// Wrong answers before a code is void.
pub const CODE_TRIES: i64 = 5;
/// Least time between two code mails to one chat, so the bot cannot be used to flood an
/// address that is not its user's.
pub const CODE_GAP_MS: i64 = 60_000;

/// Records `code` as mailed to `chat_id`'s address at `now_ms`, unless a code was mailed to
/// it less than [`CODE_GAP_MS`] ago (then `false`: do not mail).
pub async fn set_code(
    store: &Store,
    chat_id: i64,
    code: &str,
    now_ms: i64,
) -> Result<bool, sqlx::Error> {
    let r = sqlx::query(
        "UPDATE watch_users SET email_code = ?, email_code_sent_ms = ?, email_code_tries = 0
         WHERE chat_id = ? AND email_code_sent_ms <= ?",
    )
    .bind(code)
    .bind(now_ms)
    .bind(chat_id)
    .bind(now_ms - CODE_GAP_MS)
    .execute(store.pool())
    .await?;
    Ok(r.rows_affected() == 1)
}

/// What answering a code did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirm {
    /// The address is confirmed.
    Confirmed,
    /// Not the code; this many tries are left.
    Wrong(i64),
    /// No code is out (never mailed, expired, used up or already confirmed).
    NoCode,
}

/// Checks `code` against the one mailed to `chat_id`.
pub async fn confirm(
    store: &Store,
    chat_id: i64,
    code: &str,
    now_ms: i64,
) -> Result<Confirm, sqlx::Error> {
    let row: Option<(Option<String>, i64, i64)> = sqlx::query_as(
        "SELECT email_code, email_code_sent_ms, email_code_tries FROM watch_users WHERE chat_id = ?",
    )
    .bind(chat_id)
    .fetch_optional(store.pool())
    .await?;
    let Some((Some(want), sent_ms, tries)) = row else {
        return Ok(Confirm::NoCode);
    };
    if tries >= CODE_TRIES || now_ms > sent_ms + CODE_VALID_MS {
        return Ok(Confirm::NoCode);
    }
    if want == code {
        sqlx::query(
            "UPDATE watch_users SET email_confirmed = 1, email_code = NULL WHERE chat_id = ?",
        )
        .bind(chat_id)
        .execute(store.pool())
        .await?;
        return Ok(Confirm::Confirmed);
    }
    sqlx::query("UPDATE watch_users SET email_code_tries = email_code_tries + 1 WHERE chat_id = ?")
        .bind(chat_id)
        .execute(store.pool())
        .await?;
    Ok(Confirm::Wrong(CODE_TRIES - tries - 1))
}

/// Mutes alerts to `chat_id` until `until_ms` (0 unmutes).
pub async fn mute(store: &Store, chat_id: i64, until_ms: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE watch_users SET muted_until_ms = ? WHERE chat_id = ?")
        .bind(until_ms)
        .bind(chat_id)
        .execute(store.pool())
        .await?;
    Ok(())
}

/// Registered, approved users not muted now: who gets alerts (by email only those whose
/// address is confirmed).
pub async fn alerted(store: &Store) -> Result<Vec<User>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM watch_users
         WHERE step = 'done' AND access = 'approved' AND muted_until_ms <= ? ORDER BY chat_id"
    ))
    .bind(now_ms())
    .fetch_all(store.pool())
    .await?;
    Ok(rows.iter().map(user).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_lose_line_breaks_controls_and_bidi_overrides() {
        assert_eq!(
            clean_name("Mallory\n900 Root\r\n\t<r@x>\u{202e}txt.exe\u{200b}"),
            "Mallory 900 Root <r@x>txt.exe"
        );
        assert_eq!(clean_name("  Ann  \u{7} Lee "), "Ann Lee");
        assert_eq!(clean_name("\u{7}\u{202e}\n"), "");
        assert_eq!(clean_name(&"é".repeat(100)), "é".repeat(NAME_MAX));
    }
}
