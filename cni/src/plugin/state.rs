//! What ADD wrote for one attachment, kept in the plugin's state folder so DEL removes
//! exactly that (and nothing when ADD wrote nothing), CHECK knows what to verify and GC
//! finds attachments that no longer exist. Files are written atomically.

use std::path::{Path, PathBuf};

use mesh_api::RedirectParams;
use serde::{Deserialize, Serialize};

use crate::capture::Written;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub container_id: String,
    pub ifname: String,
    pub netns: String,
    pub pod: String,
    pub params: RedirectParams,
    pub written: Written,
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

pub fn path(dir: &Path, container_id: &str, ifname: &str) -> PathBuf {
    dir.join(format!(
        "{}_{}.json",
        sanitize(container_id),
        sanitize(ifname)
    ))
}

pub fn write(dir: &Path, r: &Record) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let p = path(dir, &r.container_id, &r.ifname);
    let tmp = p.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(
        &tmp,
        serde_json::to_vec_pretty(r).map_err(std::io::Error::other)?,
    )?;
    std::fs::rename(&tmp, &p)
}

pub fn read(dir: &Path, container_id: &str, ifname: &str) -> std::io::Result<Option<Record>> {
    match std::fs::read(path(dir, container_id, ifname)) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(std::io::Error::other),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

pub fn remove(dir: &Path, container_id: &str, ifname: &str) -> std::io::Result<()> {
    match std::fs::remove_file(path(dir, container_id, ifname)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// All records in the folder (unreadable files are skipped).
pub fn all(dir: &Path) -> Vec<Record> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|b| serde_json::from_slice(&b).ok())
        .collect()
}
