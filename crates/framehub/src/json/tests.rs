//! Unit tests of the JSON scanner: strictness against RFC 8259, envelope fields, depth, and
//! agreement between its fast and general paths.

use super::*;

const RADAR: &[u8] = br#"{"node_id":"radar3","token":"secret","timestamp":1768932172478,"delay":[40.46],"doppler":[-27.99],"snr":[12.08],"adsb":[null]}"#;
const HEARTBEAT: &[u8] = br#"{"node_id":"radar3","token":"secret","type":"heartbeat"}"#;

fn env(input: &[u8]) -> Result<Envelope<'_>, JsonError> {
    scan_envelope(input, &EnvelopeKeys::DEFAULT, DEFAULT_MAX_DEPTH)
}

fn raw(v: Option<RawValue<'_>>) -> Option<&[u8]> {
    v.map(|v| v.raw())
}

fn ok(s: &str) -> bool {
    validate(s.as_bytes(), DEFAULT_MAX_DEPTH).is_ok()
}

fn syntax_at(s: &[u8]) -> Option<usize> {
    match validate(s, DEFAULT_MAX_DEPTH) {
        Err(JsonError::Syntax { offset }) => Some(offset),
        _ => None,
    }
}

#[test]
fn radar_frame() {
    let e = env(RADAR).unwrap();
    assert_eq!(raw(e.node_id), Some(&br#""radar3""#[..]));
    assert_eq!(raw(e.token), Some(&br#""secret""#[..]));
    assert_eq!(raw(e.timestamp), Some(&b"1768932172478"[..]));
    assert!(e.msg_type.is_none());
    let id = e.node_id.unwrap();
    assert!(id.is_string());
    assert!(id.str_eq("radar3"));
    assert!(!id.str_eq("radar"));
    assert_eq!(id.as_str(), Some(Cow::Borrowed("radar3")));
    assert!(matches!(id.as_str(), Some(Cow::Borrowed(_))));
    assert!(!e.timestamp.unwrap().is_string());
    assert_eq!(e.timestamp.unwrap().as_str(), None);
    assert!(!e.timestamp.unwrap().str_eq("1768932172478"));
    assert_eq!(validate(RADAR, DEFAULT_MAX_DEPTH), Ok(()));
}

#[test]
fn heartbeat_frame() {
    let e = env(HEARTBEAT).unwrap();
    assert!(e.msg_type.unwrap().str_eq("heartbeat"));
    assert!(e.node_id.unwrap().str_eq("radar3"));
    assert!(e.token.unwrap().str_eq("secret"));
    assert!(e.timestamp.is_none());
}

#[test]
fn configured_keys_of_every_length_match_exactly() {
    let keys = EnvelopeKeys {
        node_id: b"",
        token: b"tok",
        msg_type: b"12345678",
        timestamp: b"timestamp_ns",
        seq: None,
    };
    let frame = br#"{"to":1,"tok":2,"toke":3,"1234567":4,"12345679":5,"12345678":6,"timestamp_nt":7,"timestamp_ns":8,"timestamp_ns_":9,"":10}"#;
    let env = scan_envelope(frame, &keys, DEFAULT_MAX_DEPTH).unwrap();
    assert_eq!(raw(env.node_id), Some(&b"10"[..]));
    assert_eq!(raw(env.token), Some(&b"2"[..]));
    assert_eq!(raw(env.msg_type), Some(&b"6"[..]));
    assert_eq!(raw(env.timestamp), Some(&b"8"[..]));
    // The same key last in the frame, with fewer than 8 bytes after its start.
    let env = scan_envelope(br#"{"tok":1}"#, &keys, DEFAULT_MAX_DEPTH).unwrap();
    assert_eq!(raw(env.token), Some(&b"1"[..]));
    let env = scan_envelope(br#"{"to":1}"#, &keys, DEFAULT_MAX_DEPTH).unwrap();
    assert_eq!(env, Envelope::default());
}

#[test]
fn missing_fields_and_empty_object() {
    let e = env(br#"{"delay":[1,2],"snr":{"node_id":"nested"}}"#).unwrap();
    assert!(e.node_id.is_none() && e.token.is_none());
    assert!(e.msg_type.is_none() && e.timestamp.is_none());
    let e = env(b" {  } ").unwrap();
    assert!(e.node_id.is_none());
}

#[test]
fn non_string_values_any_type() {
    let e =
        env(br#"{"node_id":3,"token":null,"type":{"a":[1,{"b":2}]},"timestamp":[1, 2 ]}"#).unwrap();
    assert_eq!(raw(e.node_id), Some(&b"3"[..]));
    assert!(!e.node_id.unwrap().is_string());
    assert!(!e.node_id.unwrap().str_eq("3"));
    assert_eq!(raw(e.token), Some(&b"null"[..]));
    assert_eq!(raw(e.msg_type), Some(&br#"{"a":[1,{"b":2}]}"#[..]));
    assert_eq!(raw(e.timestamp), Some(&b"[1, 2 ]"[..]));
}

#[test]
fn whitespace_around_values_is_not_captured() {
    let e = env(b" \t\r\n{ \"node_id\" :\n \"r\" \t, \"token\" : true }\r\n").unwrap();
    assert_eq!(raw(e.node_id), Some(&b"\"r\""[..]));
    assert_eq!(raw(e.token), Some(&b"true"[..]));
}

#[test]
fn escaped_key_and_value() {
    let e =
        env(br#"{"node\u005fid":"ra\u0064ar\"3\"","\u0074oken":"s\/e\\c","type":"\ud83d\ude00"}"#)
            .unwrap();
    let id = e.node_id.unwrap();
    assert_eq!(id.as_str().unwrap(), "radar\"3\"");
    assert!(matches!(id.as_str(), Some(Cow::Owned(_))));
    assert!(id.str_eq("radar\"3\""));
    assert!(!id.str_eq("radar\"3"));
    assert!(!id.str_eq("radar\"3\"x"));
    let tok = e.token.unwrap();
    assert_eq!(tok.as_str().unwrap(), "s/e\\c");
    assert!(tok.str_eq("s/e\\c"));
    // The raw text with a backslash is not equal to its unescaped form.
    assert!(!tok.str_eq("s\\/e\\\\c"));
    let ty = e.msg_type.unwrap();
    assert_eq!(ty.as_str().unwrap(), "\u{1F600}");
    assert!(ty.str_eq("\u{1F600}"));
    let e = env(br#"{"a":"\b\f\n\r\t\u00e9\u20AC"}"#).unwrap();
    assert!(e.node_id.is_none());
}

#[test]
fn non_ascii_strings() {
    let e = env("{\"node_id\":\"räd€r😀\",\"x\":\"日本語のテキスト、長い長い文字列\"}".as_bytes())
        .unwrap();
    assert!(e.node_id.unwrap().str_eq("räd€r😀"));
    assert_eq!(e.node_id.unwrap().as_str().unwrap(), "räd€r😀");
    // A key that is non-ASCII matches a non-ASCII configured key.
    let keys = EnvelopeKeys {
        node_id: "nöde".as_bytes(),
        ..EnvelopeKeys::DEFAULT
    };
    let e = scan_envelope("{\"n\\u00f6de\":1}".as_bytes(), &keys, 8).unwrap();
    assert_eq!(raw(e.node_id), Some(&b"1"[..]));
}

#[test]
fn lone_surrogates_accepted_like_serde_ignored_any() {
    for s in [
        r#""\ud800""#,
        r#""\udc00""#,
        r#""\ud800\u0041""#,
        r#""\ud800\ud800""#,
        r#""\ud800x""#,
    ] {
        assert!(ok(s), "{s}");
    }
    let e = env(br#"{"node_id":"a\ud800b","\ud800":1}"#).unwrap();
    let id = e.node_id.unwrap();
    assert_eq!(id.as_str().unwrap(), "a\u{FFFD}b");
    assert!(!id.str_eq("a\u{FFFD}b"));
    let e = env(br#"{"node_id":"\ud800\u0041"}"#).unwrap();
    assert_eq!(e.node_id.unwrap().as_str().unwrap(), "\u{FFFD}A");
}

#[test]
fn duplicate_keys_last_wins() {
    let e = env(br#"{"node_id":"a","token":"t","node_id":"b","x":{"node_id":"c"}}"#).unwrap();
    assert!(e.node_id.unwrap().str_eq("b"));
    let e = env(br#"{"node_id":"a","node\u005fid":[1]}"#).unwrap();
    assert_eq!(raw(e.node_id), Some(&b"[1]"[..]));
}

#[test]
fn same_name_for_two_fields() {
    let keys = EnvelopeKeys {
        node_id: b"id",
        token: b"id",
        ..EnvelopeKeys::DEFAULT
    };
    let e = scan_envelope(br#"{"id":"x"}"#, &keys, 4).unwrap();
    assert!(e.node_id.unwrap().str_eq("x") && e.token.unwrap().str_eq("x"));
}

#[test]
fn error_variants() {
    assert_eq!(env(b""), Err(JsonError::Empty));
    assert_eq!(env(b" \r\n\t "), Err(JsonError::Empty));
    assert_eq!(validate(b"", 1), Err(JsonError::Empty));
    assert_eq!(env(b"[1,2]"), Err(JsonError::NotAnObject));
    assert_eq!(env(b" \"x\" "), Err(JsonError::NotAnObject));
    assert_eq!(env(b"3"), Err(JsonError::NotAnObject));
    // Not an object, and invalid: the syntax error wins.
    assert_eq!(env(b"[1,2"), Err(JsonError::Syntax { offset: 4 }));
    assert_eq!(env(b"{\"a\":1"), Err(JsonError::Syntax { offset: 6 }));
    assert_eq!(env(b"{\"a\" 1}"), Err(JsonError::Syntax { offset: 5 }));
    assert_eq!(env(b"{\"a\":1,}"), Err(JsonError::Syntax { offset: 7 }));
    assert_eq!(env(b"{a:1}"), Err(JsonError::Syntax { offset: 1 }));
    assert_eq!(
        scan_envelope(b"{\"a\":[[1]]}", &EnvelopeKeys::DEFAULT, 2),
        Err(JsonError::TooDeep { max_depth: 2 })
    );
    assert!(scan_envelope(b"{\"a\":[[1]]}", &EnvelopeKeys::DEFAULT, 3).is_ok());
    assert_eq!(validate(b"{}", 0), Err(JsonError::TooDeep { max_depth: 0 }));
    assert_eq!(validate(b"1", 0), Ok(()));
    assert_eq!(env(b"{\"a\":\"\xff\"}"), Err(JsonError::InvalidUtf8));
    assert_eq!(
        JsonError::Syntax { offset: 3 }.to_string(),
        "JSON syntax error at byte 3"
    );
}

#[test]
fn invalid_utf8() {
    let bad: &[&[u8]] = &[
        b"{\"node_id\":\"\xff\"}",
        b"{\"node_id\":\"abcdefghijklmnop\xc3\"}",
        b"{\"node_id\":\"\xc3\x28\"}",
        b"{\"node_id\":\"\xed\xa0\x80\"}", // UTF-8-encoded surrogate
        b"{\"node_id\":\"\xe2\x82\"}",     // truncated
        b"\xef\xbb\xbf{}",                 // BOM: valid UTF-8 but not JSON: Syntax
        b"{\"a\":1}\xff",                  // outside a string, trailing
        b"{\"a\":\xff}",                   // outside a string
        b"{\"a\xff\":1}",                  // in a key
        b"{\"a\":1,\"b\":[tru\xff]}",      // syntax error before the bad byte
        b"{\"\xc3\xa9\":1, \"b\":\"\xff\"}", // valid non-ASCII first, then bad
    ];
    for (n, b) in bad.iter().enumerate() {
        let want = if n == 5 {
            JsonError::Syntax { offset: 0 }
        } else {
            JsonError::InvalidUtf8
        };
        assert_eq!(validate(b, 128), Err(want), "case {n}");
        assert_eq!(env(b).map(|_| ()), Err(want), "case {n}");
    }
    // Non-ASCII outside strings but valid UTF-8: syntax error.
    assert_eq!(
        validate("{\"a\":é}".as_bytes(), 128),
        Err(JsonError::Syntax { offset: 5 })
    );
}

#[test]
fn trailing_garbage() {
    assert_eq!(syntax_at(b"{} x"), Some(3));
    assert_eq!(syntax_at(b"{}{}"), Some(2));
    assert_eq!(syntax_at(b"{}}"), Some(2));
    assert_eq!(syntax_at(b"1 2"), Some(2));
    assert_eq!(syntax_at(b"{}\0"), Some(2));
    assert_eq!(syntax_at(b"nulll"), Some(4));
    assert!(ok(" {} \n"));
    assert_eq!(syntax_at(b"{}\x0c"), Some(2)); // form feed is not JSON whitespace
    assert_eq!(syntax_at(b"\xc2\xa0{}"), Some(0)); // nor is NBSP
}

#[test]
fn long_integers_in_context() {
    // 8 to 20 digits: the two-word fast path and its hand-over to the slow path, followed by
    // every kind of terminator; serde_json says what is valid.
    for n in [
        "12345678",
        "123456789",
        "1768932172478",
        "123456789012345",
        "1234567890123456",
        "12345678901234567890",
        "01234567890",
        "1234567890.",
        "1234567890.5",
        "12345678901e3",
        "1234567890e",
        "123456789012x",
        "-1768932172478",
    ] {
        for text in [
            format!("[{n},0]"),
            format!("[{n}]"),
            format!("{{\"a\":{n},\"b\":1}}"),
            format!("{{\"a\":{n} }}"),
            format!("[{n}        ]"),
        ] {
            let serde = serde_json::from_str::<serde::de::IgnoredAny>(&text).is_ok();
            assert_eq!(ok(&text), serde, "{text}");
        }
    }
}

#[test]
fn numbers() {
    for s in [
        "0",
        "-0",
        "1",
        "-1",
        "10",
        "1.5",
        "-0.0",
        "0e0",
        "0E+1",
        "1e-7",
        "123.456e789",
        "1E400",
        "-9223372036854775809",
        "18446744073709551616",
        "0.000001",
        "[0,-0,1]",
    ] {
        assert!(ok(s), "{s}");
    }
    for (s, off) in [
        ("01", 1),
        ("-01", 2),
        ("00", 1),
        ("+1", 0),
        ("-", 1),
        ("- 1", 1),
        ("1.", 2),
        (".5", 0),
        ("1.e5", 2),
        ("1e", 2),
        ("1e+", 3),
        ("1e+-1", 3),
        ("1ee1", 2),
        ("0x10", 1),
        ("1.5.5", 3),
        ("[1,]", 3),
        ("[01]", 2),
        ("NaN", 0),
        ("Infinity", 0),
        ("-Infinity", 1),
        ("1_000", 1),
    ] {
        assert_eq!(syntax_at(s.as_bytes()), Some(off), "{s}");
    }
}

#[test]
fn literals_and_strings() {
    for s in [
        "true",
        "false",
        "null",
        "\"\"",
        "[true,false,null]",
        "\"\\\"\"",
        "\"\x7f\"",
        "\"\\u00AbcD\"",
        "\"/\"",
    ] {
        assert!(ok(s), "{s}");
    }
    for (s, off) in [
        ("tru", 3),
        ("True", 0),
        ("nul", 3),
        ("fals", 4),
        ("falsy", 4),
        ("\"abc", 4),
        ("\"abcdefghijklmnopqrstu", 22),
        ("\"a\nb\"", 2),
        ("\"\x00\"", 1),
        ("\"0123456789\x1f\"", 11),
        ("\"\\x\"", 2),
        ("\"\\u12g4\"", 5),
        ("\"\\u12\"", 5),
        ("\"\\U0041\"", 2),
        ("\"\\", 2),
        ("'a'", 0),
        ("[\"a\" \"b\"]", 5),
        ("{\"a\":1 \"b\":2}", 7),
        ("[1}", 2),
        ("{\"a\":1]", 6),
        ("]", 0),
        ("[", 1),
        ("{", 1),
        ("{\"a\"", 4),
        ("{\"a\":", 5),
    ] {
        assert_eq!(syntax_at(s.as_bytes()), Some(off), "{s:?}");
    }
}

#[test]
fn long_strings_cross_word_boundaries() {
    // Specials at every position relative to the 8-byte words and 32-byte blocks.
    for pad in 0..72 {
        let body = "x".repeat(pad);
        assert!(ok(&format!("\"{body}\"")));
        assert!(ok(&format!("\"{body}\\n{body}\"")));
        assert!(ok(&format!("\"{body}é{body}\"")));
        assert_eq!(
            syntax_at(format!("\"{body}\x01{body}\"").as_bytes()),
            Some(pad + 1)
        );
        assert_eq!(syntax_at(format!("\"{body}").as_bytes()), Some(pad + 1));
        let mut bad = format!("\"{body}").into_bytes();
        bad.push(0xff);
        bad.extend_from_slice(b"\"");
        assert_eq!(validate(&bad, 1), Err(JsonError::InvalidUtf8));
        // Inside an object, as a key and as a value, followed by 0..3 more bytes.
        let frame = format!("{{\"{body}\":1,\"node_id\":\"{body}\\u0041\"}}");
        let e = env(frame.as_bytes()).unwrap();
        assert!(e.node_id.unwrap().str_eq(&format!("{body}A")));
        assert_eq!(
            syntax_at(format!("[\"{body}\x1f\"]").as_bytes()),
            Some(pad + 2)
        );
        assert!(ok(&format!("[\"{body}\\\"\"]")));
    }
}

#[test]
fn numbers_in_every_context() {
    // The fast path reads a whole word; check numbers near the end of the input, inside
    // containers, and of every length around 8 bytes.
    let valid = [
        "0",
        "-0",
        "7",
        "-7",
        "0.5",
        "-0.5",
        "12.25",
        "1234567",
        "12345678",
        "123456789",
        "1234.567",
        "-123.456",
        "0.1234567",
        "1e5",
        "1.5E-3",
        "-0e+0",
        "99.9e9",
    ];
    let invalid = [
        "01",
        "-01",
        "00.5",
        "1.",
        "-.5",
        ".5",
        "1.e5",
        "1e",
        "1e+",
        "--1",
        "-",
        "1.2.3",
        "0x1",
        "1..2",
        "+1",
        "12345678.",
        "1234567.e1",
        "-a",
    ];
    for pad in ["", " ", "\n\t  ", "        "] {
        for n in valid {
            for doc in [
                format!("{n}{pad}"),
                format!("[{n}]{pad}"),
                format!("[{n},{n}]"),
                format!("{{\"timestamp\":{n}{pad}}}"),
                format!("{{\"a\":[{pad}{n}{pad},{n}],\"timestamp\":{n}}}"),
            ] {
                assert!(ok(&doc), "{doc:?}");
            }
            let doc = format!("{{\"timestamp\":{n}{pad}}}");
            assert_eq!(
                raw(env(doc.as_bytes()).unwrap().timestamp),
                Some(n.as_bytes())
            );
        }
        for n in invalid {
            for doc in [
                format!("{n}{pad}"),
                format!("[{n}]{pad}"),
                format!("[1,{n},2]"),
                format!("{{\"timestamp\":{n}{pad}}}"),
            ] {
                assert!(syntax_at(doc.as_bytes()).is_some(), "{doc:?}");
            }
        }
    }
}

#[test]
fn register_stack_boundaries() {
    // Containers nested around multiples of 63 levels (the register stack's capacity), with
    // mixed kinds, inside a top-level object and at the top level.
    let nested = |n: usize| {
        let mut s = String::new();
        for k in 0..n {
            s.push_str(if k % 2 == 0 { "[" } else { "{\"k\":" });
        }
        s.push_str("null");
        for k in (0..n).rev() {
            s.push(if k % 2 == 0 { ']' } else { '}' });
        }
        s
    };
    for n in [
        1, 2, 62, 63, 64, 65, 125, 126, 127, 128, 189, 190, 200, 252, 253, 254, 320,
    ] {
        let top = nested(n);
        assert_eq!(validate(top.as_bytes(), n), Ok(()), "{n}");
        assert_eq!(
            validate(top.as_bytes(), n - 1),
            Err(JsonError::TooDeep { max_depth: n - 1 })
        );
        let member = format!("{{\"node_id\":\"r\",\"x\":{top},\"token\":1}}");
        let e = scan_envelope(member.as_bytes(), &EnvelopeKeys::DEFAULT, n + 1).unwrap();
        assert_eq!(raw(e.token), Some(&b"1"[..]));
        assert_eq!(
            scan_envelope(member.as_bytes(), &EnvelopeKeys::DEFAULT, n).map(|_| ()),
            Err(JsonError::TooDeep { max_depth: n })
        );
        // A wrong closing bracket at every level is caught.
        let bytes = top.as_bytes();
        for (pos, &b) in bytes
            .iter()
            .enumerate()
            .filter(|(_, b)| matches!(b, b']' | b'}'))
        {
            let mut bad = bytes.to_vec();
            bad[pos] = if b == b']' { b'}' } else { b']' };
            assert_eq!(
                validate(&bad, usize::MAX),
                Err(JsonError::Syntax { offset: pos }),
                "{n} {pos}"
            );
        }
    }
}

#[test]
fn depth_limits() {
    let nest = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    assert_eq!(validate(nest(128).as_bytes(), 128), Ok(()));
    assert_eq!(
        validate(nest(129).as_bytes(), 128),
        Err(JsonError::TooDeep { max_depth: 128 })
    );
    // Beyond the inline bit stack (spills to the heap), with mixed kinds.
    let mixed = |n: usize| {
        let mut s = String::new();
        for k in 0..n {
            s.push_str(if k % 3 == 0 { "{\"k\":" } else { "[" });
        }
        s.push('0');
        for k in (0..n).rev() {
            s.push(if k % 3 == 0 { '}' } else { ']' });
        }
        s
    };
    assert_eq!(validate(mixed(1000).as_bytes(), 1000), Ok(()));
    assert_eq!(
        validate(mixed(1001).as_bytes(), 1000),
        Err(JsonError::TooDeep { max_depth: 1000 })
    );
    let mut wrong = mixed(600);
    wrong.pop();
    wrong.push(']');
    assert!(matches!(
        validate(wrong.as_bytes(), 1000),
        Err(JsonError::Syntax { .. })
    ));
}

#[test]
fn very_deep_nesting_is_too_deep_without_recursion() {
    let handle = std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(|| {
            let arrays = "[".repeat(100_000);
            let objects = "{\"a\":".repeat(100_000);
            let start = std::time::Instant::now();
            let r = [
                validate(arrays.as_bytes(), DEFAULT_MAX_DEPTH),
                env(arrays.as_bytes()).map(|_| ()),
                validate(objects.as_bytes(), DEFAULT_MAX_DEPTH),
                env(objects.as_bytes()).map(|_| ()),
            ];
            // With no limit at all it must still not recurse: it runs to the missing end.
            let unlimited = validate(objects.as_bytes(), usize::MAX);
            (r, unlimited, start.elapsed())
        })
        .unwrap();
    let (r, unlimited, elapsed) = handle.join().unwrap();
    for e in r {
        assert_eq!(e, Err(JsonError::TooDeep { max_depth: 128 }));
    }
    assert_eq!(unlimited, Err(JsonError::Syntax { offset: 500_000 }));
    assert!(elapsed < std::time::Duration::from_secs(1), "{elapsed:?}");
}

/// Runs `f` on `input` with a fresh UTF-8 state.
fn with_utf8<T>(input: &[u8], f: impl FnOnce(&[u8], &mut Utf8) -> T) -> T {
    f(input, &mut Utf8 { hi_mask: HI })
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4000))]

    /// The flat-array path answers exactly as the general walk, error offsets included,
    /// whatever the array holds (nested containers, broken syntax, odd depth limits).
    #[test]
    fn flat_array_path_matches_the_walk(
        body in proptest::collection::vec(proptest::sample::select(vec![
            "1", "-2.5", "40.46", "0", "01", "1e5", "-", "1.", "\"ab\"", "\"a\\nb\"", "\"\x01\"",
            "\"\u{e9}\"", "\"\\q\"", "null", "true", "fals", ",", ",", ",", "[", "]", "]",
            "{", "}", ":", " ", "\"k\":", "\n", "\\", "\u{e9}",
        ]), 0..24),
        outer in 0usize..3,
        max_depth in 0usize..5,
    ) {
        let input = format!("[{}", body.concat()).into_bytes();
        let flat = with_utf8(&input, |x, u| scan_array(x, 0, outer, max_depth, u));
        let walked = with_utf8(&input, |x, u| scan_container(x, 0, outer, max_depth, u));
        proptest::prop_assert_eq!(flat, walked, "{:?}", String::from_utf8_lossy(&input));
    }
}

/// Acknowledged delivery (issue 14): the `seq` member is found in the same
/// pass when a key is named for it, and never when none is.
#[test]
fn the_seq_member_is_found_only_when_looked_for() {
    let frame = br#"{"node_id":"r","seq":42,"x":{"seq":7},"timestamp":1}"#;
    let keys = EnvelopeKeys {
        seq: Some(b"seq"),
        ..EnvelopeKeys::DEFAULT
    };
    let env = scan_envelope(frame, &keys, DEFAULT_MAX_DEPTH).unwrap();
    assert_eq!(env.seq.map(|v| v.raw()), Some(&b"42"[..]));
    assert_eq!(env.timestamp.map(|v| v.raw()), Some(&b"1"[..]));
    let env = scan_envelope(frame, &EnvelopeKeys::DEFAULT, DEFAULT_MAX_DEPTH).unwrap();
    assert_eq!(env.seq, None);
    // An empty key (even escaped) does not match a slot that is not looked for.
    let env = scan_envelope(
        br#"{"":1,"\u0073":2}"#,
        &EnvelopeKeys::DEFAULT,
        DEFAULT_MAX_DEPTH,
    )
    .unwrap();
    assert_eq!(env.seq, None);
    let escaped = EnvelopeKeys {
        seq: Some(b"s"),
        ..EnvelopeKeys::DEFAULT
    };
    let env = scan_envelope(br#"{"\u0073":2}"#, &escaped, DEFAULT_MAX_DEPTH).unwrap();
    assert_eq!(env.seq.map(|v| v.raw()), Some(&b"2"[..]));
}
