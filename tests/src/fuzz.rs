//! Structure-aware inputs for the fuzz targets (`tests/fuzz_*.rs` of each crate,
//! see `tests/FUZZING.md`). A parser behind a JSON or YAML decoder rarely sees
//! anything but syntax errors when fed random bytes, so the targets turn the
//! fuzzer's bytes into documents and strings built from a vocabulary (field
//! names and enum values taken from the types' JSON schemas, tokens of an
//! annotation grammar) mixed with raw bytes and edge-case numbers. The mapping
//! is deterministic, so a crashing input reproduces from its bytes, and it works
//! with any engine (bolero's random engine in `cargo test`, libFuzzer by hand).

use serde_json::{Map, Number, Value};

/// Words a generated document is made of.
#[derive(Debug, Clone, Default)]
pub struct Vocab {
    /// Object keys (and also used as string values: names often refer to names).
    pub keys: Vec<String>,
    /// String values (enum values and domain words).
    pub strings: Vec<String>,
}

impl Vocab {
    /// Collects every property name and enum value of a JSON schema (as produced
    /// by `schemars::schema_for!`), plus `extra` strings.
    pub fn from_schema(schema: &Value, extra: &[&str]) -> Vocab {
        Vocab::collect(extra, |v| walk(schema, v))
    }

    /// Collects every key and string value of an example document (a default
    /// config serialized, a fixture), plus `extra` strings.
    pub fn from_example(doc: &Value, extra: &[&str]) -> Vocab {
        Vocab::collect(extra, |v| example(doc, v))
    }

    fn collect(extra: &[&str], fill: impl FnOnce(&mut Vocab)) -> Vocab {
        let mut v = Vocab {
            keys: Vec::new(),
            strings: extra.iter().map(|s| s.to_string()).collect(),
        };
        fill(&mut v);
        v.tidy();
        v
    }

    /// Adds another vocabulary's words.
    pub fn extend(&mut self, other: Vocab) {
        self.keys.extend(other.keys);
        self.strings.extend(other.strings);
        self.tidy();
    }

    /// Sorted and without repeats, so each word is as likely as another.
    fn tidy(&mut self) {
        self.keys.sort();
        self.keys.dedup();
        self.strings.sort();
        self.strings.dedup();
    }
}

fn example(d: &Value, v: &mut Vocab) {
    match d {
        Value::Object(m) => {
            v.keys.extend(m.keys().cloned());
            m.values().for_each(|x| example(x, v));
        }
        Value::Array(a) => a.iter().for_each(|x| example(x, v)),
        Value::String(s) => v.strings.push(s.clone()),
        _ => {}
    }
}

fn walk(s: &Value, v: &mut Vocab) {
    match s {
        Value::Object(m) => {
            if let Some(Value::Object(props)) = m.get("properties") {
                v.keys.extend(props.keys().cloned());
            }
            if let Some(Value::Array(e)) = m.get("enum") {
                v.strings
                    .extend(e.iter().filter_map(Value::as_str).map(String::from));
            }
            if let Some(Value::String(c)) = m.get("const") {
                v.strings.push(c.clone());
            }
            m.values().for_each(|x| walk(x, v));
        }
        Value::Array(a) => a.iter().for_each(|x| walk(x, v)),
        _ => {}
    }
}

/// Reads the fuzzer's bytes front to back; past the end every read is 0, so
/// generation always terminates with small values.
pub struct Bytes<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Bytes<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Bytes { data, pos: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.data.len()
    }

    pub fn byte(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    /// Picks one of `items` (which must not be empty).
    pub fn pick<'b, T>(&mut self, items: &'b [T]) -> &'b T {
        let i = (usize::from(self.byte()) << 8) | usize::from(self.byte());
        &items[i % items.len()]
    }

    /// Up to `max` raw bytes as a (lossy) string.
    pub fn raw(&mut self, max: usize) -> String {
        let n = usize::from(self.byte()) % (max + 1);
        let end = (self.pos + n).min(self.data.len());
        let s = String::from_utf8_lossy(&self.data[self.pos.min(end)..end]).into_owned();
        self.pos += n;
        s
    }
}

/// Numbers at the edges of the types specs use (ports, u32 counts, durations).
const NUMBERS: [&str; 16] = [
    "0",
    "1",
    "-1",
    "80",
    "65535",
    "65536",
    "2147483647",
    "4294967295",
    "4294967296",
    "18446744073709551615",
    "-9223372036854775808",
    "0.5",
    "1e300",
    "-0.0",
    "100000000000000000000",
    "3",
];

/// A JSON value: objects use `vocab.keys` (and now and then a raw key), strings
/// come from the vocabulary, raw bytes or edge-case numbers as text.
pub fn json(b: &mut Bytes, vocab: &Vocab, depth: u8) -> Value {
    let leaf_only = depth == 0 || b.is_empty();
    match b.byte() % if leaf_only { 6 } else { 9 } {
        0 => Value::Null,
        1 => Value::Bool(b.byte() & 1 == 1),
        2 => number(b),
        3 if !vocab.strings.is_empty() => Value::String(b.pick(&vocab.strings).clone()),
        4 => Value::String(b.pick(&NUMBERS).to_string()),
        3..=5 => Value::String(b.raw(12)),
        6 => Value::Array(
            (0..b.byte() % 4)
                .map(|_| json(b, vocab, depth - 1))
                .collect(),
        ),
        _ => object(b, vocab, depth - 1),
    }
}

/// A JSON object with up to 7 fields, keys mostly from the vocabulary.
pub fn object(b: &mut Bytes, vocab: &Vocab, depth: u8) -> Value {
    let mut m = Map::new();
    for _ in 0..b.byte() % 8 {
        let k = if vocab.keys.is_empty() || b.byte().is_multiple_of(8) {
            b.raw(8)
        } else {
            b.pick(&vocab.keys).clone()
        };
        m.insert(k, json(b, vocab, depth));
    }
    Value::Object(m)
}

fn number(b: &mut Bytes) -> Value {
    match serde_json::from_str::<Value>(b.pick::<&str>(&NUMBERS)) {
        Ok(v @ Value::Number(_)) => v,
        _ => Value::Number(Number::from(b.byte())),
    }
}

/// A string made of `tokens` (chosen by the bytes) and, now and then, raw bytes:
/// grammar-shaped input for the annotation parsers.
pub fn text(b: &mut Bytes, tokens: &[&str]) -> String {
    let mut s = String::new();
    while !b.is_empty() {
        if b.byte().is_multiple_of(8) {
            s.push_str(&b.raw(4));
        } else {
            s.push_str(b.pick::<&str>(tokens));
        }
    }
    s
}

/// Mutates a valid document a few times: replaces a node (chosen by walking
/// down from the root) with a generated value, inserts a field, or removes one.
/// Starting from a real fixture keeps most of the document meaningful, so the
/// decoder gets past its first checks.
pub fn mutate(b: &mut Bytes, doc: &mut Value, vocab: &Vocab) {
    for _ in 0..1 + b.byte() % 4 {
        mutate_node(b, doc, vocab);
    }
}

/// Walks down while the bytes say so, then changes the node reached.
fn mutate_node(b: &mut Bytes, node: &mut Value, vocab: &Vocab) {
    if !b.byte().is_multiple_of(4) {
        match node {
            Value::Object(m) if !m.is_empty() => {
                let keys: Vec<String> = m.keys().cloned().collect();
                let k = b.pick(&keys).clone();
                return mutate_node(b, m.get_mut(&k).expect("key just listed"), vocab);
            }
            Value::Array(a) if !a.is_empty() => {
                let i = usize::from(b.byte()) % a.len();
                return mutate_node(b, &mut a[i], vocab);
            }
            _ => {}
        }
    }
    match (b.byte() % 3, node) {
        (0, Value::Object(m)) => {
            let k = if vocab.keys.is_empty() {
                b.raw(8)
            } else {
                b.pick(&vocab.keys).clone()
            };
            m.insert(k, json(b, vocab, 3));
        }
        (1, Value::Object(m)) if !m.is_empty() => {
            let keys: Vec<String> = m.keys().cloned().collect();
            let k = b.pick(&keys).clone();
            m.remove(&k);
        }
        (_, n) => *n = json(b, vocab, 3),
    }
}
