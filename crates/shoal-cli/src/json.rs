//! Just enough JSON to print machine-readable answers: a value tree and its compact text.
//! (Output only; the workspace has no JSON crate and the CLI never reads JSON.)

use std::fmt::{self, Write};

/// A JSON value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Json {
    Null,
    Bool(bool),
    Number(u64),
    /// A fraction, written with three decimals (`null` if not finite).
    Float(f64),
    String(String),
    Array(Vec<Json>),
    /// Fields in the order given.
    Object(Vec<(&'static str, Json)>),
}

impl Json {
    /// An object from `(name, value)` pairs.
    pub(crate) fn object<const N: usize>(fields: [(&'static str, Json); N]) -> Json {
        Json::Object(fields.into())
    }

    pub(crate) fn string(s: impl Into<String>) -> Json {
        Json::String(s.into())
    }
}

impl fmt::Display for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Json::Null => f.write_str("null"),
            Json::Bool(b) => write!(f, "{b}"),
            Json::Number(n) => write!(f, "{n}"),
            Json::Float(x) if x.is_finite() => write!(f, "{x:.3}"),
            Json::Float(_) => f.write_str("null"),
            Json::String(s) => write_string(f, s),
            Json::Array(items) => {
                f.write_char('[')?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_char(',')?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_char(']')
            }
            Json::Object(fields) => {
                f.write_char('{')?;
                for (i, (name, value)) in fields.iter().enumerate() {
                    if i > 0 {
                        f.write_char(',')?;
                    }
                    write_string(f, name)?;
                    write!(f, ":{value}")?;
                }
                f.write_char('}')
            }
        }
    }
}

fn write_string(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    f.write_char('"')?;
    for c in s.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\r' => f.write_str("\\r")?,
            '\t' => f.write_str("\\t")?,
            c if (c as u32) < 0x20 || c == '\u{2028}' || c == '\u{2029}' => {
                write!(f, "\\u{:04x}", c as u32)?
            }
            c => f.write_char(c)?,
        }
    }
    f.write_char('"')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped() {
        let v = Json::string("a\"b\\c\nd\u{1}é");
        assert_eq!(v.to_string(), r#""a\"b\\c\nd\u0001é""#);
    }

    #[test]
    fn nested_values_print_compactly() {
        let v = Json::object([
            ("found", Json::Bool(true)),
            (
                "values",
                Json::Array(vec![
                    Json::string("x"),
                    Json::object([("base64", Json::string("AA"))]),
                ]),
            ),
            ("n", Json::Number(3)),
            ("none", Json::Null),
        ]);
        assert_eq!(
            v.to_string(),
            r#"{"found":true,"values":["x",{"base64":"AA"}],"n":3,"none":null}"#
        );
    }
}
