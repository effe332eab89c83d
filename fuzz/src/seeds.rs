//! The seed corpus: inputs taken from the test suites and the docs, in each
//! target's input layout (see `checks.rs`). `crates/framehub/tests/fuzz_corpus.rs`
//! checks that `fuzz/corpus/<target>/seed-*` holds exactly these, and
//! writes them with `FRAMEHUB_WRITE_SEEDS=1`.

use std::path::Path;

/// One seed: its target, a file name, its bytes.
pub struct Seed {
    pub target: &'static str,
    pub name: String,
    pub bytes: Vec<u8>,
}

/// `codec` input: framing bytes, then a maximum of 255 (1 MiB) or `max`,
/// the default depth, and two cuts.
fn codec(framing: &[u8], max: u8, stream: &[u8]) -> Vec<u8> {
    let mut v = framing.to_vec();
    v.extend_from_slice(&[max, 0, 2, 3, 0, 17, 0]);
    v.extend_from_slice(stream);
    v
}

/// `node_session` input: `flags` (bit 0: json framing, 3: shared token
/// `secret`, 4: `radar9`'s token `nine`, 5: redact `password`), generous
/// maxima, the default depth, the stream in reads at two cuts 50 ms apart.
fn node(flags: u8, stream: &[u8]) -> Vec<u8> {
    let mut v = vec![flags, 255, 0, 255, 2, 20, 0, 60, 0, 5, 5];
    v.extend_from_slice(stream);
    v
}

/// `proxy_header` input: `flags` (bit 0: required, bit 1: trusted), the
/// stream in reads at two cuts.
fn proxy(flags: u8, stream: &[u8]) -> Vec<u8> {
    let mut v = vec![flags, 2, 5, 0, 14, 0];
    v.extend_from_slice(stream);
    v
}

const DETECTION: &[u8] = br#"{"node_id":"radar3","token":"secret","timestamp":1768932172478,"delay":[40.46],"doppler":[-27.99],"snr":[12.08],"adsb":[null]}"#;

/// The seeds; `root` is the repository (config seeds are the docs' TOML
/// examples).
pub fn seeds(root: &Path) -> Vec<Seed> {
    let mut out = Vec::new();
    let mut add = |target: &'static str, name: &str, bytes: Vec<u8>| {
        out.push(Seed {
            target,
            name: format!("seed-{name}"),
            bytes,
        })
    };

    // codec: the module docs' and property tests' streams.
    let space_packet = b"\x18\x01\xc0\0\0\0\xbb\x08\x01\xc0\x01\0\x01ab";
    let cases: &[(&str, &[u8], u8, &[u8])] = &[
        ("lines", &[0], 255, b"{\"a\":1}\r\n\npartial"),
        (
            "lines-oversize",
            &[0],
            8,
            b"ok\nfar too long\npartial\nthis one is too long\nlast",
        ),
        (
            "length",
            &[1, 2, 0],
            255,
            b"\0\0\0\x01a\0\0\0\x03abc\0\0\0\x09",
        ),
        ("length-le2", &[1, 1, 1], 255, b"\x03\0abc\x00\x00\x01\0z"),
        ("cobs", &[2], 4, b"\0\x0612345\0\x05a\0\x02b\0\x02c"),
        ("spacepacket", &[3, 0], 255, space_packet),
        (
            "spacepacket-allowed",
            &[3, 1, 0x01, 0x18],
            255,
            space_packet,
        ),
        ("chunk", &[4], 8, b"0123456789abcdef"),
        (
            "json",
            &[5, 0],
            255,
            b"{\"a\":[1,2]} {\"b\":\"x\\\"}\"}[true]\n\"s\" 12 {\"c\":{}}",
        ),
        ("json-garbage", &[5, 0], 255, b"}} {\"a\":1}x{\"b\":\xff}"),
        ("json-unvalidated", &[5, 1], 255, b"{\"a\":0x01}{\"b\":[}"),
    ];
    for (name, framing, max, stream) in cases {
        add("codec", name, codec(framing, *max, stream));
    }

    // json_envelope: json_diff.rs's handpicked cases.
    let json: &[&[u8]] = &[
        DETECTION,
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
        b" ",
        b"{}x",
        b"[1,2,]",
        b"[\"\x7f\"]",
        b"\"\t\"",
        b"1.",
        b"tru",
        b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
    ];
    for (i, x) in json.iter().enumerate() {
        add("json_envelope", &format!("{i:02}"), x.to_vec());
    }

    // node_session: the node protocol tests' conversations.
    let login_then_frames = [
        DETECTION,
        b"\n",
        br#"{"node_id":"radar3","type":"heartbeat"}"#,
        b"\n",
        br#"{"node_id":"radar3","timestamp":2,"password":"p","x":1}"#,
        b"\r\n",
        br#"{"node_id":"radar4","timestamp":3}"#,
        b"\nnot json\n",
        br#"{"node\u005fid":"radar3","token":"secret"}"#,
        b"\n",
    ]
    .concat();
    add(
        "node_session",
        "shared-token",
        node(8 | 32, &login_then_frames),
    );
    add("node_session", "no-token", node(0, &login_then_frames));
    add(
        "node_session",
        "json-framing",
        node(1 | 8, &login_then_frames),
    );
    let per_node = [
        br#"{"token":"secret","type":"heartbeat"}"#.as_slice(),
        b"\n",
        br#"{"node_id":"radar9","token":"nine","timestamp":1}"#,
        b"\n",
    ]
    .concat();
    add("node_session", "per-node-token", node(8 | 16, &per_node));
    add(
        "node_session",
        "wrong-token",
        node(8, b"{\"node_id\":\"r\",\"token\":\"guess\"}\n"),
    );

    // proxy_header: proxy_protocol.rs's headers, then the device's bytes.
    let v1 = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n{\"node_id\":\"a\"}\n";
    let v1_6 = b"PROXY TCP6 2001:db8::1 2001:db8::2 4000 30050\r\nhello";
    let unknown = b"PROXY UNKNOWN\r\n";
    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
    v2.extend_from_slice(&[10, 0, 0, 7, 10, 0, 0, 1, 0x30, 0x39, 0x75, 0x62]);
    v2.extend_from_slice(b"frames");
    let mut local = b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00".to_vec();
    local.extend_from_slice(b"x");
    for (name, stream) in [
        ("v1", &v1[..]),
        ("v1-tcp6", &v1_6[..]),
        ("v1-unknown", &unknown[..]),
        ("v2", &v2[..]),
        ("v2-local", &local[..]),
        ("none", &b"{\"node_id\":\"a\"}\n"[..]),
        ("partial", &b"PROX"[..]),
    ] {
        add(
            "proxy_header",
            &format!("{name}-required"),
            proxy(3, stream),
        );
        add(
            "proxy_header",
            &format!("{name}-optional"),
            proxy(2, stream),
        );
    }
    add("proxy_header", "v1-untrusted", proxy(0, v1));

    // config: every TOML example in the docs.
    let mut docs: Vec<_> = std::fs::read_dir(root.join("docs"))
        .expect("docs/")
        .map(|e| e.expect("docs entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    for path in docs {
        let text = std::fs::read_to_string(&path).expect("a doc");
        let stem = path
            .file_stem()
            .expect("a name")
            .to_string_lossy()
            .into_owned();
        for (i, block) in text.split("```toml\n").skip(1).enumerate() {
            let toml = block.split("```").next().unwrap_or("");
            add("config", &format!("{stem}-{i}"), toml.as_bytes().to_vec());
        }
    }
    add(
        "config",
        "raw-listeners",
        b"[[listener]]\nname = \"a\"\nframing = { method = \"length\", prefix_bytes = 2 }\nprotocol = \"raw\"\n\n[[listener]]\nname = \"b\"\nframing = { method = \"spacepacket\", allowed_packet_ids = [0x1801] }\nprotocol = \"raw\"\n[[sink]]\ntype = \"stdout\"\n".to_vec(),
    );
    out
}
