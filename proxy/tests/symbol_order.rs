//! `symbol-order.txt` is handed to the linker as is (proxy/build.rs): lld
//! ignores a name it does not find, so a damaged file would only show as a
//! larger idle RSS in the bench. Check here that it is what the generator
//! writes: one mangled symbol per line, each once, the start-up group first.

use std::collections::HashSet;

#[test]
fn the_symbol_order_file_lists_each_function_once() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/symbol-order.txt");
    let text = std::fs::read_to_string(path).expect("proxy/symbol-order.txt");
    let mut seen = HashSet::new();
    let mut names = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.starts_with('#') {
            continue;
        }
        let ok = !line.is_empty()
            && !line.contains(char::is_whitespace)
            && line
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.$".contains(c));
        assert!(ok, "line {}: {line:?} is not a symbol name", i + 1);
        // A section name's prefix (`.text.unlikely.<symbol>`) is not part of
        // the symbol: lld would skip the name and leave that function where
        // it was, one more 64 KB block of text resident.
        let section_prefix = ["unlikely.", "hot.", "startup.", "exit.", "split."]
            .iter()
            .find(|p| line.starts_with(*p));
        assert!(
            section_prefix.is_none(),
            "line {}: {line} carries the section prefix {section_prefix:?}",
            i + 1
        );
        assert!(seen.insert(line), "line {}: {line} listed twice", i + 1);
        names.push(line);
    }
    assert!(names.len() > 1000, "only {} symbols", names.len());
    // The groups' header says what each holds; the sidecar's own code and its
    // runtime must be among the first (start-up) functions.
    assert!(
        text.contains("#   start-up and health probe:"),
        "{path}: no group header"
    );
    let startup = &names[..1000];
    assert!(
        startup.iter().any(|n| n.contains("10mesh_proxy")),
        "no mesh_proxy function first"
    );
    assert!(
        startup.iter().any(|n| n.contains("5tokio")),
        "no tokio function first"
    );
}
