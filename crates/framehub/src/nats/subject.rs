//! NATS subjects: the sink's template (`framehub.<listener>.<node>`), node
//! and listener names escaped into one subject token each, and the
//! subjects a created stream covers.
//!
//! A name becomes one token: ASCII letters, digits, `-` and `_` stay as
//! they are, every other byte is written `%XX` (upper-case hex), so
//! `radar7` stays `radar7` and `a.b` becomes `a%2Eb`. Two names never give
//! the same token, and a token never holds `.`, `*`, `>` or a space.

use std::fmt::Write as _;

/// One name as one subject token.
pub fn token(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    if out.is_empty() {
        // An empty name still needs a token: `%` alone is no escape.
        out.push('%');
    }
    out
}

/// The name a token stands for (the inverse of [`token`]); `None` when
/// the token is not one [`token`] writes.
pub fn name(token: &str) -> Option<String> {
    if token == "%" {
        return Some(String::new());
    }
    let bytes = token.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = token.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Checks a literal subject token of the configuration.
pub fn check_token(t: &str) -> Result<(), String> {
    if t.is_empty() || t.contains(['.', '*', '>']) || t.chars().any(char::is_whitespace) {
        return Err(format!(
            "{t:?}: one subject token, without '.', '*', '>' or spaces"
        ));
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Listener,
    Node,
}

/// A parsed subject template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    /// Parses `a.<listener>.b.<node>`: dot-separated tokens, each a literal
    /// or one of the two placeholders, `<node>` at most once.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        for t in text.split('.') {
            parts.push(match t {
                "<listener>" => Part::Listener,
                "<node>" => Part::Node,
                _ if t.contains(['<', '>']) => {
                    return Err(format!("{t:?}: the placeholders are <listener> and <node>"));
                }
                _ => {
                    check_token(t)?;
                    Part::Literal(t.to_owned())
                }
            });
        }
        if parts.iter().filter(|p| **p == Part::Node).count() > 1 {
            return Err("<node> may appear once".to_owned());
        }
        if parts.iter().all(|p| *p == Part::Node) {
            return Err(
                "needs a token besides <node> (a frame without a node would have no subject)"
                    .to_owned(),
            );
        }
        Ok(Template { parts })
    }

    /// The subject of a frame of `listener` from `node` (its token left out
    /// when there is none). `listener` and `node` are tokens already
    /// ([`token`]).
    pub fn render(&self, listener: &str, node: Option<&str>, out: &mut String) {
        out.clear();
        for p in &self.parts {
            let t = match p {
                Part::Literal(l) => l.as_str(),
                Part::Listener => listener,
                Part::Node => match node {
                    Some(n) => n,
                    None => continue,
                },
            };
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(t);
        }
    }

    /// What a stream must cover for the frames of these listeners: per
    /// listener, the subject with `*` for the node and the one without it.
    pub fn stream_subjects<'a>(&self, listeners: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let mut s = String::new();
        for l in listeners {
            let l = token(l);
            for node in [Some("*"), None] {
                self.render(&l, node, &mut s);
                if !out.contains(&s) {
                    out.push(s.clone());
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_escape_and_come_back() {
        for n in ["radar7", "a.b", "x y*>", "", "%41", "é", "A-_z"] {
            let t = token(n);
            assert!(check_token(&t).is_ok(), "{t}");
            assert_eq!(name(&t).as_deref(), Some(n));
        }
        assert_eq!(token("radar7"), "radar7");
        assert_eq!(token("a.b"), "a%2Eb");
        assert_ne!(token("a.b"), token("a%2Eb"));
        assert_eq!(name("%4"), None);
    }

    #[test]
    fn template_renders_with_and_without_a_node() {
        let t = Template::parse(crate::nats::config::DEFAULT_SUBJECT).expect("default");
        let mut s = String::new();
        t.render("default", Some("radar7"), &mut s);
        assert_eq!(s, "framehub.default.radar7");
        t.render("raw", None, &mut s);
        assert_eq!(s, "framehub.raw");
        assert_eq!(
            t.stream_subjects(["default", "raw"]),
            [
                "framehub.default.*",
                "framehub.default",
                "framehub.raw.*",
                "framehub.raw"
            ]
        );
        let t = Template::parse("<node>.telemetry").expect("node first");
        t.render("l", None, &mut s);
        assert_eq!(s, "telemetry");
        for bad in ["a..b", "a.<nod>", "<node>", "a.<node>.<node>", "a.*", "a b"] {
            assert!(Template::parse(bad).is_err(), "{bad}");
        }
    }
}
