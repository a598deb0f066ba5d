//! `meshctl local dashboard` for a test: its command (on a free loopback port;
//! the first stdout line is the URL), the page read until it shows what the
//! test waits for, and small readers of its DOM (the `data-*` attributes every
//! node, edge, row and trace has).

use std::process::Command;
use std::time::{Duration, Instant};

use super::{text, Local};

/// `meshctl local dashboard --port 0 --refresh 0 ARGS` for `mesh` (start it
/// with `procs::spawn`, which returns its first line).
pub fn command(mesh: &Local, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_meshctl"));
    cmd.args(["local", "--name", &mesh.name, "--root"])
        .arg(&mesh.root)
        .args(["dashboard", "--port", "0", "--refresh", "0"])
        .args(args);
    cmd
}

/// The URL from the dashboard's first line (`dashboard: http://127.0.0.1:PORT/`).
pub fn url(first_line: &str) -> String {
    let url = first_line
        .trim()
        .strip_prefix("dashboard: ")
        .unwrap_or_default();
    assert!(
        url.starts_with("http://127.0.0.1:"),
        "dashboard's first line: {first_line:?}"
    );
    url.to_string()
}

/// The page as served (curl from this host).
pub fn get(url: &str) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "30", url])
        .output()
        .unwrap();
    assert!(out.status.success(), "GET {url}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Reads the page with `read` until `missing` finds nothing missing (scrapes
/// and span exports are asynchronous), for at most `limit`; panics with what
/// is still missing and the last page.
pub fn until(
    limit: Duration,
    read: impl Fn() -> String,
    missing: impl Fn(&str) -> Vec<String>,
) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let page = read();
        let miss = missing(&page);
        if miss.is_empty() {
            return page;
        }
        assert!(
            Instant::now() < deadline,
            "the dashboard never showed: {miss:#?}\npage:\n{page}"
        );
        std::thread::sleep(Duration::from_millis(300));
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
