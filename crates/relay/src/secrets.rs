//! Destination passwords given through the admin API, encrypted at rest.
//!
//! The key is 32 random bytes in a file of its own (`data_dir/secret.key` by default,
//! created on first use, mode 0600), so a copy of the store alone does not reveal the
//! passwords; keep the key file out of backups of the store, or put it elsewhere with
//! `relay.secret_key_file`. Passwords of destinations declared in the file come from
//! environment variables instead and are never stored.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};

/// The cipher for stored passwords.
#[derive(Clone)]
pub struct Secrets {
    cipher: ChaCha20Poly1305,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets")
    }
}

impl Secrets {
    /// Reads the key at `path`, creating it (0600) if there is none.
    pub fn load_or_create(path: &Path) -> Result<Self, String> {
        let shown = path.display();
        let key = match std::fs::read_to_string(path) {
            Ok(text) => STANDARD
                .decode(text.trim())
                .ok()
                .filter(|k| k.len() == 32)
                .ok_or_else(|| format!("{shown}: expected 32 bytes in base64"))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = ChaCha20Poly1305::generate_key(&mut OsRng);
                write_private(path, &STANDARD.encode(key)).map_err(|e| format!("{shown}: {e}"))?;
                key.to_vec()
            }
            Err(e) => return Err(format!("{shown}: {e}")),
        };
        Ok(Self {
            cipher: ChaCha20Poly1305::new(Key::from_slice(&key)),
        })
    }

    /// `plain`, encrypted with a fresh nonce, as base64 of nonce and ciphertext.
    pub fn encrypt(&self, plain: &str) -> Result<String, String> {
        let nonce = ChaCha20Poly1305::generate_nonce(&mut OsRng);
        let sealed = self
            .cipher
            .encrypt(&nonce, plain.as_bytes())
            .map_err(|_| "encryption failed".to_owned())?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(STANDARD.encode(out))
    }

    /// What [`Secrets::encrypt`] sealed.
    pub fn decrypt(&self, sealed: &str) -> Result<String, String> {
        let bytes = STANDARD
            .decode(sealed)
            .map_err(|_| "stored password is not base64".to_owned())?;
        if bytes.len() < 12 {
            return Err("stored password is truncated".into());
        }
        let (nonce, body) = bytes.split_at(12);
        let plain = self
            .cipher
            .decrypt(Nonce::from_slice(nonce), body)
            .map_err(|_| {
                "stored password does not decrypt with this secret key (was the key file replaced?)"
                    .to_owned()
            })?;
        String::from_utf8(plain).map_err(|_| "stored password is not UTF-8".into())
    }
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_round_trip_and_a_new_key_cannot_read_them() {
        let dir = std::env::temp_dir().join(format!("lintas-secrets-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let a = Secrets::load_or_create(&dir.join("secret.key")).unwrap();
        let sealed = a.encrypt("hunter2").unwrap();
        assert!(!sealed.contains("hunter2"));
        assert_ne!(
            sealed,
            a.encrypt("hunter2").unwrap(),
            "fresh nonce every time"
        );
        let again = Secrets::load_or_create(&dir.join("secret.key")).unwrap();
        assert_eq!(again.decrypt(&sealed).unwrap(), "hunter2");
        let other = Secrets::load_or_create(&dir.join("other.key")).unwrap();
        assert!(
            other
                .decrypt(&sealed)
                .unwrap_err()
                .contains("does not decrypt")
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("secret.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "the key's directory, created with it");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
