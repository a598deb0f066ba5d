//! Surgical edits of CNI network configuration files: find the primary config the
//! runtime uses, append our plugin as the last entry of its `plugins` array, turn a
//! single-plugin `.conf` into a `.conflist`, and remove exactly our entry again. Edits
//! splice text, so every other byte of the file (order, spacing, unknown fields) stays.

use std::path::{Path, PathBuf};

/// The plugin `type` that marks our entry.
pub const PLUGIN_TYPE: &str = "mesh-cni";

/// The file the runtime loads: the first (by name) `.conf`/`.conflist`/`.json` that is
/// valid JSON with a `type` or a `plugins` list, as libcni does.
pub fn primary(dir: &Path) -> Option<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("conf" | "conflist" | "json")
                )
        })
        .collect();
    files.sort();
    files.into_iter().find(|p| {
        let Ok(text) = std::fs::read_to_string(p) else {
            return false;
        };
        match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(v) => v.get("plugins").is_some_and(|p| p.is_array()) || v.get("type").is_some(),
            Err(e) => {
                tracing::warn!(file = %p.display(), error = %e, "ignoring invalid CNI config");
                false
            }
        }
    })
}

/// Byte ranges of a JSON text's parts, found by a small scanner.
struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
}

impl Scanner<'_> {
    fn ws(&mut self) {
        while self.i < self.b.len() && self.b[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn string(&mut self) -> Option<()> {
        // at opening quote
        self.i += 1;
        while self.i < self.b.len() {
            match self.b[self.i] {
                b'\\' => self.i += 2,
                b'"' => {
                    self.i += 1;
                    return Some(());
                }
                _ => self.i += 1,
            }
        }
        None
    }

    /// Skips one value; returns its range.
    fn value(&mut self) -> Option<(usize, usize)> {
        self.ws();
        let start = self.i;
        match *self.b.get(self.i)? {
            b'"' => self.string()?,
            b'{' | b'[' => {
                let mut depth = 0usize;
                loop {
                    match *self.b.get(self.i)? {
                        b'"' => {
                            self.string()?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                self.i += 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                    self.i += 1;
                }
            }
            _ => {
                while self.i < self.b.len() && !b",}] \t\r\n".contains(&self.b[self.i]) {
                    self.i += 1;
                }
            }
        }
        Some((start, self.i))
    }
}

/// The `plugins` array of a conflist: position of `[`, of `]`, and each element's range.
pub struct PluginsArray {
    pub open: usize,
    pub close: usize,
    pub elems: Vec<(usize, usize)>,
}

pub fn plugins_array(text: &str) -> Option<PluginsArray> {
    let mut s = Scanner {
        b: text.as_bytes(),
        i: 0,
    };
    s.ws();
    if s.b.get(s.i) != Some(&b'{') {
        return None;
    }
    s.i += 1;
    loop {
        s.ws();
        match s.b.get(s.i)? {
            b'}' => return None,
            b',' => {
                s.i += 1;
                continue;
            }
            b'"' => {}
            _ => return None,
        }
        let ks = s.i;
        s.string()?;
        let key = &text[ks + 1..s.i - 1];
        s.ws();
        if s.b.get(s.i) != Some(&b':') {
            return None;
        }
        s.i += 1;
        s.ws();
        if key == "plugins" && s.b.get(s.i) == Some(&b'[') {
            let open = s.i;
            s.i += 1;
            let mut elems = Vec::new();
            loop {
                s.ws();
                match s.b.get(s.i)? {
                    b']' => {
                        return Some(PluginsArray {
                            open,
                            close: s.i,
                            elems,
                        })
                    }
                    b',' => s.i += 1,
                    _ => elems.push(s.value()?),
                }
            }
        }
        s.value()?;
    }
}

fn is_ours(elem: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(elem)
        .ok()
        .and_then(|v| v.get("type")?.as_str().map(|t| t == PLUGIN_TYPE))
        .unwrap_or(false)
}

/// Whether the conflist text already has our entry.
pub fn has_entry(text: &str) -> bool {
    plugins_array(text).is_some_and(|a| a.elems.iter().any(|&(s, e)| is_ours(&text[s..e])))
}

/// Appends `entry` (a JSON object) as the last plugin, matching the layout of the
/// previous element. `None` when the text is not a conflist.
pub fn insert(text: &str, entry: &str) -> Option<String> {
    let a = plugins_array(text)?;
    Some(match a.elems.last() {
        Some(&(start, end)) => {
            let before_start = text[..start]
                .rfind(|c: char| !c.is_whitespace())
                .map(|i| i + 1)
                .unwrap_or(start);
            let gap = &text[before_start..start];
            format!("{},{gap}{entry}{}", &text[..end], &text[end..])
        }
        None => format!("{}{entry}{}", &text[..a.open + 1], &text[a.close..]),
    })
}

/// Removes our entries (and the separator that came with each), leaving the rest.
pub fn remove(text: &str) -> String {
    let mut out = text.to_string();
    while let Some(a) = plugins_array(&out) {
        let Some(k) = a.elems.iter().position(|&(s, e)| is_ours(&out[s..e])) else {
            break;
        };
        let (s, e) = a.elems[k];
        out = if k > 0 {
            // Cut from the end of the previous element: ",<gap><entry>".
            let prev_end = a.elems[k - 1].1;
            format!("{}{}", &out[..prev_end], &out[e..])
        } else if let Some(&(next_start, _)) = a.elems.get(1) {
            format!("{}{}", &out[..s], &out[next_start..])
        } else {
            format!("{}{}", &out[..a.open + 1], &out[a.close..])
        };
    }
    out
}

/// Wraps a single-plugin `.conf` into conflist text, keeping the plugin verbatim.
pub fn conf_to_conflist(conf_text: &str, entry: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(conf_text).ok()?;
    let version = v
        .get("cniVersion")
        .and_then(|x| x.as_str())
        .unwrap_or("0.3.1");
    let name = v
        .get("name")
        .and_then(|x| x.as_str())
        .unwrap_or("k8s-pod-network");
    Some(format!(
        "{{\n  \"cniVersion\": {},\n  \"name\": {},\n  \"plugins\": [\n    {},\n    {entry}\n  ]\n}}\n",
        serde_json::Value::from(version),
        serde_json::Value::from(name),
        conf_text.trim()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BRIDGE: &str = "{\n  \"cniVersion\": \"1.0.0\",\n  \"name\": \"containerd-net\",\n  \"plugins\": [\n    {\n      \"type\": \"bridge\",\n      \"bridge\": \"cni0\",\n      \"ipam\": {\"type\": \"host-local\", \"ranges\": [[{\"subnet\": \"10.88.0.0/16\"}]]}\n    },\n    {\"type\": \"portmap\", \"capabilities\": {\"portMappings\": true}}\n  ]\n}\n";

    #[test]
    fn insert_then_remove_is_byte_exact() {
        let e = r#"{"type":"mesh-cni","note":"a \"quoted\" ] value"}"#;
        let with = insert(BRIDGE, e).unwrap();
        assert!(has_entry(&with) && !has_entry(BRIDGE));
        let v: serde_json::Value = serde_json::from_str(&with).unwrap();
        assert_eq!(v["plugins"][2]["type"], "mesh-cni");
        assert_eq!(v["plugins"].as_array().unwrap().len(), 3);
        assert_eq!(remove(&with), BRIDGE);
        let empty = "{\"name\":\"x\",\"plugins\":[]}";
        let with = insert(empty, e).unwrap();
        assert_eq!(remove(&with), empty);
        // Ours first (someone reordered): still removed cleanly.
        let first = format!("{{\"plugins\":[{e}, {{\"type\":\"bridge\"}}]}}");
        assert_eq!(remove(&first), "{\"plugins\":[{\"type\":\"bridge\"}]}");
    }

    #[test]
    fn conf_becomes_conflist() {
        let conf = "{\"cniVersion\":\"0.3.1\",\"name\":\"cbr0\",\"type\":\"flannel\",\"delegate\":{\"isDefaultGateway\":true}}";
        let list = conf_to_conflist(conf, r#"{"type":"mesh-cni"}"#).unwrap();
        let v: serde_json::Value = serde_json::from_str(&list).unwrap();
        assert_eq!(v["plugins"][0]["type"], "flannel");
        assert_eq!(v["plugins"][1]["type"], "mesh-cni");
        assert!(list.contains(conf));
    }
}
