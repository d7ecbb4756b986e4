//! YAML files → JSON values plus positions.
//!
//! Each document is parsed by serde-saphyr into a small [`Node`] tree whose children are
//! `Spanned`, then converted to a `serde_json::Value` (what the JSON Schemas and the typed model
//! read) and a JSON-pointer → [`Location`] map (what every diagnostic uses to name a line).
//! Positions: a scalar points at the scalar itself; a mapping, sequence or null that is the value
//! of a key points at its key (the line a person looks for); a sequence item at the item.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use serde_saphyr::{DuplicateKeyPolicy, Options, Spanned};

use super::codes;
use super::diagnostics::{Diagnostic, Diagnostics, Location};
use super::model::Origin;

/// Alias replays allowed per file: generous for real configs, fatal for "billion laughs".
const MAX_ALIAS_REPLAYED_EVENTS: usize = 100_000;
/// Nodes allowed per file.
const MAX_NODES: usize = 200_000;

/// One non-empty YAML document: its JSON value and where each part of it was written.
#[derive(Debug, Clone)]
pub struct Document {
    /// The document as JSON.
    pub value: Value,
    /// Where each part of it was written.
    pub origin: Origin,
}

impl Document {
    /// Position of the value at `pointer` (or its nearest located ancestor).
    pub fn locate(&self, pointer: &str) -> Location {
        self.origin.locate(pointer)
    }
}

/// Escape one JSON-pointer reference token (RFC 6901).
pub fn escape_token(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// Parse every document of one file. `Origin::document` counts the non-empty documents only
/// (the parser drops empty ones before we see them). Errors become diagnostics; a file with a YAML error
/// yields no documents (the parser cannot resynchronise reliably inside a broken stream).
pub fn parse_file(path: &str, bytes: &[u8], diags: &mut Diagnostics) -> Vec<Document> {
    let file: Arc<str> = Arc::from(path);
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let (line, column) = line_col_of_byte(bytes, e.valid_up_to());
            diags.push(codes::NOT_UTF8.at(
                Location { file, line, column },
                format!(
                    "the file is not UTF-8 (invalid byte at offset {}); save it as UTF-8",
                    e.valid_up_to()
                ),
            ));
            return Vec::new();
        }
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let nodes: Vec<Spanned<Node>> =
        match serde_saphyr::from_str_multiple_with_options(text, options()) {
            Ok(n) => n,
            Err(e) => {
                diags.push(yaml_error(&file, &e));
                return Vec::new();
            }
        };
    let mut out = Vec::with_capacity(nodes.len());
    for (index, node) in nodes.into_iter().enumerate() {
        if matches!(node.value, Node::Null) {
            continue;
        }
        let mut positions = BTreeMap::new();
        let root_loc = location(&file, &node, None);
        let value = to_json(&file, node, String::new(), root_loc, &mut positions);
        out.push(Document {
            value,
            origin: Origin {
                file: file.clone(),
                document: index,
                positions: Arc::new(positions),
            },
        });
    }
    out
}

fn options() -> Options {
    let mut opts = Options::default();
    opts.duplicate_keys = DuplicateKeyPolicy::Error;
    opts.with_snippet = false;
    // YAML 1.2 booleans only: `name: y` or `country: no` stay strings (the "Norway problem").
    opts.strict_booleans = true;
    opts.alias_limits.max_total_replayed_events = MAX_ALIAS_REPLAYED_EVENTS;
    let mut budget = serde_saphyr::Budget::default();
    budget.max_nodes = MAX_NODES;
    opts.budget = Some(budget);
    opts
}

fn yaml_error(file: &Arc<str>, e: &serde_saphyr::Error) -> Diagnostic {
    let loc = e.location();
    let location = Location {
        file: file.clone(),
        line: loc.map_or(1, |l| clamp(l.line())),
        column: loc.map_or(1, |l| clamp(l.column())),
    };
    let inner = e.without_snippet();
    let msg = first_line(&inner.to_string());
    let over_limit = msg.contains("limit exceeded") || msg.contains("budget");
    match inner {
        _ if over_limit => codes::YAML_LIMIT.at(
            location,
            format!("{msg}; the file is too large or expands too many aliases, simplify it"),
        ),
        serde_saphyr::Error::DuplicateMappingKey { key, .. } => codes::DUPLICATE_KEY.at(
            location,
            match key {
                Some(k) => format!("key `{k}` appears twice in this mapping; keep one"),
                None => "a key appears twice in this mapping; keep one".to_string(),
            },
        ),
        serde_saphyr::Error::Budget { .. }
        | serde_saphyr::Error::AliasReplayLimitExceeded { .. }
        | serde_saphyr::Error::AliasExpansionLimitExceeded { .. }
        | serde_saphyr::Error::AliasReplayStackDepthExceeded { .. }
        | serde_saphyr::Error::AliasReplayCounterOverflow { .. } => codes::YAML_LIMIT.at(
            location,
            format!("{msg}; the file is too large or expands too many aliases, simplify it"),
        ),
        _ => codes::YAML_SYNTAX.at(location, format!("invalid YAML: {msg}")),
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").trim().to_string()
}

fn clamp(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX).max(1)
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col_of_byte(bytes: &[u8], offset: usize) -> (u32, u32) {
    let before = &bytes[..offset.min(bytes.len())];
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let start = before
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |i| i + 1);
    let col = String::from_utf8_lossy(&before[start..]).chars().count() + 1;
    (
        u32::try_from(line).unwrap_or(u32::MAX),
        u32::try_from(col).unwrap_or(u32::MAX),
    )
}

fn to_location(file: &Arc<str>, l: serde_saphyr::Location) -> Option<Location> {
    if l.line() == 0 {
        return None;
    }
    Some(Location {
        file: file.clone(),
        line: clamp(l.line()),
        column: clamp(l.column()),
    })
}

/// Where a node was written: the use site for an alias, else its definition.
fn location(file: &Arc<str>, node: &Spanned<Node>, key: Option<&Location>) -> Location {
    let own = to_location(file, node.referenced).or_else(|| to_location(file, node.defined));
    let scalar = !matches!(node.value, Node::Null | Node::Seq(_) | Node::Map(_));
    match (own, key) {
        (Some(own), _) if scalar => own,
        (_, Some(k)) => k.clone(),
        (Some(own), None) => own,
        (None, None) => Location {
            file: file.clone(),
            line: 1,
            column: 1,
        },
    }
}

fn to_json(
    file: &Arc<str>,
    node: Spanned<Node>,
    pointer: String,
    loc: Location,
    positions: &mut BTreeMap<String, Location>,
) -> Value {
    positions.insert(pointer.clone(), loc);
    match node.value {
        Node::Null => Value::Null,
        Node::Bool(b) => Value::Bool(b),
        Node::Int(i) => Value::from(i),
        Node::UInt(u) => Value::from(u),
        Node::Float(f) => serde_json::Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(f.to_string())),
        Node::Str(s) => Value::String(s),
        Node::Seq(items) => Value::Array(
            items
                .into_iter()
                .enumerate()
                .map(|(i, item)| {
                    let l = location(file, &item, None);
                    to_json(file, item, format!("{pointer}/{i}"), l, positions)
                })
                .collect(),
        ),
        Node::Map(entries) => {
            let mut map = serde_json::Map::with_capacity(entries.len());
            for (key, value) in entries {
                let key_loc =
                    to_location(file, key.referenced).or_else(|| to_location(file, key.defined));
                let l = location(file, &value, key_loc.as_ref());
                let child = format!("{pointer}/{}", escape_token(&key.value.0));
                let v = to_json(file, value, child, l, positions);
                map.insert(key.value.0, v);
            }
            Value::Object(map)
        }
    }
}

/// A YAML node with spanned children (the loader's private tree).
#[derive(Debug)]
enum Node {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<Node>>),
    Map(Vec<(Spanned<Key>, Spanned<Node>)>),
}

/// A mapping key: any scalar, as the string JSON needs.
#[derive(Debug)]
struct Key(String);

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        Node::deserialize(d)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        Ok(Node::UInt(v))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Node, E> {
        i64::try_from(v)
            .map(Node::Int)
            .map_err(|_| E::custom("integer out of range"))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Node, E> {
        u64::try_from(v)
            .map(Node::UInt)
            .map_err(|_| E::custom("integer out of range"))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Str(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Node, E> {
        Ok(Node::Str(v))
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Node, E> {
        Ok(Node::Str(String::from_utf8_lossy(v).into_owned()))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Node>>()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<Key>>()? {
            let value = map.next_value::<Spanned<Node>>()?;
            entries.push((key, value));
        }
        Ok(Node::Map(entries))
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a scalar mapping key")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Key, E> {
        Ok(Key("null".into()))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Key, E> {
        Ok(Key(v.to_string()))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Key, E> {
        Ok(Key(v.to_string()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Key, E> {
        Ok(Key(v.to_string()))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Key, E> {
        Ok(Key(v.to_string()))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Key, E> {
        Ok(Key(v.to_string()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Key, E> {
        Ok(Key(v.to_string()))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
        Ok(Key(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Key, E> {
        Ok(Key(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _seq: A) -> Result<Key, A::Error> {
        Err(de::Error::custom(
            "a sequence cannot be a mapping key; use a string key",
        ))
    }
    fn visit_map<A: MapAccess<'de>>(self, _map: A) -> Result<Key, A::Error> {
        Err(de::Error::custom(
            "a mapping cannot be a mapping key; use a string key",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> (Vec<Document>, Diagnostics) {
        let mut d = Diagnostics::default();
        let docs = parse_file("f.yaml", text.as_bytes(), &mut d);
        (docs, d)
    }

    #[test]
    fn pointers_locate_values() {
        let (docs, d) = parse(
            "apiVersion: gitamp.dev/v1\nkind: Configuration\nspec:\n  destinations:\n    - a\n    - b\n    - name: c\n      type: otlp\n  key/with~: 3\n",
        );
        assert!(d.is_empty(), "{d}");
        assert_eq!(docs.len(), 1);
        let doc = &docs[0];
        assert_eq!(doc.value["spec"]["destinations"][1], "b");
        assert_eq!(doc.locate("/kind").line, 2);
        assert_eq!(doc.locate("/kind").column, 7);
        assert_eq!(doc.locate("/spec").line, 3);
        assert_eq!(doc.locate("/spec/destinations").line, 4);
        assert_eq!(doc.locate("/spec/destinations/1").line, 6);
        assert_eq!(doc.locate("/spec/destinations/2").line, 7);
        assert_eq!(doc.locate("/spec/destinations/2/type").line, 8);
        assert_eq!(doc.locate("/spec/destinations/2/missing").line, 7);
        assert_eq!(doc.locate("/spec/key~1with~0").line, 9);
    }

    #[test]
    fn multiple_documents_and_empty_ones() {
        let (docs, d) = parse("---\na: 1\n---\n---\n# only a comment\n---\nb: [1, 2]\n");
        assert!(d.is_empty(), "{d}");
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1].value["b"][1], 2);
        assert_eq!(docs[1].locate("/b/1").line, 7);
    }

    #[test]
    fn duplicate_keys_rejected() {
        let (docs, d) = parse("a: 1\nb: 2\na: 3\n");
        assert!(docs.is_empty());
        assert_eq!(d.0[0].code, "E002", "{d}");
        assert_eq!(d.0[0].location.line, 3);
    }

    #[test]
    fn syntax_error_located() {
        let (_, d) = parse("a: 1\nb: [1, 2\nc: 3\n");
        assert_eq!(d.0[0].code, "E001", "{d}");
        assert!(d.0[0].location.line >= 2, "{d}");
    }

    #[test]
    fn alias_bomb_bounded() {
        let mut s = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 0..8 {
            let prev = if i == 0 {
                "a".to_string()
            } else {
                format!("l{}", i - 1)
            };
            s.push_str(&format!(
                "l{i}: &l{i} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"
            ));
        }
        let (docs, d) = parse(&s);
        assert!(docs.is_empty());
        assert_eq!(d.0[0].code, "E003", "{d}");
    }

    #[test]
    fn aliases_point_at_use_site() {
        let (docs, d) = parse("a: &x\n  k: v\nb: *x\n");
        assert!(d.is_empty(), "{d}");
        assert_eq!(docs[0].value["b"]["k"], "v");
        assert_eq!(docs[0].locate("/b").line, 3);
    }

    #[test]
    fn not_utf8() {
        let mut d = Diagnostics::default();
        let docs = parse_file("f.yaml", b"a: 1\nb: \xff\n", &mut d);
        assert!(docs.is_empty());
        assert_eq!(d.0[0].code, "E004");
        assert_eq!((d.0[0].location.line, d.0[0].location.column), (2, 4));
    }

    #[test]
    fn scalar_types() {
        let (docs, d) = parse("i: 3\nf: 1.5\nb: true\nn: ~\ns: '3'\n1: one\ny: y\nno: off\n");
        assert!(d.is_empty(), "{d}");
        let v = &docs[0].value;
        assert_eq!(v["i"], 3);
        assert_eq!(v["f"], 1.5);
        assert_eq!(v["b"], true);
        assert!(v["n"].is_null());
        assert_eq!(v["s"], "3");
        assert_eq!(v["1"], "one");
        assert_eq!(v["y"], "y");
        assert_eq!(v["no"], "off");
    }
}
