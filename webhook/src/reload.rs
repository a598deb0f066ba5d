//! Reloading files that change under a running server (serving cert + key, mesh
//! config). Polling the content is deliberate: Kubernetes updates mounted Secrets
//! and ConfigMaps by swapping symlinks, which inotify-style watches easily miss.
//! A new version that fails to load is logged and the last good one stays.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::config::parse_mesh_config;
use crate::server::AppState;
use crate::tls::{load_certified_key, CertStore};

/// How many new versions of a watched file were put in force and how many were
/// rejected (the last good one stayed). Tests and operators wait on these instead
/// of guessing how long a poll takes.
#[derive(Debug, Default)]
pub struct ReloadStats {
    applied: AtomicU64,
    rejected: AtomicU64,
}

impl ReloadStats {
    pub fn applied(&self) -> u64 {
        self.applied.load(Ordering::Acquire)
    }

    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Acquire)
    }

    fn record(&self, ok: bool) {
        let c = if ok { &self.applied } else { &self.rejected };
        c.fetch_add(1, Ordering::AcqRel);
    }
}

/// Polls `paths` every `every`; when their content changes (and all are readable),
/// calls `apply` with the new contents. Stops when `stop` flips to true.
pub fn poll_files<F>(
    paths: Vec<PathBuf>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
    mut apply: F,
) where
    F: FnMut(&[Vec<u8>]) + Send + 'static,
{
    let read_all = move |paths: &[PathBuf]| -> Option<Vec<Vec<u8>>> {
        paths
            .iter()
            .map(|p| match std::fs::read(p) {
                Ok(b) => Some(b),
                Err(e) => {
                    tracing::warn!(path = %p.display(), error = %e, "cannot read watched file; keeping the last good version");
                    None
                }
            })
            .collect()
    };
    let mut last = read_all(&paths);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
            if let Some(now) = read_all(&paths) {
                if last.as_ref() != Some(&now) {
                    apply(&now);
                    last = Some(now);
                }
            }
        }
    });
}

/// Keeps `store` in step with the cert and key files.
pub fn watch_cert(
    store: Arc<CertStore>,
    cert: PathBuf,
    key: PathBuf,
    every: Duration,
    stop: watch::Receiver<bool>,
) -> Arc<ReloadStats> {
    let stats = Arc::new(ReloadStats::default());
    let st = stats.clone();
    poll_files(
        vec![cert.clone(), key],
        every,
        stop,
        move |c| match load_certified_key(&c[0], &c[1]) {
            Ok(k) => {
                store.swap(k);
                tracing::info!(cert = %cert.display(), "serving certificate reloaded");
                st.record(true);
            }
            Err(e) => {
                tracing::error!(cert = %cert.display(), error = %e, "new serving certificate rejected; keeping the current one");
                st.record(false);
            }
        },
    );
    stats
}

/// Keeps the server's mesh config in step with its file.
pub fn watch_mesh_config(
    state: Arc<AppState>,
    path: PathBuf,
    every: Duration,
    stop: watch::Receiver<bool>,
) -> Arc<ReloadStats> {
    let stats = Arc::new(ReloadStats::default());
    let st = stats.clone();
    poll_files(vec![path.clone()], every, stop, move |c| {
        // An empty file mid-reload is almost always a half-written one, not a
        // request for all defaults.
        let parsed = std::str::from_utf8(&c[0])
            .map_err(|e| e.to_string())
            .and_then(|t| match t.trim() {
                "" => Err("file is empty".to_string()),
                _ => parse_mesh_config(t).map_err(|e| e.to_string()),
            });
        match parsed {
            Ok(m) => {
                state.set_mesh(m);
                tracing::info!(path = %path.display(), "mesh config reloaded");
                st.record(true);
            }
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "new mesh config rejected; the last good one stays in force");
                st.record(false);
            }
        }
    });
    stats
}
