//! `meshctl local dashboard` for a test: started on a free loopback port (its
//! first stdout line is the URL), killed on drop, and small readers of its
//! page's DOM (the `data-*` attributes every node, edge, row and trace has).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use super::{text, Local};

pub struct Dashboard {
    child: Child,
    pub url: String,
}

impl Dashboard {
    /// `meshctl local dashboard --port 0 --refresh 0 ARGS` for `mesh`.
    pub fn start(mesh: &Local, args: &[&str]) -> Dashboard {
        let mut child = Command::new(env!("CARGO_BIN_EXE_meshctl"))
            .args(["local", "--name", &mesh.name, "--root"])
            .arg(&mesh.root)
            .args(["dashboard", "--port", "0", "--refresh", "0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line.trim().strip_prefix("dashboard: ").map(str::to_string);
        let d = Dashboard {
            child,
            url: url.clone().unwrap_or_default(),
        };
        assert!(
            url.is_some_and(|u| u.starts_with("http://127.0.0.1:")),
            "dashboard's first line: {line:?}"
        );
        d
    }

    /// The page as served (curl from this host).
    pub fn get(&self) -> String {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "30", &self.url])
            .output()
            .unwrap();
        assert!(out.status.success(), "GET {}: {}", self.url, text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The opening tags that start with `prefix` (e.g. `<g class="edge"`).
pub fn tags<'a>(dom: &'a str, prefix: &str) -> Vec<&'a str> {
    dom.match_indices(prefix)
        .map(|(i, _)| &dom[i..i + dom[i..].find('>').unwrap_or(0)])
        .collect()
}

/// An attribute's value in a tag.
pub fn attr(tag: &str, name: &str) -> Option<String> {
    let key = format!(" {name}=\"");
    let start = tag.find(&key)? + key.len();
    let end = start + tag[start..].find('"')?;
    Some(tag[start..end].replace("&amp;", "&"))
}

/// The graph edge (its attributes through its label) from `from` to `to`;
/// `protocol` is `http` or `tcp`.
pub fn edge<'a>(dom: &'a str, from: &str, to: &str, protocol: &str) -> Option<&'a str> {
    let key = format!("data-from=\"{from}\" data-to=\"{to}\" data-protocol=\"{protocol}\"");
    let i = dom.find(&key)?;
    let end = i + dom[i..].find("</text></g>")?;
    Some(&dom[i..end])
}

/// An edge attribute as a number (0 when absent).
pub fn num(edge: &str, name: &str) -> f64 {
    attr(edge, name).and_then(|v| v.parse().ok()).unwrap_or(0.0)
}
