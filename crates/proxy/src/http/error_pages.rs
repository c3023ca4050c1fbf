//! Custom error pages: files a listener serves, as `text/html; charset=utf-8`, instead of
//! lintas's own plain-text answer of a status (`error_pages = { 503 = "/etc/lintas/503.html" }`).
//! They are read when the configuration is applied, so a request never touches the disk and
//! a changed file is picked up by a reload.

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;

use bytes::Bytes;

/// A listener's pages by status.
#[derive(Debug, Default, Clone)]
pub(crate) struct ErrorPages(Vec<(u16, Bytes)>);

impl ErrorPages {
    /// Reads every page of `pages` (keys were validated as statuses); on error, the key of
    /// the page that could not be read.
    pub(crate) fn load(pages: &BTreeMap<String, PathBuf>) -> Result<Self, (String, io::Error)> {
        let mut loaded = Vec::with_capacity(pages.len());
        for (key, path) in pages {
            let Ok(status) = key.parse::<u16>() else {
                continue;
            };
            let body = std::fs::read(path).map_err(|e| (key.clone(), e))?;
            loaded.push((status, Bytes::from(body)));
        }
        Ok(Self(loaded))
    }

    /// The page for `status`, if the listener has one.
    pub(crate) fn get(&self, status: u16) -> Option<&Bytes> {
        self.0.iter().find(|(s, _)| *s == status).map(|(_, b)| b)
    }
}
