//! The relay's objects: applications, destinations and routes in the store, the snapshot
//! of them everyone reads, and the key that seals destination passwords.
//!
//! Ingest, the delivery workers and the admin API all work from [`Objects`]; only the
//! admin API and a reload change it. Every change goes to the store first and then
//! replaces the whole snapshot ([`Objects::refresh`]), and each replacement bumps a
//! generation that the delivery side watches to start, stop or re-check its workers.

use std::sync::Arc;

use ::service::StartError;
use arc_swap::ArcSwap;
use configkit::KeyPath;
use store::Store;
use tokio::sync::watch;

use crate::catalog::{self, Catalog};
use crate::config::{DestinationSpec, RelayConfig};
use crate::secrets::Secrets;

/// The relay's objects and where they are kept.
pub(crate) struct Objects {
    /// Where the objects, the delivery log and dead letters are kept.
    store: Store,
    /// Decrypts destination passwords kept in the store.
    secrets: Secrets,
    /// The snapshot read on every request and batch, replaced whole on a change.
    catalog: ArcSwap<Catalog>,
    /// Bumped after each replacement, so workers notice a change without polling.
    generation: watch::Sender<u64>,
}

impl std::fmt::Debug for Objects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Objects").finish_non_exhaustive()
    }
}

impl Objects {
    /// The objects of `store`, as they are now.
    pub(crate) async fn load(store: Store, secrets: Secrets) -> Result<Self, sqlx::Error> {
        let catalog = Catalog::load(store.pool()).await?;
        Ok(Self {
            store,
            secrets,
            catalog: ArcSwap::from_pointee(catalog),
            generation: watch::channel(0).0,
        })
    }

    /// The store.
    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// The current snapshot.
    pub(crate) fn catalog(&self) -> arc_swap::Guard<Arc<Catalog>> {
        self.catalog.load()
    }

    /// Re-reads the snapshot from the store and tells whoever watches.
    pub(crate) async fn refresh(&self) -> Result<(), sqlx::Error> {
        let cat = Catalog::load(self.store.pool()).await?;
        self.catalog.store(Arc::new(cat));
        self.generation.send_modify(|g| *g += 1);
        Ok(())
    }

    /// Writes the declarations of `cfg` (the file's `[relay]`, at `at`) into the store and
    /// refreshes; a destination declared now starts at the stream's `end`.
    pub(crate) async fn declare(
        &self,
        cfg: &RelayConfig,
        at: &KeyPath,
        end: u64,
    ) -> Result<(), StartError> {
        catalog::sync_declared(self.store.pool(), cfg, at, end).await?;
        self.refresh()
            .await
            .map_err(|e| StartError::new(at.clone(), format!("store: {e}")))
    }

    /// Sees every change of the snapshot.
    pub(crate) fn changes(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// The password to connect to a destination with: from its environment variable, or
    /// decrypted from the store, or the one given with the spec (a new destination).
    pub(crate) fn password_for(
        &self,
        spec: &DestinationSpec,
        stored: Option<&str>,
    ) -> Result<Option<String>, String> {
        if let Some(var) = &spec.password_env {
            return std::env::var(var)
                .map(Some)
                .map_err(|_| format!("environment variable {var} (password_env) is not set"));
        }
        match stored {
            Some(sealed) => self.secrets.decrypt(sealed).map(Some),
            None => Ok(spec.password.clone()),
        }
    }

    /// Seals a password for the store.
    pub(crate) fn seal(&self, password: &str) -> Result<String, String> {
        self.secrets.encrypt(password)
    }
}
