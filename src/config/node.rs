//! A YAML document as a tree of nodes that remember where they were written, so validation can
//! report every problem at once with its line and column (serde would stop at the first).

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

/// Line and column (1-based) of a node in its file; 0 when unknown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    List(Vec<Node>),
    /// Keys in the order written, each with its own position.
    Map(Vec<(String, Pos, Node)>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub pos: Pos,
    pub value: Value,
}

impl Node {
    /// What the node is, in the words an error message uses.
    pub fn kind(&self) -> &'static str {
        match self.value {
            Value::Null => "nothing",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "a whole number",
            Value::Float(_) => "a number",
            Value::Str(_) => "text",
            Value::List(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|(k, _, _)| k == key).map(|(_, _, n)| n),
            _ => None,
        }
    }
}

fn pos_of<T>(s: &Spanned<T>) -> Pos {
    Pos {
        line: s.referenced.line() as usize,
        column: s.referenced.column() as usize,
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(i64::try_from(v).map_or(Value::Float(v as f64), Value::Int))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<NodeValue>>()? {
            items.push(Node {
                pos: pos_of(&item),
                value: item.value.0,
            });
        }
        Ok(Value::List(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<KeyText>>()? {
            let value = map.next_value::<Spanned<NodeValue>>()?;
            entries.push((
                key.value.0.clone(),
                pos_of(&key),
                Node {
                    pos: pos_of(&value),
                    value: value.value.0,
                },
            ));
        }
        Ok(Value::Map(entries))
    }
}

/// A node's value; the position comes from the `Spanned` around it.
struct NodeValue(Value);

impl<'de> Deserialize<'de> for NodeValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor).map(NodeValue)
    }
}

/// Mapping keys as text whatever scalar they were written as (`1: x` has key "1").
struct KeyText(String);

impl<'de> Deserialize<'de> for KeyText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = d.deserialize_any(ValueVisitor)?;
        Ok(KeyText(match v {
            Value::Str(s) => s,
            Value::Int(i) => i.to_string(),
            Value::Float(f) => f.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Null => "null".to_string(),
            Value::List(_) | Value::Map(_) => "<complex key>".to_string(),
        }))
    }
}

/// A YAML syntax error, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub pos: Pos,
    pub message: String,
}

/// Events aliases may replay in one document. The library's default (1,000,000) lets a
/// 400-byte file of nested anchors ("billion laughs") build a million-node tree, which took
/// seconds (13 s under the fuzzer's sanitizers). A real configuration replays a few dozen
/// events per `<<: *defaults` merge, so this still leaves room for thousands of meters.
const MAX_REPLAYED_ALIAS_EVENTS: usize = 50_000;

/// Parses a YAML document into a node tree.
pub fn parse(text: &str) -> Result<Node, SyntaxError> {
    let options = serde_saphyr::options! {
        alias_limits: serde_saphyr::alias_limits! {
            max_total_replayed_events: MAX_REPLAYED_ALIAS_EVENTS,
        },
    };
    match serde_saphyr::from_str_with_options::<Spanned<NodeValue>>(text, options) {
        Ok(s) => Ok(Node {
            pos: pos_of(&s),
            value: s.value.0,
        }),
        Err(e) => {
            let loc = e.location();
            Err(SyntaxError {
                pos: loc
                    .map(|l| Pos {
                        line: l.line() as usize,
                        column: l.column() as usize,
                    })
                    .unwrap_or_default(),
                message: e.to_string(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_of_keys_and_values() {
        let doc = "mqtt:\n  url: mqtt://localhost\n  qos: 1\nmeters:\n  - id: 12345678\n    name: water\n";
        let root = parse(doc).unwrap();
        let mqtt = root.get("mqtt").unwrap();
        let url = mqtt.get("url").unwrap();
        assert_eq!(url.value, Value::Str("mqtt://localhost".into()));
        assert_eq!(url.pos, Pos { line: 2, column: 8 });
        let Value::Map(entries) = &mqtt.value else {
            panic!()
        };
        assert_eq!(entries[1].0, "qos");
        assert_eq!(entries[1].1, Pos { line: 3, column: 3 });
        assert_eq!(entries[1].2.value, Value::Int(1));
        let Value::List(meters) = &root.get("meters").unwrap().value else {
            panic!()
        };
        assert_eq!(meters[0].pos.line, 5);
        assert_eq!(
            meters[0].get("name").unwrap().pos,
            Pos {
                line: 6,
                column: 11
            }
        );
    }

    /// Nested anchors, each list holding nine aliases of the one before: `depth` levels replay
    /// 9^depth scalars.
    fn nested_anchors(depth: u8) -> String {
        let mut doc = String::from("a: &a [x, x, x, x, x, x, x, x, x]\n");
        for level in 1..depth {
            let (prev, cur) = (char::from(b'a' + level - 1), char::from(b'a' + level));
            let items = vec![format!("*{prev}"); 9].join(", ");
            doc.push_str(&format!("{cur}: &{cur} [{items}]\n"));
        }
        doc
    }

    fn count_nodes(value: &Value) -> usize {
        match value {
            Value::List(items) => 1 + items.iter().map(|n| count_nodes(&n.value)).sum::<usize>(),
            Value::Map(entries) => {
                1 + entries
                    .iter()
                    .map(|(_, _, n)| count_nodes(&n.value))
                    .sum::<usize>()
            }
            _ => 1,
        }
    }

    #[test]
    fn aliases_expand_within_the_replay_limit() {
        // Three levels: `c` is 9 lists of 9 lists of 9 scalars (820 nodes), far more than a
        // real file's merges replay.
        let root = parse(&nested_anchors(3)).unwrap();
        let c = root.get("c").unwrap();
        assert_eq!(count_nodes(&c.value), 1 + 9 * (1 + 9 * (1 + 9)));
        let Value::List(outer) = &c.value else {
            panic!("c is a list")
        };
        let Value::List(middle) = &outer[0].value else {
            panic!("c's items are lists")
        };
        let Value::List(inner) = &middle[0].value else {
            panic!("b's items are lists")
        };
        assert_eq!(inner.len(), 9);
        assert!(inner.iter().all(|n| n.value == Value::Str("x".into())));
    }

    #[test]
    fn billion_laughs_is_refused_quickly() {
        // Found with a hand-made input replayed through the config_yaml fuzz target: 9^6
        // (531,441) scalars from 400 bytes, within the library's default replay limit.
        let doc = nested_anchors(6);
        assert!(doc.len() < 500);
        let started = std::time::Instant::now();
        let e = parse(&doc).unwrap_err();
        assert!(e.message.contains("alias"), "{e:?}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "took {:?}",
            started.elapsed()
        );
    }

    #[test]
    fn syntax_error_has_a_position() {
        let e = parse("a: [1, 2\nb: c\n").unwrap_err();
        assert!(e.pos.line >= 1, "{e:?}");
    }
}
