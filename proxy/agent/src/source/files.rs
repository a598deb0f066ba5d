//! The `files` source: a folder (recursive) of multi-document Kubernetes YAML.
//! Each file is one origin. Changes are seen through inotify (`notify`) and
//! debounced; a file is applied only when it parses completely, so a half-written
//! file never applies half-way: on a YAML syntax error the file's previous content
//! stays and the error (file and line) is reported.
//!
//! Hidden entries (a name starting with `.`) are not config, at start-up or on
//! change: editors' and `kubectl`-style temp files, and the `..data` /
//! `..<timestamp>` folders through which the kubelet updates a mounted
//! ConfigMap. When such a folder or symlink appears (the kubelet swapping
//! `..data`), the visible files next to it that are symlinks are read again,
//! since their targets changed; a ConfigMap update therefore replaces each
//! file's content under its own name, as an edit would.

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

/// A hidden name (`.x.yaml.tmp`, `..data`): never config.
fn dot(name: &std::ffi::OsStr) -> bool {
    name.as_encoded_bytes().starts_with(b".")
}

fn is_config_file(p: &Path) -> bool {
    !p.file_name().is_some_and(dot)
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
            if p.is_dir() && !p.file_name().is_some_and(dot) {
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
        let root = dir.clone();
        // Watch first, then scan, so nothing written in between is missed.
        let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            // Reads (our own included) raise access events; only changes matter.
            if let Ok(ev) = res {
                if matches!(ev.kind, notify::EventKind::Access(_)) {
                    return;
                }
                // Dropped here, on inotify's thread: a temp file's create and
                // writes would each wake the source for nothing.
                for p in ev.paths.into_iter().filter(|p| !ignored(&root, p)) {
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
        if events.send(SourceEvent::Synced).is_err() {
            return Ok(());
        }
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
            if hidden(dir, &p) {
                // Only a hidden folder or symlink itself gets here (see `ignored`).
                if let Some(parent) = p.parent() {
                    files.extend(symlinks_in(known, parent));
                }
            } else if p.is_dir() {
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

/// Whether `p` lies in or is a hidden entry below `dir`.
fn hidden(dir: &Path, p: &Path) -> bool {
    p.strip_prefix(dir).is_ok_and(|rel| rel.iter().any(dot))
}

/// Whether a change at `p` can be ignored: it is hidden, and not itself a
/// hidden folder or symlink in a visible folder (whose appearance may
/// retarget the visible symlinks next to it).
fn ignored(dir: &Path, p: &Path) -> bool {
    let Ok(rel) = p.strip_prefix(dir) else {
        return false;
    };
    match rel.iter().position(dot) {
        None => false,
        Some(i) if i + 1 == rel.iter().count() => {
            !std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink() || m.is_dir())
        }
        Some(_) => true,
    }
}

/// The known files directly in `folder` that are symlinks.
fn symlinks_in(known: &BTreeSet<PathBuf>, folder: &Path) -> Vec<PathBuf> {
    known_under(known, folder)
        .into_iter()
        .filter(|f| f.parent() == Some(folder))
        .filter(|f| std::fs::symlink_metadata(f).is_ok_and(|m| m.file_type().is_symlink()))
        .collect()
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
    fn hidden_changes_are_ignored_unless_a_hidden_folder_or_link_appears() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        std::fs::write(d.join(".x.yaml.tmp"), "").unwrap();
        std::fs::write(d.join("x.yaml"), "").unwrap();
        std::fs::create_dir(d.join("..2026_a")).unwrap();
        std::fs::write(d.join("..2026_a/x.yaml"), "").unwrap();
        std::os::unix::fs::symlink("..2026_a", d.join("..data")).unwrap();
        std::fs::create_dir_all(d.join("sub/.git")).unwrap();
        let ign = |p: &str| ignored(d, &d.join(p));
        assert!(ign(".x.yaml.tmp"), "a temp file");
        assert!(ign(".gone.tmp"), "a renamed-away temp file");
        assert!(ign("..2026_a/x.yaml"), "a file in a hidden folder");
        assert!(!ign("x.yaml"));
        assert!(!ign("..2026_a"), "a hidden folder appearing");
        assert!(!ign("..data"), "a hidden symlink swapped");
        assert!(!ign("sub/.git"), "a hidden folder in a subfolder");
        assert!(ign("sub/.git/x.yaml"));
    }

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
