//! Streams by name, each opened once per backplane and then shared.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use crate::BackplaneError;

/// The streams a backplane has opened: every service asking for a name gets the same
/// stream, so appends and group positions are never split between two handles on one log.
#[derive(Debug)]
pub(crate) struct Named<T>(tokio::sync::Mutex<HashMap<String, Arc<T>>>);

impl<T> Default for Named<T> {
    fn default() -> Self {
        Self(tokio::sync::Mutex::new(HashMap::new()))
    }
}

impl<T> Named<T> {
    /// The stream called `name`, opened by `open` the first time it is asked for (under the
    /// lock, so two first callers cannot open it twice).
    pub(crate) async fn get_or_open<F, Fut>(
        &self,
        name: &str,
        open: F,
    ) -> Result<Arc<T>, BackplaneError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, BackplaneError>>,
    {
        let mut streams = self.0.lock().await;
        if let Some(s) = streams.get(name) {
            return Ok(s.clone());
        }
        let opened = Arc::new(open().await?);
        streams.insert(name.to_owned(), opened.clone());
        Ok(opened)
    }

    /// Forgets the stream `name` while `delete` removes it (under the lock, so nobody
    /// opens it meanwhile); returns what `delete` does.
    pub(crate) async fn forget<F, Fut, R>(&self, name: &str, delete: F) -> R
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = R>,
    {
        let mut streams = self.0.lock().await;
        streams.remove(name);
        delete().await
    }
}
