//! Differential tests of `framehub::json` against serde_json.
//!
//! - Validity: `validate(x)` accepts exactly what `serde_json::from_slice::<IgnoredAny>` accepts,
//!   restricted to valid UTF-8 (serde_json's `IgnoredAny` skips string bodies without checking
//!   their UTF-8; we reject invalid UTF-8 anywhere). `IgnoredAny` has no depth limit, so this is
//!   compared with `max_depth = usize::MAX`, and with 128 unless we report `TooDeep`.
//! - Envelope: whenever `serde_json::Value` parses the input as an object, `scan_envelope` finds
//!   the same value for each envelope key (last duplicate wins in both).
//! - Redaction: removing a key's members from any valid object leaves valid JSON equal to
//!   serde_json's object minus that key, made of the original bytes in order.
#![allow(clippy::unwrap_used)]

use framehub::json::{
    DEFAULT_MAX_DEPTH, EnvelopeKeys, JsonError, RawValue, remove_members, scan_envelope, validate,
};
use proptest::prelude::*;
use serde::de::IgnoredAny;
use serde_json::Value;

fn same_field(name: &str, ours: Option<RawValue<'_>>, theirs: Option<&Value>, x: &[u8]) {
    match (ours, theirs) {
        (None, None) => {}
        (Some(r), Some(Value::String(s))) => {
            assert!(r.is_string(), "{name}: {x:?}");
            assert_eq!(r.as_str().as_deref(), Some(s.as_str()), "{name}: {x:?}");
            assert!(r.str_eq(s), "{name}: {x:?}");
            if !s.is_empty() {
                assert!(!r.str_eq(&s[..s.len() - s.chars().last().unwrap().len_utf8()]));
            }
            assert!(!r.str_eq(&format!("{s}x")));
        }
        (Some(r), Some(v)) => {
            assert!(!r.is_string(), "{name}: {x:?}");
            assert_eq!(r.as_str(), None);
            let reparsed: Value = serde_json::from_slice(r.raw()).unwrap();
            assert_eq!(&reparsed, v, "{name}: {x:?}");
        }
        (o, t) => panic!("{name}: ours {o:?} theirs {t:?} in {x:?}"),
    }
}

fn check(x: &[u8]) {
    let utf8 = std::str::from_utf8(x).is_ok();
    let ignored_ok = serde_json::from_slice::<IgnoredAny>(x).is_ok() && utf8;

    let unlimited = validate(x, usize::MAX);
    assert_eq!(
        unlimited.is_ok(),
        ignored_ok,
        "validate={unlimited:?} serde={ignored_ok} input={:?}",
        String::from_utf8_lossy(x)
    );
    if !utf8 {
        assert_eq!(unlimited, Err(JsonError::InvalidUtf8));
    }
    match validate(x, DEFAULT_MAX_DEPTH) {
        Err(JsonError::TooDeep { max_depth }) => assert_eq!(max_depth, DEFAULT_MAX_DEPTH),
        r => assert_eq!(r, unlimited),
    }

    let ours = scan_envelope(x, &EnvelopeKeys::DEFAULT, DEFAULT_MAX_DEPTH);
    match serde_json::from_slice::<Value>(x) {
        Ok(Value::Object(map)) => {
            let env = ours.unwrap_or_else(|e| panic!("{e:?} for {x:?}"));
            same_field("node_id", env.node_id, map.get("node_id"), x);
            same_field("token", env.token, map.get("token"), x);
            same_field("type", env.msg_type, map.get("type"), x);
            same_field("timestamp", env.timestamp, map.get("timestamp"), x);
        }
        Ok(_) => assert_eq!(ours, Err(JsonError::NotAnObject)),
        Err(_) => {
            if ours.is_ok() {
                // Accepted by us: must be valid for IgnoredAny and rejected by `Value` only for
                // reasons `Value` adds (lone surrogates, numbers out of f64 range, depth 128).
                assert!(ignored_ok, "{x:?}");
                assert_eq!(x.iter().find(|b| !b.is_ascii_whitespace()), Some(&b'{'));
            }
        }
    }
    // The envelope scan and plain validation agree on validity.
    match ours {
        Ok(_) => assert!(validate(x, DEFAULT_MAX_DEPTH).is_ok()),
        Err(JsonError::NotAnObject) => assert!(validate(x, DEFAULT_MAX_DEPTH).is_ok()),
        Err(e) => assert_eq!(validate(x, DEFAULT_MAX_DEPTH), Err(e)),
    }
}

fn ws() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        6 => Just(""),
        1 => Just(" "),
        1 => Just("\n"),
        1 => Just("\t"),
        1 => Just(" \r\n "),
    ]
}

fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        "-?(0|[1-9][0-9]{0,17})(\\.[0-9]{1,6})?([eE][+-]?[0-9]{1,3})?",
        Just("1768932172478".to_owned()),
        Just("-27.99".to_owned()),
        Just("1e400".to_owned()),
    ]
}

fn string_piece() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => "[a-zA-Z0-9 _.:-]{1,12}",
        2 => any::<char>().prop_map(|c| c.to_string()),
        1 => "[\\u{80}-\\u{10FFFF}]{1,6}",
        1 => prop::sample::select(vec![
            "\\\"", "\\\\", "\\/", "\\b", "\\f", "\\n", "\\r", "\\t", "\\u00e9", "\\u0041",
            "\\u005F", "\\ud83d\\ude00", "\\uD834\\uDD1E", "\\ud800", "\\udfff", "\\ud800\\u0041",
        ])
        .prop_map(str::to_owned),
        1 => any::<u16>().prop_map(|u| format!("\\u{u:04x}")),
        1 => any::<u16>().prop_map(|u| format!("\\u{u:04X}")),
    ]
}

fn string() -> impl Strategy<Value = String> {
    prop::collection::vec(string_piece(), 0..5).prop_map(|p| format!("\"{}\"", p.concat()))
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "node_id", "token", "type", "timestamp", "node\\u005fid", "\\u0074oken",
            "\\u0074\\u0079\\u0070\\u0065", "delay", "x", "", "node_id ", "Node_id",
        ])
        .prop_map(|k| format!("\"{k}\"")),
        1 => string(),
    ]
}

fn json() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_owned()),
        Just("true".to_owned()),
        Just("false".to_owned()),
        number(),
        string(),
    ];
    leaf.prop_recursive(6, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec((ws(), inner.clone(), ws()), 0..6).prop_map(|items| {
                let body: Vec<String> = items
                    .into_iter()
                    .map(|(a, v, b)| format!("{a}{v}{b}"))
                    .collect();
                format!("[{}]", body.join(","))
            }),
            prop::collection::vec((ws(), key(), ws(), ws(), inner, ws()), 0..6).prop_map(
                |members| {
                    let body: Vec<String> = members
                        .into_iter()
                        .map(|(a, k, b, c, v, d)| format!("{a}{k}{b}:{c}{v}{d}"))
                        .collect();
                    format!("{{{}}}", body.join(","))
                }
            ),
        ]
    })
}

/// A top-level object, as frames are.
fn frame() -> impl Strategy<Value = String> {
    (ws(), prop::collection::vec((key(), json()), 0..8), ws()).prop_map(|(a, members, b)| {
        let body: Vec<String> = members
            .into_iter()
            .map(|(k, v)| format!("{k}:{v}"))
            .collect();
        format!("{a}{{{}}}{b}", body.join(","))
    })
}

/// A top-level object with whitespace around every part of its members.
fn spaced_frame() -> impl Strategy<Value = String> {
    (
        ws(),
        prop::collection::vec((ws(), key(), ws(), ws(), json(), ws()), 0..8),
        ws(),
    )
        .prop_map(|(a, members, b)| {
            let body: Vec<String> = members
                .into_iter()
                .map(|(a, k, b, c, v, d)| format!("{a}{k}{b}:{c}{v}{d}"))
                .collect();
            format!("{a}{{{}}}{b}", body.join(","))
        })
}

/// Removing `key` from `x` (when serde_json reads it as an object) gives
/// that object minus `key`, as a subsequence of the original bytes.
fn check_redaction(x: &str, key: &str) {
    let Ok(Value::Object(mut expected)) = serde_json::from_str::<Value>(x) else {
        return;
    };
    expected.remove(key);
    let mut frame = x.as_bytes().to_vec();
    let len = remove_members(&mut frame, &[key.as_bytes()], DEFAULT_MAX_DEPTH, &mut None)
        .unwrap_or_else(|e| panic!("{e}: {x:?}"));
    let out = &frame[..len];
    assert_eq!(
        validate(out, DEFAULT_MAX_DEPTH),
        Ok(()),
        "{x:?} -> {:?}",
        String::from_utf8_lossy(out)
    );
    let got: Value = serde_json::from_slice(out).unwrap();
    assert_eq!(got, Value::Object(expected), "{x:?}");
    let mut rest = x.as_bytes().iter();
    assert!(
        out.iter().all(|b| rest.any(|o| o == b)),
        "not the original bytes in order: {x:?} -> {:?}",
        String::from_utf8_lossy(out)
    );
}

const ALPHABET: &[u8] =
    b"{}[],:\"\\ \t\r\n0123456789.eE+-truefalsnxu/\x00\x01\x1f\x7f\x80\xbf\xc3\xa9\xe2\xed\xf0\xff";

#[derive(Debug, Clone)]
enum Edit {
    Insert(usize, u8),
    Delete(usize),
    Replace(usize, u8),
    Truncate(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    let b = prop::sample::select(ALPHABET.to_vec());
    prop_oneof![
        (any::<usize>(), b.clone()).prop_map(|(i, b)| Edit::Insert(i, b)),
        any::<usize>().prop_map(Edit::Delete),
        (any::<usize>(), b).prop_map(|(i, b)| Edit::Replace(i, b)),
        any::<usize>().prop_map(Edit::Truncate),
    ]
}

fn apply(mut v: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        let n = v.len();
        match *e {
            Edit::Insert(i, b) => v.insert(i % (n + 1), b),
            Edit::Delete(i) if n > 0 => {
                v.remove(i % n);
            }
            Edit::Replace(i, b) if n > 0 => v[i % n] = b,
            Edit::Truncate(i) => v.truncate(i % (n + 1)),
            _ => {}
        }
    }
    v
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn valid_values(v in json()) {
        check(v.as_bytes());
    }

    #[test]
    fn valid_frames(v in frame()) {
        check(v.as_bytes());
    }

    #[test]
    fn mutated_frames(v in frame(), edits in prop::collection::vec(edit(), 1..4)) {
        check(&apply(v.into_bytes(), &edits));
    }

    #[test]
    fn garbage(v in prop::collection::vec(prop::sample::select(ALPHABET.to_vec()), 0..40)) {
        check(&v);
    }

    #[test]
    fn redaction_removes_exactly_the_key(
        v in prop_oneof![frame(), spaced_frame()],
        key in prop::sample::select(vec!["token", "node_id", "x", "delay"]),
    ) {
        check_redaction(&v, key);
    }

    #[test]
    fn arbitrary_bytes(v in prop::collection::vec(any::<u8>(), 0..64)) {
        check(&v);
    }
}

#[test]
fn handpicked() {
    let cases: &[&[u8]] = &[
        br#"{"node_id":"radar3","token":"secret","timestamp":1768932172478,"delay":[40.46],"doppler":[-27.99],"snr":[12.08],"adsb":[null]}"#,
        br#"{"node_id":"radar3","token":"secret","type":"heartbeat"}"#,
        br#"{"node_id":"a","node_id":"b"}"#,
        br#"{"node\u005fid":"a","node_id":"b","node\u005Fid":{"x":[1,2]}}"#,
        br#"{"node_id":"\ud800"}"#,
        br#"{"node_id":"\ud83d\ude00\u00e9\n"}"#,
        br#"{"timestamp":1e400}"#,
        br#"{"timestamp":-0.0e-0}"#,
        b"\"\\u00\"",
        b"[01]",
        b"{\"a\":\"\xff\"}",
        b"{\"a\":\"\xed\xa0\x80\"}",
        b"\xef\xbb\xbf{}",
        b"",
        b" ",
        b"{} ",
        b"{}x",
        b"[1,2,]",
        b"[\"\x7f\"]",
        b"\"\t\"",
        b"-",
        b"1.",
        b"tru",
    ];
    for c in cases {
        check(c);
    }
    // Depth: 128 levels are fine, 129 are not (serde_json's IgnoredAny has no limit).
    for n in [127, 128, 129, 200] {
        let s = format!("{}{}", "[".repeat(n), "]".repeat(n));
        check(s.as_bytes());
        assert_eq!(validate(s.as_bytes(), 128).is_ok(), n <= 128);
    }
}
