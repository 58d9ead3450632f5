//! The parsed TOML document as a tree that remembers where every value was
//! written, and a reader that takes typed values out of it key by key.
//!
//! Why not `#[derive(Deserialize)]` with `deny_unknown_fields` on the schema
//! structs directly: serde stops at the first error, and an operator fixing a
//! config file wants every mistake at once. So serde (through `toml`) builds
//! this spanned tree, and the schema is read from it one key at a time;
//! every table still denies unknown keys, and every failure is collected
//! with its key, value, reason and line:column.

use std::cell::RefCell;
use std::fmt;
use std::ops::Range;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use toml::Spanned;

use crate::error::ConfigError;

/// The key toml uses to smuggle a datetime through serde's data model.
const TOML_DATETIME_KEY: &str = "$__toml_private_datetime";

/// One TOML value with the byte range it was written at.
pub(crate) type Item = Spanned<Node>;

/// A TOML value. Tables keep the document's key order so errors come out in
/// the order an operator reads the file.
#[derive(Debug, Clone)]
pub(crate) enum Node {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Datetime(String),
    Array(Vec<Item>),
    Table(Vec<(String, Item)>),
}

impl Node {
    /// How the value is shown in an error message.
    pub(crate) fn shown(&self) -> String {
        match self {
            Node::Str(s) => format!("{s:?}"),
            Node::Int(i) => i.to_string(),
            Node::Float(f) => f.to_string(),
            Node::Bool(b) => b.to_string(),
            Node::Datetime(d) => d.clone(),
            Node::Array(_) => "an array".to_owned(),
            Node::Table(_) => "a table".to_owned(),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Node::Str(_) => "a string",
            Node::Int(_) => "an integer",
            Node::Float(_) => "a float",
            Node::Bool(_) => "a boolean",
            Node::Datetime(_) => "a date",
            Node::Array(_) => "an array",
            Node::Table(_) => "a table",
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a TOML value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Int(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        i64::try_from(v)
            .map(Node::Int)
            .map_err(|_| E::custom("integer out of range"))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Str(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Node, E> {
        Ok(Node::Str(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Item>()? {
            items.push(item);
        }
        Ok(Node::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            if key == TOML_DATETIME_KEY {
                let text: String = map.next_value()?;
                return Ok(Node::Datetime(text));
            }
            let value = map.next_value::<Item>()?;
            entries.push((key, value));
        }
        Ok(Node::Table(entries))
    }
}

/// Collects every error found while reading one document.
pub(crate) struct Diagnostics<'s> {
    source: &'s str,
    errors: RefCell<Vec<ConfigError>>,
}

impl<'s> Diagnostics<'s> {
    pub(crate) fn new(source: &'s str) -> Self {
        Diagnostics {
            source,
            errors: RefCell::new(Vec::new()),
        }
    }

    /// Records an error about `key`, pointing at `span` in the document.
    pub(crate) fn report(
        &self,
        key: &str,
        value: Option<String>,
        span: Option<Range<usize>>,
        reason: impl Into<String>,
    ) {
        let location = span.map(|s| line_column(self.source, s.start));
        self.errors.borrow_mut().push(ConfigError {
            key: key.to_owned(),
            value,
            reason: reason.into(),
            location,
        });
    }

    /// Records an error about the value `item` found at `key`.
    pub(crate) fn report_item(&self, key: &str, item: &Item, reason: impl Into<String>) {
        self.report(key, Some(item.get_ref().shown()), Some(item.span()), reason);
    }

    pub(crate) fn into_errors(self) -> Vec<ConfigError> {
        self.errors.into_inner()
    }
}

/// 1-based line and column (in characters) of byte `offset` in `source`.
pub(crate) fn line_column(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let before = source.get(..offset).unwrap_or(source);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, column)
}

/// A value that can be read from one TOML scalar.
pub(crate) trait FromScalar: Sized {
    /// What an operator should have written, for the error message.
    const EXPECTED: &'static str;

    /// Reads the value, or says in one phrase why it cannot.
    fn from_scalar(node: &Node) -> Result<Self, String>;
}

/// Reads a string-typed setting through `FromStr`, with the parse error as
/// the reason.
pub(crate) fn parse_str<T>(node: &Node) -> Result<T, String>
where
    T: std::str::FromStr<Err = String>,
{
    match node {
        Node::Str(s) => s.parse(),
        other => Err(format!("expected a string, found {}", other.kind())),
    }
}

impl FromScalar for String {
    const EXPECTED: &'static str = "a string";
    fn from_scalar(node: &Node) -> Result<Self, String> {
        match node {
            Node::Str(s) => Ok(s.clone()),
            other => Err(format!("expected a string, found {}", other.kind())),
        }
    }
}

impl FromScalar for bool {
    const EXPECTED: &'static str = "true or false";
    fn from_scalar(node: &Node) -> Result<Self, String> {
        match node {
            Node::Bool(b) => Ok(*b),
            other => Err(format!("expected true or false, found {}", other.kind())),
        }
    }
}

impl FromScalar for u32 {
    const EXPECTED: &'static str = "a non-negative integer";
    fn from_scalar(node: &Node) -> Result<Self, String> {
        match node {
            Node::Int(i) => {
                u32::try_from(*i).map_err(|_| format!("must be between 0 and {}", u32::MAX))
            }
            other => Err(format!("expected an integer, found {}", other.kind())),
        }
    }
}

/// Reads one TOML table, key by key. Keys that nobody asked for are
/// reported as unknown when the reader is finished.
pub(crate) struct TableReader<'d, 's> {
    path: String,
    entries: Vec<(String, Item)>,
    diagnostics: &'d Diagnostics<'s>,
}

impl<'d, 's> TableReader<'d, 's> {
    /// A reader for the table at `path` (`""` for the document root).
    /// A value that is not a table is reported and read as empty.
    pub(crate) fn new(path: &str, item: Option<Item>, diagnostics: &'d Diagnostics<'s>) -> Self {
        let entries = match item {
            None => Vec::new(),
            Some(item) => {
                let span = item.span();
                match item.into_inner() {
                    Node::Table(entries) => entries,
                    other => {
                        diagnostics.report(
                            path,
                            Some(other.shown()),
                            Some(span),
                            format!("expected a table, found {}", other.kind()),
                        );
                        Vec::new()
                    }
                }
            }
        };
        TableReader {
            path: path.to_owned(),
            entries,
            diagnostics,
        }
    }

    /// The dotted key of `key` inside this table.
    pub(crate) fn key(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    pub(crate) fn diagnostics(&self) -> &'d Diagnostics<'s> {
        self.diagnostics
    }

    /// Where `key`'s value is written, if it is present.
    pub(crate) fn span(&self, key: &str) -> Option<Range<usize>> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, item)| item.span())
    }

    /// Removes and returns the raw item at `key`.
    pub(crate) fn take(&mut self, key: &str) -> Option<Item> {
        let index = self.entries.iter().position(|(k, _)| k == key)?;
        Some(self.entries.remove(index).1)
    }

    /// Reads `key` as a `T`; reports and returns `None` when it is present but
    /// wrong, returns `None` when absent.
    pub(crate) fn get<T: FromScalar>(&mut self, key: &str) -> Option<T> {
        let item = self.take(key)?;
        self.convert(&self.key(key), &item)
    }

    /// Reads `key` with `parse` instead of a `FromScalar` impl.
    pub(crate) fn get_with<T>(
        &mut self,
        key: &str,
        parse: impl Fn(&Node) -> Result<T, String>,
    ) -> Option<T> {
        let item = self.take(key)?;
        match parse(item.get_ref()) {
            Ok(v) => Some(v),
            Err(reason) => {
                self.diagnostics.report_item(&self.key(key), &item, reason);
                None
            }
        }
    }

    /// Reads `key` as an array of `T`. Each bad element is reported on its
    /// own (`key[2]`); the good ones are kept.
    pub(crate) fn list<T: FromScalar>(&mut self, key: &str) -> Option<Vec<T>> {
        let (full, items) = self.take_array(key, &format!("an array of {}", T::EXPECTED))?;
        Some(
            items
                .iter()
                .enumerate()
                .filter_map(|(i, element)| self.convert(&format!("{full}[{i}]"), element))
                .collect(),
        )
    }

    /// Takes `key` as an array of tables (`[[trunk]]`), each with its
    /// dotted key (`trunk[0]`).
    pub(crate) fn tables(&mut self, key: &str) -> Vec<(String, Item)> {
        let expected = format!("an array of tables ([[{}]])", self.key(key));
        let Some((full, items)) = self.take_array(key, &expected) else {
            return Vec::new();
        };
        items
            .into_iter()
            .enumerate()
            .map(|(i, element)| (format!("{full}[{i}]"), element))
            .collect()
    }

    /// Takes `key` as an array; anything else is reported as not being
    /// `expected`.
    fn take_array(&mut self, key: &str, expected: &str) -> Option<(String, Vec<Item>)> {
        let item = self.take(key)?;
        let full = self.key(key);
        let span = item.span();
        match item.into_inner() {
            Node::Array(items) => Some((full, items)),
            other => {
                self.diagnostics.report(
                    &full,
                    Some(other.shown()),
                    Some(span),
                    format!("expected {expected}, found {}", other.kind()),
                );
                None
            }
        }
    }

    fn convert<T: FromScalar>(&self, key: &str, item: &Item) -> Option<T> {
        match T::from_scalar(item.get_ref()) {
            Ok(v) => Some(v),
            Err(reason) => {
                self.diagnostics.report_item(key, item, reason);
                None
            }
        }
    }

    /// Reports every key nobody read as unknown, naming the known ones.
    pub(crate) fn finish(self, known: &[&str]) {
        for (key, item) in &self.entries {
            self.diagnostics.report(
                &self.key(key),
                Some(item.get_ref().shown()),
                Some(item.span()),
                format!("unknown key; expected one of: {}", known.join(", ")),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_column_counts_from_one_in_characters() {
        let src = "a = 1\nbé = \"x\"\n";
        assert_eq!(line_column(src, 0), (1, 1));
        assert_eq!(line_column(src, 6), (2, 1));
        // "bé = " is 6 bytes but 5 characters.
        assert_eq!(line_column(src, 12), (2, 6));
        assert_eq!(line_column(src, 10_000).0, 3);
    }

    #[test]
    fn tree_keeps_spans_of_nested_values() {
        let src = "[media]\nports = \"1-2\"\nlist = [1, \"x\"]\n";
        let root: Item = toml::from_str(src).unwrap();
        let Node::Table(entries) = root.get_ref() else {
            panic!("root is a table")
        };
        let Node::Table(media) = entries[0].1.get_ref() else {
            panic!("media is a table")
        };
        assert_eq!(&src[media[0].1.span()], "\"1-2\"");
        let Node::Array(list) = media[1].1.get_ref() else {
            panic!("list is an array")
        };
        assert_eq!(&src[list[1].span()], "\"x\"");
    }
}
