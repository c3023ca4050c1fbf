//! People registered with the bot, in the store.

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
    }
}

const COLUMNS: &str = "chat_id, name, email, step, admin, muted_until_ms";

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

/// Records the email; registration is done.
pub async fn set_email(store: &Store, chat_id: i64, email: &str) -> Result<(), sqlx::Error> {
    set(store, chat_id, "email = ?, step = ?", email, Step::Done).await
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
    sqlx::query("UPDATE watch_users SET admin = 1, approved_by = ? WHERE chat_id = ?")
        .bind(by)
        .bind(chat_id)
        .execute(store.pool())
        .await?;
    Ok(())
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

/// Registered users not muted now: who gets alerts.
pub async fn alerted(store: &Store) -> Result<Vec<User>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM watch_users WHERE step = 'done' AND muted_until_ms <= ? ORDER BY chat_id"
    ))
    .bind(now_ms())
    .fetch_all(store.pool())
    .await?;
    Ok(rows.iter().map(user).collect())
}
