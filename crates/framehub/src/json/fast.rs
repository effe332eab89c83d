//! The scanner's fast path: a top-level object of compact JSON (no whitespace between tokens,
//! no escapes, no control bytes) checked from a structural index, 64 bytes at a time, instead of
//! byte by byte. It either accepts exactly what the exact scanner accepts, with the same
//! envelope, or gives up (`None`) and lets the exact scanner decide, report the error at its
//! offset, or walk what the fast path does not know (whitespace, escapes, other top-level
//! values, nesting beyond 62 levels).
//!
//! How: [`classify`] marks quotes, structural characters, spaces and the bytes that make it give
//! up, per 64-byte block; the quotes give the string regions (a prefix XOR: without escapes every
//! quote opens or closes a string); the tokens are the quotes, the structural characters outside
//! strings and the first byte of every other run outside strings (a number or a literal). The
//! grammar is then checked on the tokens alone, and each number or literal on its bytes. Since
//! nothing may lie between tokens (no whitespace), each token starts right where the one before
//! ends, so a string is a quote token and the next token, and a scalar ends where the next token
//! starts.

use super::classify::classify;
use super::{Envelope, KeyMatcher, at, commit, scan_number, short_eq};

/// What [`Tokens::next`] returns past the last token; [`at`] reads it as the byte 0, which no
/// rule of the grammar accepts.
const END: usize = usize::MAX;

/// The token positions of the input, computed a block at a time as they are consumed.
struct Tokens<'a> {
    input: &'a [u8],
    /// Tokens of the current block not yet returned.
    bits: u64,
    /// Offset of the current block.
    base: usize,
    /// Offset of the next block to classify.
    next: usize,
    /// All ones while a string is open at the end of the classified text.
    in_string: u64,
    /// 1 when the classified text ends inside a scalar run.
    run_carry: u64,
    /// Bytes >= 0x80 seen (then the whole input gets one UTF-8 check).
    high: u64,
}

impl<'a> Tokens<'a> {
    fn new(input: &'a [u8]) -> Self {
        Tokens {
            input,
            bits: 0,
            base: 0,
            next: 0,
            in_string: 0,
            run_carry: 0,
            high: 0,
        }
    }

    /// The next token's offset, [`END`] past the last, `None` when the block it is in has
    /// anything the fast path leaves to the exact scanner.
    #[inline(always)]
    fn next(&mut self) -> Option<usize> {
        while self.bits == 0 {
            if self.next >= self.input.len() {
                return Some(END);
            }
            self.load()?;
        }
        let p = self.base + self.bits.trailing_zeros() as usize;
        self.bits &= self.bits - 1;
        Some(p)
    }

    /// Classifies the block at `self.next` (the last one zero-padded).
    #[inline(always)]
    fn load(&mut self) -> Option<()> {
        let start = self.next;
        let rest = self.input.get(start..).unwrap_or_default();
        let padded;
        let (block, valid) = match rest.first_chunk::<64>() {
            Some(block) => (block, u64::MAX),
            None => {
                let mut b = [0u8; 64];
                b[..rest.len()].copy_from_slice(rest);
                padded = b;
                (&padded, (1u64 << rest.len()) - 1)
            }
        };
        let m = classify(block);
        if m.bail & valid != 0 {
            return None;
        }
        // Bit i: byte i is inside a string (its opening quote included, its closing one not).
        let mut inside = m.quote;
        inside ^= inside << 1;
        inside ^= inside << 2;
        inside ^= inside << 4;
        inside ^= inside << 8;
        inside ^= inside << 16;
        inside ^= inside << 32;
        inside ^= self.in_string;
        self.in_string = ((inside as i64) >> 63) as u64;
        if m.space & !inside != 0 {
            return None;
        }
        let structural = m.structural & !inside;
        // Numbers and literals: runs of bytes that are neither quote, structural nor string.
        let run = valid & !(m.structural | m.quote | inside);
        let run_starts = run & !((run << 1) | self.run_carry);
        self.run_carry = run >> 63;
        self.high |= m.high;
        self.bits = structural | m.quote | run_starts;
        self.base = start;
        self.next = start + 64;
        Some(())
    }
}

/// Whether `input[p..end]`, whose first byte is `c`, is exactly one number or literal.
#[inline(always)]
fn scalar_ok(input: &[u8], p: usize, end: usize, c: u8) -> bool {
    let lit: &[u8] = match c {
        b'0'..=b'9' => return scan_number(input, p) == Ok(end),
        b'-' => return scan_number(input, p + 1) == Ok(end),
        b't' => b"true",
        b'f' => b"false",
        b'n' => b"null",
        _ => return false,
    };
    input.get(p..end).is_some_and(|s| short_eq(s, lit))
}

/// The key of an object member: `p` is the token after `{` or `,`. Returns the key's content
/// range and the offset of the member's value.
#[inline(always)]
fn key(t: &mut Tokens<'_>, input: &[u8], p: usize) -> Option<(usize, usize, usize)> {
    if at(input, p) != b'"' {
        return None;
    }
    let q = t.next()?;
    let colon = t.next()?;
    if at(input, colon) != b':' {
        return None;
    }
    // `q` is the closing quote: without escapes the next quote token after an opening one is
    // always its end, and `colon` (a token right after it) proves the string was closed.
    Some((p + 1, q, t.next()?))
}

/// The fast path of [`super::scan`] (see the module docs): `Some` only for a top-level object,
/// with exactly the envelope the exact scanner would find; `None` to let the exact scanner
/// decide.
pub(super) fn scan_object<'a, const CAPTURE: bool>(
    input: &'a [u8],
    keys: &KeyMatcher<'_>,
    max_depth: usize,
) -> Option<Envelope<'a>> {
    let mut env = Envelope::default();
    let mut t = Tokens::new(input);
    if t.next()? != 0 || at(input, 0) != b'{' || max_depth == 0 {
        return None;
    }
    let mut p = t.next()?;
    if at(input, p) == b'}' {
        p = t.next()?;
    } else {
        loop {
            let (start, end, v) = key(&mut t, input, p)?;
            let fields = if CAPTURE {
                keys.matches(input, start, end, false)
            } else {
                0
            };
            let (value_end, after) = value(&mut t, input, v, max_depth)?;
            if CAPTURE && fields != 0 {
                commit(&mut env, fields, input.get(v..value_end)?);
            }
            match at(input, after) {
                b',' => p = t.next()?,
                b'}' => {
                    p = t.next()?;
                    break;
                }
                _ => return None,
            }
        }
    }
    // Nothing after the object: no token, hence no byte at all.
    if p != END {
        return None;
    }
    if t.high != 0 && simdutf8::basic::from_utf8(input).is_err() {
        return None;
    }
    Some(env)
}

/// A member value of the top-level object at token `p`: returns the offset just past it and the
/// token after it.
#[inline(always)]
fn value(t: &mut Tokens<'_>, input: &[u8], p: usize, max_depth: usize) -> Option<(usize, usize)> {
    let c = at(input, p);
    match c {
        b'"' => {
            let q = t.next()?;
            if at(input, q) != b'"' {
                return None;
            }
            Some((q + 1, t.next()?))
        }
        b'[' | b'{' => nested(t, input, p, c, max_depth),
        _ => {
            let after = t.next()?;
            let end = after.min(input.len());
            if !scalar_ok(input, p, end, c) {
                return None;
            }
            Some((end, after))
        }
    }
}

/// The array or object at token `p` (first byte `c`), a member value of the top-level object
/// (depth 2), with everything nested in it: returns the offset past it and the token after it.
/// The kinds of the open containers form a bit stack (innermost in bit 0, 1 = object, a
/// sentinel 1 above them); nesting beyond 62 levels below the top goes to the exact scanner.
#[inline(never)]
fn nested(
    t: &mut Tokens<'_>,
    input: &[u8],
    mut p: usize,
    mut c: u8,
    max_depth: usize,
) -> Option<(usize, usize)> {
    let mut stack: u64 = 1;
    // Levels open, the top-level object's included.
    let mut depth = 1usize;
    let mut after;
    'value: loop {
        // `p` is the first byte `c` of a value.
        if c == b'"' {
            let q = t.next()?;
            if at(input, q) != b'"' {
                return None;
            }
            after = t.next()?;
        } else if c == b'[' || c == b'{' {
            depth += 1;
            if depth > max_depth || stack >> 62 != 0 {
                return None;
            }
            let object = c == b'{';
            stack = (stack << 1) | u64::from(object);
            p = t.next()?;
            c = at(input, p);
            // `}` is `]` + 0x20.
            if c == b']' | (u8::from(object) << 5) {
                // Empty: the closing bracket is the token after the "value".
                after = p;
            } else {
                if object {
                    (_, _, p) = key(t, input, p)?;
                    c = at(input, p);
                }
                continue 'value;
            }
        } else {
            after = t.next()?;
            if !scalar_ok(input, p, after.min(input.len()), c) {
                return None;
            }
        }
        // After a value: close containers until a comma leads to the next value.
        loop {
            c = at(input, after);
            if c == b',' {
                p = t.next()?;
                if stack & 1 != 0 {
                    (_, _, p) = key(t, input, p)?;
                }
                c = at(input, p);
                continue 'value;
            }
            if c != b']' | ((stack as u8 & 1) << 5) {
                return None;
            }
            stack >>= 1;
            depth -= 1;
            if stack == 1 {
                return Some((after + 1, t.next()?));
            }
            after = t.next()?;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    //! The fast path against the exact scanner: on compact frames (which it must take) and on
    //! their mutations (where it must agree whenever it answers).
    use proptest::prelude::*;

    use super::super::{DEFAULT_MAX_DEPTH, EnvelopeKeys, HI, Utf8, scan_inner};
    use super::*;

    const KEYS: EnvelopeKeys<'static> = EnvelopeKeys {
        node_id: b"node_id",
        token: b"token",
        msg_type: b"type",
        // The same name for two fields, as a user may configure.
        timestamp: b"type",
    };

    fn fast(input: &[u8], max_depth: usize) -> Option<Envelope<'_>> {
        scan_object::<true>(input, &KeyMatcher::new(&KEYS), max_depth)
    }

    /// The exact scanner alone, with its UTF-8 rule (invalid UTF-8 is an error).
    fn exact(input: &[u8], max_depth: usize) -> Option<Envelope<'_>> {
        let mut utf8 = Utf8 { hi_mask: HI };
        match scan_inner::<true>(input, &KeyMatcher::new(&KEYS), max_depth, &mut utf8) {
            Ok((b'{', env)) if std::str::from_utf8(input).is_ok() => Some(env),
            _ => None,
        }
    }

    /// Whatever the fast path answers, the exact scanner answers the same.
    fn agrees(input: &[u8], max_depth: usize) -> Option<Envelope<'_>> {
        let f = fast(input, max_depth);
        if f.is_some() {
            assert_eq!(f, exact(input, max_depth), "{:?}", String::from_utf8_lossy(input));
        }
        f
    }

    #[test]
    fn takes_node_frames_across_blocks() {
        let pad = "x".repeat(130);
        let frames = [
            r#"{"node_id":"node-1","timestamp":1768932172478,"sent_ns":"0000000000000000000","delay":[40.46,41.59,42.72],"doppler":[-27.99,-24.29,-20.59],"snr":[12.08,12.58,13.08],"adsb":[null,null,null],"pad":"xxxxxxxxxxxxxxxxxx"}"#.to_owned(),
            r#"{}"#.to_owned(),
            r#"{"a":{},"b":[],"c":[[]],"d":{"e":{"f":[true,false,null,{"g":"h i"}]}}}"#.to_owned(),
            format!(r#"{{"type":"{pad}","node_id":"x","type":[1,2,{{"a":"{pad}"}}],"pad":"é{pad}雷"}}"#),
        ];
        for f in &frames {
            for cut in 0..f.len() {
                agrees(&f.as_bytes()[..cut], DEFAULT_MAX_DEPTH);
            }
            assert!(agrees(f.as_bytes(), DEFAULT_MAX_DEPTH).is_some(), "{f}");
        }
    }

    #[test]
    fn leaves_the_rest_to_the_exact_scanner() {
        for f in [
            " {}",
            "{} ",
            r#"{"a": 1}"#,
            "{\"a\":\"\\n\"}",
            "{\"a\":\"\t\"}",
            "[1]",
            "1",
            r#"{"a":01}"#,
            r#"{"a":1.}"#,
            r#"{"a":-}"#,
            r#"{"a":tru}"#,
            r#"{"a":nulll}"#,
            r#"{"a":[1,]}"#,
            r#"{"a":[,1]}"#,
            r#"{"a":{"b"}}"#,
            r#"{"a":{"b":}}"#,
            r#"{"a":[}"#,
            r#"{"a":1"b"}"#,
            r#"{"a""b"}"#,
            r#"{"a":1}}"#,
            r#"{"a":1}x"#,
            r#"{"a":"b}"#,
            r#"{"a":1,}"#,
            r#"{,"a":1}"#,
            r#"{"a":[1]]}"#,
            r#"{"a":{]}"#,
        ] {
            assert_eq!(agrees(f.as_bytes(), DEFAULT_MAX_DEPTH), None, "{f}");
        }
        assert_eq!(fast(b"{\"a\":\"\xff\"}", DEFAULT_MAX_DEPTH), None);
        assert_eq!(fast(b"{}", 0), None);
        assert!(fast(b"{}", 1).is_some());
        assert_eq!(fast(b"{\"a\":[]}", 1), None);
        assert!(fast(b"{\"a\":[]}", 2).is_some());
    }

    #[test]
    fn deep_nesting_up_to_the_stack_and_the_limit() {
        for depth in [1usize, 2, 61, 62, 63, 64, 100] {
            let f = format!(r#"{{"a":{}1{}}}"#, "[".repeat(depth), "]".repeat(depth));
            // The top-level object and `depth` arrays: depth + 1 levels.
            for max in [depth, depth + 1, DEFAULT_MAX_DEPTH] {
                let r = agrees(f.as_bytes(), max);
                assert_eq!(r.is_some(), max > depth && depth <= 62, "{depth} {max}");
            }
        }
    }

    fn number() -> impl Strategy<Value = String> {
        prop::sample::select(vec![
            "0", "-0", "7", "-27.99", "40.46", "1768932172478", "12345678", "123456789",
            "1e5", "-1.5E-3", "0.001", "2e+10", "123456789012345678901234",
        ])
        .prop_map(str::to_owned)
    }

    fn string() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            6 => "[a-z0-9_]{0,12}",
            1 => Just(" ".to_owned()),
            1 => Just("{}[]:,".to_owned()),
            1 => Just("é雷🛰".to_owned()),
            1 => Just("\\\"\\n\\u00e9".to_owned()),
            1 => "x{40,70}",
        ];
        prop::collection::vec(piece, 0..4).prop_map(|p| format!("\"{}\"", p.concat()))
    }

    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => prop::sample::select(vec!["node_id", "token", "type", "timestamp", "pad"])
                .prop_map(|k| format!("\"{k}\"")),
            1 => string(),
        ]
    }

    fn value() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            3 => number(),
            3 => string(),
            1 => prop::sample::select(vec!["true", "false", "null"]).prop_map(str::to_owned),
        ];
        leaf.prop_recursive(5, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6)
                    .prop_map(|items| format!("[{}]", items.join(","))),
                prop::collection::vec((key(), inner), 0..6).prop_map(|members| {
                    let m: Vec<String> = members.iter().map(|(k, v)| format!("{k}:{v}")).collect();
                    format!("{{{}}}", m.join(","))
                }),
            ]
        })
    }

    fn frame() -> impl Strategy<Value = String> {
        prop::collection::vec((key(), value()), 0..10).prop_map(|members| {
            let m: Vec<String> = members.iter().map(|(k, v)| format!("{k}:{v}")).collect();
            format!("{{{}}}", m.join(","))
        })
    }

    /// A byte edit: insert, delete or replace at an index (mod the length), or truncate.
    fn mutate(mut v: Vec<u8>, edits: &[(u8, usize, u8)]) -> Vec<u8> {
        for &(kind, i, b) in edits {
            if v.is_empty() {
                break;
            }
            let i = i % v.len();
            match kind % 4 {
                0 => v.insert(i, b),
                1 => {
                    v.remove(i);
                }
                2 => v[i] = b,
                _ => v.truncate(i),
            }
        }
        v
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn compact_frames_take_the_fast_path(f in frame()) {
            let r = agrees(f.as_bytes(), DEFAULT_MAX_DEPTH);
            // Escapes are the one thing of these frames it leaves to the exact scanner.
            prop_assert_eq!(r.is_some(), !f.contains('\\'), "{}", f);
        }

        #[test]
        fn mutated_frames_agree(
            f in frame(),
            edits in prop::collection::vec(
                (any::<u8>(), any::<usize>(), prop::sample::select(
                    b"\"\\{}[]:, \t\n0123456789-+.eEtrufalsn\x00\x1f\x80\xc3\xa9\xff".to_vec())),
                1..4),
        ) {
            let v = mutate(f.into_bytes(), &edits);
            agrees(&v, DEFAULT_MAX_DEPTH);
            agrees(&v, 3);
        }
    }
}
