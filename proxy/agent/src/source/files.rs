//! The `files` source: a folder (recursive) of multi-document Kubernetes YAML.
//! Each file is one origin. Changes are seen through inotify (`notify`) and
//! debounced; a file is applied only when it parses completely, so a half-written
//! file never applies half-way: on a YAML syntax error the file's previous content
//! stays and the error (file and line) is reported.

use super::{Source, SourceError, SourceEvent};
use crate::objects::parse_yaml;
use std::collections::BTreeSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};
use tokio_util::sync::CancellationToken;

/// Reads a folder and follows its changes.
pub struct FilesSource {
    pub dir: PathBuf,
    /// Quiet time before changed files are read (coalesces editors' multi-step saves).
    pub debounce: Duration,
}

fn is_config_file(p: &Path) -> bool {
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
    !name.starts_with('.')
        && matches!(
            p.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        )
}

/// Every config file under `dir`, sorted (hidden files and folders skipped).
pub fn scan(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let p = e?.path();
            let hidden = p
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'));
            if p.is_dir() && !hidden {
                stack.push(p);
            } else if p.is_file() && is_config_file(&p) {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Reads one file into the event that describes it now.
pub fn read_file(path: &Path) -> SourceEvent {
    let origin = path.display().to_string();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return SourceEvent::Remove { origin }
        }
        Err(e) => {
            return SourceEvent::Unreadable {
                error: format!("{origin}: {e}"),
                origin,
            }
        }
    };
    let (objs, errs) = parse_yaml(&text);
    if let Some(e) = errs.iter().find(|e| e.syntax) {
        tracing::warn!(file = %origin, line = e.line, error = %e.message, "skipping malformed file");
        return SourceEvent::Unreadable {
            error: format!("{origin}:{}: {}", e.line, e.message),
            origin,
        };
    }
    let errors: Vec<String> = errs
        .iter()
        .map(|e| format!("{origin}:{}: {}", e.line, e.message))
        .collect();
    for e in &errors {
        tracing::warn!(error = %e, "object skipped");
    }
    SourceEvent::Replace {
        origin,
        objects: objs.into_iter().map(|(_, o)| o).collect(),
        errors,
    }
}

impl Source for FilesSource {
    fn run(
        self: Box<Self>,
        events: UnboundedSender<SourceEvent>,
        shutdown: CancellationToken,
    ) -> Pin<Box<dyn Future<Output = Result<(), SourceError>> + Send>> {
        Box::pin(async move { self.run_inner(events, shutdown).await })
    }
}

impl FilesSource {
    async fn run_inner(
        self,
        events: UnboundedSender<SourceEvent>,
        shutdown: CancellationToken,
    ) -> Result<(), SourceError> {
        use notify::Watcher;
        let dir = std::fs::canonicalize(&self.dir).map_err(|source| SourceError::Folder {
            path: self.dir.display().to_string(),
            source,
        })?;
        let (tx, mut rx) = unbounded_channel::<PathBuf>();
        // Watch first, then scan, so nothing written in between is missed.
        let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            // Reads (our own included) raise access events; only changes matter.
            if let Ok(ev) = res {
                if matches!(ev.kind, notify::EventKind::Access(_)) {
                    return;
                }
                for p in ev.paths {
                    let _ = tx.send(p);
                }
            }
        })
        .map_err(|source| SourceError::Watch {
            path: dir.display().to_string(),
            source,
        })?;
        watcher
            .watch(&dir, notify::RecursiveMode::Recursive)
            .map_err(|source| SourceError::Watch {
                path: dir.display().to_string(),
                source,
            })?;
        let mut known: BTreeSet<PathBuf> = BTreeSet::new();
        let files = scan(&dir).map_err(|source| SourceError::Folder {
            path: dir.display().to_string(),
            source,
        })?;
        for f in files {
            let ev = read_file(&f);
            known.insert(f);
            if events.send(ev).is_err() {
                return Ok(());
            }
        }
        tracing::info!(dir = %dir.display(), files = known.len(), "files source synced");
        loop {
            let first = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                p = rx.recv() => match p { Some(p) => p, None => return Ok(()) },
            };
            let mut dirty = BTreeSet::from([first]);
            // Coalesce a burst; bounded so a constantly changing folder still progresses.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
            loop {
                let quiet = tokio::time::sleep(self.debounce);
                tokio::select! {
                    _ = quiet => break,
                    _ = tokio::time::sleep_until(deadline) => break,
                    p = rx.recv() => match p { Some(p) => { dirty.insert(p); } None => break },
                }
            }
            for ev in self.resolve(&dir, dirty, &mut known) {
                if events.send(ev).is_err() {
                    return Ok(());
                }
            }
        }
    }

    /// Turns changed paths (files or whole folders) into events.
    fn resolve(
        &self,
        dir: &Path,
        dirty: BTreeSet<PathBuf>,
        known: &mut BTreeSet<PathBuf>,
    ) -> Vec<SourceEvent> {
        let mut files = BTreeSet::new();
        for p in dirty {
            if p.is_dir() {
                files.extend(scan(&p).unwrap_or_default());
                // Files that vanished with a moved-away subfolder.
                files.extend(known_under(known, &p));
            } else if is_config_file(&p) {
                files.insert(p.clone());
            } else if !p.exists() {
                files.extend(known_under(known, &p));
            }
        }
        let mut out = Vec::new();
        for f in files {
            if !f.starts_with(dir) {
                continue;
            }
            let ev = read_file(&f);
            match &ev {
                SourceEvent::Remove { .. } => {
                    if !known.remove(&f) {
                        continue;
                    }
                }
                _ => {
                    known.insert(f);
                }
            }
            out.push(ev);
        }
        out
    }
}

/// The known files at or under `p`. Paths order component by component, so
/// they are one run of the set starting at `p`: a renamed-away temp file (an
/// editor's or `kubectl`-style atomic write) costs a lookup, not a walk over
/// every file of a large folder.
fn known_under(known: &BTreeSet<PathBuf>, p: &Path) -> Vec<PathBuf> {
    known
        .range::<Path, _>((std::ops::Bound::Included(p), std::ops::Bound::Unbounded))
        .take_while(|k| k.starts_with(p))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_under_is_the_run_of_paths_below_one_path() {
        let known: BTreeSet<PathBuf> = [
            "/m/a.yaml",
            "/m/b/x.yaml",
            "/m/b/deep/y.yaml",
            "/m/b.yaml",
            "/m/bc/z.yaml",
            "/m/c.yaml",
        ]
        .into_iter()
        .map(PathBuf::from)
        .collect();
        let under = |p: &str| known_under(&known, Path::new(p));
        assert_eq!(
            under("/m/b"),
            [
                PathBuf::from("/m/b/deep/y.yaml"),
                PathBuf::from("/m/b/x.yaml")
            ]
        );
        assert_eq!(under("/m/b.yaml"), [PathBuf::from("/m/b.yaml")]);
        assert_eq!(under("/m/.b.yaml.tmp"), Vec::<PathBuf>::new());
        assert_eq!(under("/m").len(), known.len());
    }
}
