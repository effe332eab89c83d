//! The hot-path JSON scanner: checks in one pass, without building a DOM or allocating, that a
//! frame is strict RFC 8259 JSON in valid UTF-8, and picks out its top-level envelope fields
//! (`node_id`, `token`, `type`, `timestamp` by default).
//!
//! Behaviour worth knowing:
//! - Strictness follows RFC 8259 and `serde_json::from_slice::<serde::de::IgnoredAny>`, plus UTF-8:
//!   no leading zeros, no `+` sign, a digit on both sides of `.`, a digit after the exponent sign;
//!   no raw control characters (< 0x20) in strings; escapes `\" \\ \/ \b \f \n \r \t \uXXXX`;
//!   only the literals `true`, `false`, `null`; whitespace is space, tab, CR, LF.
//! - Lone UTF-16 surrogates in `\u` escapes (`"\ud800"`) are *accepted*, as RFC 8259's grammar
//!   and serde_json's `IgnoredAny` do (serde_json only rejects them when it builds a `String`).
//!   [`RawValue::as_str`] turns such a surrogate into U+FFFD, [`RawValue::str_eq`] never matches
//!   it, and a key containing one never matches an envelope key.
//! - Error precedence: invalid UTF-8 anywhere wins over any other error; otherwise the first error
//!   met while reading left to right is reported.
//! - Depth: each array or object adds one level; the top-level object is depth 1; a scalar at the
//!   top level is depth 0. `max_depth` is the deepest level allowed (inclusive). There is no
//!   recursion: nesting is tracked with a bit stack (a register, then 3 inline words, then the
//!   heap only beyond 252 levels).

use std::borrow::Cow;

mod redact;
pub use redact::remove_members;

/// Default nesting limit (the same order as serde_json's recursion limit of 128).
pub const DEFAULT_MAX_DEPTH: usize = 128;

/// Names of the top-level envelope fields (configurable by the user; defaults node_id, token, type, timestamp).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnvelopeKeys<'k> {
    /// Key of the sending node's id (default `node_id`).
    pub node_id: &'k [u8],
    /// Key of the authentication token (default `token`).
    pub token: &'k [u8],
    /// Key of the message type, e.g. `heartbeat` (default `type`).
    pub msg_type: &'k [u8],
    /// Key of the frame timestamp (default `timestamp`).
    pub timestamp: &'k [u8],
    /// Key of the sequence number of acknowledged delivery (`seq` on a
    /// listener with `[listener.ack]`); `None`: not looked for.
    pub seq: Option<&'k [u8]>,
}

impl EnvelopeKeys<'static> {
    /// The radar system's field names: `node_id`, `token`, `type`, `timestamp`.
    pub const DEFAULT: EnvelopeKeys<'static> = EnvelopeKeys {
        node_id: b"node_id",
        token: b"token",
        msg_type: b"type",
        timestamp: b"timestamp",
        seq: None,
    };
}

impl Default for EnvelopeKeys<'static> {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// A top-level field's value as it appears in the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawValue<'a> {
    /// The value's bytes exactly as in the input (quotes included for strings). Only ever built
    /// by the scanner, so it is always one valid JSON value.
    raw: &'a [u8],
}

impl<'a> RawValue<'a> {
    /// The raw bytes of the JSON value token (quotes included for strings, the whole text for
    /// arrays and objects).
    #[inline]
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// Whether the value is a JSON string.
    #[inline]
    pub fn is_string(&self) -> bool {
        self.raw.first() == Some(&b'"')
    }

    /// The string's bytes between the quotes, still escaped; `None` when not a string.
    #[inline]
    fn content(&self) -> Option<&'a [u8]> {
        match self.raw {
            [b'"', content @ .., b'"'] => Some(content),
            _ => None,
        }
    }

    /// The string's content, unescaped (Cow::Borrowed when there are no escapes); None when not a string.
    ///
    /// A lone surrogate escape (`\ud800`) becomes U+FFFD.
    pub fn as_str(&self) -> Option<Cow<'a, str>> {
        let content = self.content()?;
        if memchr::memchr(b'\\', content).is_none() {
            // The scanner validated the UTF-8; this re-check is cheap and keeps us free of `unsafe`.
            return match std::str::from_utf8(content) {
                Ok(s) => Some(Cow::Borrowed(s)),
                Err(_) => Some(String::from_utf8_lossy(content)),
            };
        }
        let mut out = Vec::with_capacity(content.len());
        unescape_each(content, |piece| {
            match piece {
                Piece::Bytes(b) => out.extend_from_slice(b),
                Piece::Char(c) => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
                Piece::LoneSurrogate => out.extend_from_slice("\u{FFFD}".as_bytes()),
            }
            true
        });
        Some(match String::from_utf8(out) {
            Ok(s) => Cow::Owned(s),
            Err(e) => Cow::Owned(String::from_utf8_lossy(e.as_bytes()).into_owned()),
        })
    }

    /// Cheap equality of a string value with `s` without allocating when it has no escapes.
    ///
    /// False when the value is not a string. Never allocates, escapes or not; a lone surrogate
    /// escape never equals anything.
    #[inline]
    pub fn str_eq(&self, s: &str) -> bool {
        match self.content() {
            Some(content) => unescaped_eq(content, s.as_bytes()),
            None => false,
        }
    }
}

/// The top-level envelope fields of a frame; `None` when the field is absent.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// The value of the `node_id` key (any JSON type).
    pub node_id: Option<RawValue<'a>>,
    /// The value of the `token` key (any JSON type).
    pub token: Option<RawValue<'a>>,
    /// The value of the `type` key (any JSON type).
    pub msg_type: Option<RawValue<'a>>,
    /// The value of the `timestamp` key (any JSON type).
    pub timestamp: Option<RawValue<'a>>,
    /// The value of the `seq` key, when [`EnvelopeKeys::seq`] names one.
    pub seq: Option<RawValue<'a>>,
}

/// Why a frame is not acceptable JSON.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone, Copy)]
pub enum JsonError {
    /// not UTF-8
    #[error("frame is not valid UTF-8")]
    InvalidUtf8,
    /// syntax error at byte offset
    #[error("JSON syntax error at byte {offset}")]
    Syntax {
        /// Offset of the first offending byte (the input length for an unexpected end).
        offset: usize,
    },
    /// nesting deeper than the limit
    #[error("JSON nested deeper than {max_depth} levels")]
    TooDeep {
        /// The limit that was exceeded.
        max_depth: usize,
    },
    /// valid JSON but the top level is not an object
    #[error("JSON frame is not an object")]
    NotAnObject,
    /// empty or whitespace-only input
    #[error("empty frame")]
    Empty,
}

/// Validates the whole frame as one JSON value that must be an object, and returns the top-level envelope fields.
///
/// Keys are matched after unescaping (a key written with \u escapes still matches, slow path ok).
/// Duplicate keys: last one wins (as Python's json and JavaScript do). Leading/trailing JSON
/// whitespace allowed; anything after the value is a syntax error. A field's value may be of any
/// JSON type; check it with [`RawValue::is_string`]. Never allocates unless `max_depth > 252`
/// and the input nests deeper than that.
pub fn scan_envelope<'a>(
    input: &'a [u8],
    keys: &EnvelopeKeys<'_>,
    max_depth: usize,
) -> Result<Envelope<'a>, JsonError> {
    let (first, env) = scan::<true>(input, &KeyMatcher::new(keys), max_depth)?;
    if first == b'{' {
        Ok(env)
    } else {
        Err(JsonError::NotAnObject)
    }
}

/// Validates that `input` is exactly one JSON value of any type (used by sinks to decide whether a frame can be embedded verbatim).
pub fn validate(input: &[u8], max_depth: usize) -> Result<(), JsonError> {
    scan::<false>(input, &KeyMatcher::NONE, max_depth).map(|_| ())
}

// ---------------------------------------------------------------------------------------------
// The scanner

/// `u64` with every byte set to `b`.
const fn splat(b: u8) -> u64 {
    u64::from_ne_bytes([b; 8])
}
const LO: u64 = splat(0x01);
const HI: u64 = splat(0x80);

/// The byte at `i`, or 0 past the end. A 0 byte is never valid where the scanner looks, so the
/// end of input needs no separate branch (and raw NUL is a control character inside strings).
#[inline(always)]
fn at(input: &[u8], i: usize) -> u8 {
    match input.get(i) {
        Some(&b) => b,
        None => 0,
    }
}

#[inline(always)]
fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\n' | b'\r' | b'\t')
}

#[inline(always)]
fn skip_ws(input: &[u8], mut i: usize) -> usize {
    // Compact JSON has no whitespace: one comparison decides (every whitespace byte is <= ' ').
    if at(input, i) > b' ' {
        return i;
    }
    while is_ws(at(input, i)) {
        i += 1;
    }
    i
}

#[inline(always)]
fn syntax(offset: usize) -> JsonError {
    JsonError::Syntax { offset }
}

/// UTF-8 state of one scan. ASCII-only frames (the norm) never pay for a UTF-8 pass: string
/// bodies are checked for bytes >= 0x80 as they are skipped, and the first such byte triggers one
/// SIMD validation of the rest of the input (everything before it is known to be ASCII, since
/// outside strings only ASCII is accepted). After that `hi_mask` is 0 and high bytes are ordinary.
struct Utf8 {
    hi_mask: u64,
}

impl Utf8 {
    /// Called at the first non-ASCII byte of the input, at offset `p`.
    #[cold]
    #[inline(never)]
    fn validate_rest(&mut self, input: &[u8], p: usize) -> Result<(), JsonError> {
        match simdutf8::basic::from_utf8(input.get(p..).unwrap_or_default()) {
            Ok(_) => {
                self.hi_mask = 0;
                Ok(())
            }
            Err(_) => Err(JsonError::InvalidUtf8),
        }
    }
}

/// Per 8-byte word, a mask whose lowest set bit (if any) is the high bit of the first byte that is
/// `"`, `\`, a control character < 0x20, or (while `hi_mask` is set) >= 0x80. Each term may have
/// false positives only *above* a true one (borrow propagation), so the lowest bit is exact.
#[inline(always)]
fn special_mask(x: u64, hi_mask: u64) -> u64 {
    let q = x ^ splat(b'"');
    let bs = x ^ splat(b'\\');
    let quote = q.wrapping_sub(LO) & !q;
    let backslash = bs.wrapping_sub(LO) & !bs;
    let control = x.wrapping_sub(splat(0x20)) & !x;
    ((quote | backslash | control) & HI) | (x & hi_mask)
}

/// The 8 bytes at `i` as a little-endian word, if there are 8.
#[inline(always)]
fn word(input: &[u8], i: usize) -> Option<u64> {
    match input.get(i..) {
        Some(s) => s.first_chunk::<8>().map(|w| u64::from_le_bytes(*w)),
        None => None,
    }
}

/// Skips a string body. `i` is just past the opening quote. Returns the offset just past the
/// closing quote and whether the string contains escapes.
///
/// The scan is mostly latency-bound (each token's end feeds the next token's start), so the
/// common case, a short plain string ending within the first word, keeps only the quote search on
/// that dependency chain; the check for escapes, control and non-ASCII bytes before the quote is
/// a well-predicted branch beside it (measured: ~15% faster on short strings than one combined
/// mask).
#[inline(always)]
fn scan_string(input: &[u8], mut i: usize, utf8: &mut Utf8) -> Result<(usize, bool), JsonError> {
    // Word by word while there is neither a quote nor a special byte: keys and values of
    // telemetry (`"timestamp"`, a 19-digit id) are often longer than one word, and an
    // out-of-line call per such string cost more than the loop.
    while let Some(x) = word(input, i) {
        let q = x ^ splat(b'"');
        let quote = q.wrapping_sub(LO) & !q & HI;
        let bs = x ^ splat(b'\\');
        let bad = ((bs.wrapping_sub(LO) & !bs) | (x.wrapping_sub(splat(0x20)) & !x)) & HI
            | (x & utf8.hi_mask);
        if quote != 0 {
            // Bits below the first quote's bit 7: the bytes before it (plus its low bits).
            let before = (quote & quote.wrapping_neg()) - 1;
            if bad & before == 0 {
                return Ok((i + (quote.trailing_zeros() / 8) as usize + 1, false));
            }
            break;
        }
        if bad != 0 {
            break;
        }
        i += 8;
    }
    scan_string_loop(input, i, utf8)
}

/// [`scan_string`] for strings that are long or contain escapes, control or non-ASCII bytes.
#[inline(never)]
fn scan_string_loop(
    input: &[u8],
    mut i: usize,
    utf8: &mut Utf8,
) -> Result<(usize, bool), JsonError> {
    let mut escaped = false;
    loop {
        // 32 bytes at a time over long runs of ordinary bytes (one bounds check, four independent
        // masks), then a word at a time to find the special byte.
        while let Some(block) = input.get(i..).and_then(|s| s.first_chunk::<32>()) {
            let (words, _) = block.as_chunks::<8>();
            let m = words.iter().fold(0, |m, w| {
                m | special_mask(u64::from_le_bytes(*w), utf8.hi_mask)
            });
            if m != 0 {
                break;
            }
            i += 32;
        }
        while let Some(word) = input.get(i..).and_then(|s| s.first_chunk::<8>()) {
            let m = special_mask(u64::from_le_bytes(*word), utf8.hi_mask);
            if m != 0 {
                i += (m.trailing_zeros() / 8) as usize;
                break;
            }
            i += 8;
        }
        // At a special byte, or fewer than 8 bytes left.
        match at(input, i) {
            b'"' => return Ok((i + 1, escaped)),
            b'\\' => {
                escaped = true;
                i = scan_escape(input, i + 1)?;
            }
            0x00..=0x1f => return Err(syntax(i)),
            0x80..=0xff => {
                if utf8.hi_mask != 0 {
                    utf8.validate_rest(input, i)?;
                }
                i += 1;
            }
            _ => i += 1,
        }
    }
}

/// Checks one escape; `i` is just past the backslash. Returns the offset past the escape.
#[inline(always)]
fn scan_escape(input: &[u8], i: usize) -> Result<usize, JsonError> {
    match at(input, i) {
        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Ok(i + 1),
        b'u' => {
            for j in i + 1..i + 5 {
                if !at(input, j).is_ascii_hexdigit() {
                    return Err(syntax(j));
                }
            }
            Ok(i + 5)
        }
        _ => Err(syntax(i)),
    }
}

/// The number of consecutive ASCII digits at `i`, 8 at a time.
#[inline(always)]
fn digit_run(input: &[u8], i: usize) -> usize {
    let mut n = 0;
    while let Some(word) = input.get(i + n..).and_then(|s| s.first_chunk::<8>()) {
        // Digits become 0..=9. A byte is flagged if it is >= 0x0A (the add sets its high bit) or
        // >= 0x80; carries out of flagged bytes only disturb higher bytes, so the lowest flag is
        // exact.
        let t = u64::from_le_bytes(*word) ^ splat(b'0');
        let m = (t.wrapping_add(splat(0x76)) | t) & HI;
        if m != 0 {
            return n + (m.trailing_zeros() / 8) as usize;
        }
        n += 8;
    }
    while at(input, i + n).is_ascii_digit() {
        n += 1;
    }
    n
}

/// Skips a number (RFC 8259 grammar); `i` is just past its optional minus sign. What follows
/// the number is checked by the caller, so `012` fails there, at the `1`.
///
/// Fast path: a number of at most 7 bytes without exponent (`0`, `-27.99`, `40.46`) is found
/// from one word and its digit mask; anything else (longer, exponent, errors) takes the slow path.
#[inline(always)]
fn scan_number(input: &[u8], i: usize) -> Result<usize, JsonError> {
    if let Some(x) = word(input, i) {
        let t = x ^ splat(b'0');
        // Exact for every byte: a byte is a digit iff it became 0..=9.
        let nondigit = ((t & splat(0x7f)).wrapping_add(splat(0x76)) | t) & HI;
        if nondigit != 0 {
            // Integer part: bytes 0..p.
            let p = nondigit.trailing_zeros() / 8;
            let c = (x >> (8 * p)) as u8;
            // Leading zero and empty integer part go to the slow path (which reports them).
            let mut ok = p != 0 && (x as u8 != b'0' || p == 1);
            let mut end = p;
            if c == b'.' {
                let rest = nondigit & (nondigit - 1);
                end = rest.trailing_zeros() / 8;
                ok &= rest != 0 && end > p + 1;
            }
            // An exponent goes to the slow path.
            // (`end` is 8 only when `ok` is already false.)
            ok &= ((x.wrapping_shr(8 * end) as u8) | 0x20) != b'e';
            if ok {
                return Ok(i + end as usize);
            }
        } else if let Some(y) = word(input, i + 8) {
            // 8 digits and more: an integer of 9 to 15 digits (a timestamp in ms or us) ends in
            // the second word; a fraction, an exponent or a leading zero go to the slow path.
            let t = y ^ splat(b'0');
            let nondigit = ((t & splat(0x7f)).wrapping_add(splat(0x76)) | t) & HI;
            let p = nondigit.trailing_zeros() / 8;
            let c = y.wrapping_shr(8 * p) as u8;
            if nondigit != 0 && x as u8 != b'0' && c != b'.' && c | 0x20 != b'e' {
                return Ok(i + 8 + p as usize);
            }
        }
    }
    scan_number_slow(input, i)
}

/// [`scan_number`] for long numbers, numbers with an exponent, and errors.
#[inline(never)]
fn scan_number_slow(input: &[u8], mut i: usize) -> Result<usize, JsonError> {
    let n = digit_run(input, i);
    if n == 0 {
        return Err(syntax(i));
    }
    if n > 1 && at(input, i) == b'0' {
        return Err(syntax(i + 1));
    }
    i += n;
    if at(input, i) == b'.' {
        i += 1;
        let n = digit_run(input, i);
        if n == 0 {
            return Err(syntax(i));
        }
        i += n;
    }
    if at(input, i) | 0x20 == b'e' {
        i += 1;
        if matches!(at(input, i), b'+' | b'-') {
            i += 1;
        }
        let n = digit_run(input, i);
        if n == 0 {
            return Err(syntax(i));
        }
        i += n;
    }
    Ok(i)
}

/// Skips `true`, `false` or `null`; `i` is at its first byte, which the caller matched.
#[inline(always)]
fn scan_literal(input: &[u8], i: usize, lit: &[u8]) -> Result<usize, JsonError> {
    let end = i + lit.len();
    if input.get(i..end) == Some(lit) {
        return Ok(end);
    }
    // Report the first differing byte.
    let mut j = i;
    while at(input, j) == lit[j - i] {
        j += 1;
    }
    Err(syntax(j))
}

/// Byte equality for the short strings of an envelope (keys, node names,
/// timestamps), inline: a call into libc's memcmp per comparison showed up
/// at several percent of a node frame's cost.
#[inline(always)]
pub(crate) fn short_eq(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    match n {
        0 => true,
        // Bytes 0, n/2 and n-1 cover every byte of 1 to 3.
        1..=3 => a[0] == b[0] && a[n / 2] == b[n / 2] && a[n - 1] == b[n - 1],
        // Two overlapping 4-byte loads.
        4..=7 => {
            a.first_chunk::<4>() == b.first_chunk::<4>()
                && a.last_chunk::<4>() == b.last_chunk::<4>()
        }
        // Whole words, then the last word (overlapping the one before).
        _ => {
            let (a8, _) = a.as_chunks::<8>();
            let (b8, _) = b.as_chunks::<8>();
            a8.iter()
                .zip(b8)
                .all(|(x, y)| u64::from_ne_bytes(*x) == u64::from_ne_bytes(*y))
                && a.last_chunk::<8>() == b.last_chunk::<8>()
        }
    }
}

// Field bits, in `KeyMatcher::keys` order.
const F_NODE_ID: u8 = 1;
const F_TOKEN: u8 = 2;
const F_TYPE: u8 = 4;
const F_TIMESTAMP: u8 = 8;
const F_SEQ: u8 = 16;

/// A cheap fingerprint of a key: length (mod 256), first and last byte. Equal keys have equal
/// tags.
#[inline(always)]
fn key_tag(k: &[u8]) -> u32 {
    let first = k.first().copied().unwrap_or(0);
    let last = k.last().copied().unwrap_or(0);
    u32::from(k.len() as u8) | (u32::from(first) << 8) | (u32::from(last) << 16)
}

/// The envelope keys with their tags. Built once per call (a few instructions, independent of
/// the input); a member key is compared in full only when its tag matches.
struct KeyMatcher<'k> {
    /// node_id, token, type, timestamp, seq: bit `n` of a match result is `keys[n]`.
    keys: [&'k [u8]; 5],
    tags: [u32; 5],
}

impl<'k> KeyMatcher<'k> {
    const NONE: KeyMatcher<'static> = KeyMatcher {
        keys: [&[]; 5],
        tags: [u32::MAX; 5],
    };

    #[inline(always)]
    fn new(keys: &EnvelopeKeys<'k>) -> Self {
        let seq = keys.seq;
        let keys = [
            keys.node_id,
            keys.token,
            keys.msg_type,
            keys.timestamp,
            seq.unwrap_or_default(),
        ];
        let mut tags = keys.map(key_tag);
        if seq.is_none() {
            // A tag no key has (a length byte of 0xff with more bits set):
            // the seq slot never matches.
            tags[4] = u32::MAX;
        }
        KeyMatcher { keys, tags }
    }

    /// Which envelope fields the key `input[start..end]` (still escaped if `escaped`) names; a
    /// bit set, since a user may configure the same name for two fields.
    #[inline(always)]
    fn matches(&self, input: &[u8], start: usize, end: usize, escaped: bool) -> u8 {
        let content = &input[start..end];
        if escaped {
            return self.matches_escaped(content);
        }
        let tag = key_tag(content);
        let mut candidates = 0;
        for (f, &t) in self.tags.iter().enumerate() {
            candidates |= u8::from(t == tag) << f;
        }
        if candidates == 0 {
            return 0;
        }
        self.verify(content, candidates)
    }

    /// Full comparison for the fields whose tags matched.
    #[inline(never)]
    fn verify(&self, content: &[u8], candidates: u8) -> u8 {
        let mut m = 0;
        for (f, key) in self.keys.iter().enumerate() {
            if candidates & (1 << f) != 0 && short_eq(content, key) {
                m |= 1 << f;
            }
        }
        m
    }

    /// [`Self::matches`] for a key written with escapes.
    #[cold]
    #[inline(never)]
    fn matches_escaped(&self, content: &[u8]) -> u8 {
        let mut m = 0;
        for (f, key) in self.keys.iter().enumerate() {
            // (A slot that is not looked for has the tag no key has.)
            m |= u8::from(self.tags[f] != u32::MAX && unescaped_eq(content, key)) << f;
        }
        m
    }
}

/// Stores `raw` in every envelope field named in `fields` (not 0). Out of line, so that the
/// envelope stays in memory instead of taking registers from the scan loop.
#[inline(never)]
fn commit<'a>(env: &mut Envelope<'a>, fields: u8, raw: &'a [u8]) {
    let v = Some(RawValue { raw });
    if fields & F_NODE_ID != 0 {
        env.node_id = v;
    }
    if fields & F_TOKEN != 0 {
        env.token = v;
    }
    if fields & F_TYPE != 0 {
        env.msg_type = v;
    }
    if fields & F_TIMESTAMP != 0 {
        env.timestamp = v;
    }
    if fields & F_SEQ != 0 {
        env.seq = v;
    }
}

/// The one scanner behind [`scan_envelope`] and [`validate`]: validates `input` as exactly one
/// JSON value and, when `CAPTURE`, collects the top-level object's envelope fields.
/// Returns the first byte of the top-level value (so the caller can tell an object) and the
/// envelope (empty unless the top level is an object).
fn scan<'a, const CAPTURE: bool>(
    input: &'a [u8],
    keys: &KeyMatcher<'_>,
    max_depth: usize,
) -> Result<(u8, Envelope<'a>), JsonError> {
    let mut utf8 = Utf8 { hi_mask: HI };
    match scan_inner::<CAPTURE>(input, keys, max_depth, &mut utf8) {
        Ok(r) => Ok(r),
        // Invalid UTF-8 anywhere wins over other errors. If `hi_mask` is 0 the input was already
        // found valid (ASCII prefix + validated rest).
        Err(e) if e != JsonError::InvalidUtf8 && utf8.hi_mask != 0 => {
            if simdutf8::basic::from_utf8(input).is_err() {
                Err(JsonError::InvalidUtf8)
            } else {
                Err(e)
            }
        }
        Err(e) => Err(e),
    }
}

/// The top level. An object is walked here, member by member, so that the envelope bookkeeping
/// (key matching, value start, commit) lives only in this loop; member values and any other
/// top-level value go to [`scan_value`].
#[inline(always)]
fn scan_inner<'a, const CAPTURE: bool>(
    input: &'a [u8],
    keys: &KeyMatcher<'_>,
    max_depth: usize,
    utf8: &mut Utf8,
) -> Result<(u8, Envelope<'a>), JsonError> {
    let mut env = Envelope::default();
    let mut i = skip_ws(input, 0);
    let first = match input.get(i) {
        Some(&b) => b,
        None => return Err(JsonError::Empty),
    };
    if first == b'{' {
        if max_depth == 0 {
            return Err(JsonError::TooDeep { max_depth });
        }
        i = skip_ws(input, i + 1);
        if at(input, i) == b'}' {
            i += 1;
        } else {
            loop {
                // A member: key, colon, value at depth 1.
                if at(input, i) != b'"' {
                    return Err(syntax(i));
                }
                let (end, escaped) = scan_string(input, i + 1, utf8)?;
                let fields = if CAPTURE {
                    keys.matches(input, i + 1, end - 1, escaped)
                } else {
                    0
                };
                i = skip_ws(input, end);
                if at(input, i) != b':' {
                    return Err(syntax(i));
                }
                i = skip_ws(input, i + 1);
                let start = i;
                i = scan_value(input, i, 1, max_depth, utf8)?;
                if CAPTURE && fields != 0 {
                    commit(&mut env, fields, &input[start..i]);
                }
                i = skip_ws(input, i);
                match at(input, i) {
                    b',' => i = skip_ws(input, i + 1),
                    b'}' => {
                        i += 1;
                        break;
                    }
                    _ => return Err(syntax(i)),
                }
            }
        }
    } else {
        i = scan_value(input, i, 0, max_depth, utf8)?;
    }
    i = skip_ws(input, i);
    if i != input.len() {
        return Err(syntax(i));
    }
    Ok((first, env))
}

/// Skips a string, number or literal at `i`; `c` is the byte at `i`. Anything else is an error.
#[inline(always)]
fn scan_scalar(input: &[u8], i: usize, c: u8, utf8: &mut Utf8) -> Result<usize, JsonError> {
    match c {
        b'"' => Ok(scan_string(input, i + 1, utf8)?.0),
        b'0'..=b'9' => scan_number(input, i),
        b'-' => scan_number(input, i + 1),
        b't' => scan_literal(input, i, b"true"),
        b'f' => scan_literal(input, i, b"false"),
        b'n' => scan_literal(input, i, b"null"),
        _ => Err(syntax(i)),
    }
}

/// Skips the value at `i` (whitespace skipped) whose container is at `depth` (0 at the top
/// level). Returns the offset just past it.
#[inline(always)]
fn scan_value(
    input: &[u8],
    i: usize,
    depth: usize,
    max_depth: usize,
    utf8: &mut Utf8,
) -> Result<usize, JsonError> {
    match at(input, i) {
        b'[' => scan_array(input, i, depth, max_depth, utf8),
        b'{' => scan_container(input, i, depth, max_depth, utf8),
        c => scan_scalar(input, i, c, utf8),
    }
}

/// Full 64-bit kind registers of [`scan_container`] for nesting beyond 63 levels: 3 inline
/// (so up to 252 levels never allocate), then the heap.
struct Spill {
    inline: [u64; 3],
    heap: Vec<u64>,
    len: usize,
}

impl Spill {
    #[cold]
    #[inline(never)]
    fn push(&mut self, word: u64) {
        match self.inline.get_mut(self.len) {
            Some(slot) => *slot = word,
            None => self.heap.push(word),
        }
        self.len += 1;
    }

    #[cold]
    #[inline(never)]
    fn pop(&mut self) -> Option<u64> {
        self.len = self.len.checked_sub(1)?;
        match self.inline.get(self.len) {
            Some(&word) => Some(word),
            None => self.heap.pop(),
        }
    }
}

/// Skips the array at `i`, which sits at depth `outer + 1`. Arrays of scalars (lists of
/// numbers, the usual shape of telemetry) are walked here without the container machinery; the
/// first nested array or object hands the rest over to [`walk`], which goes on from there.
/// Same checks, in the same order, as [`walk`] would make.
#[inline(always)]
fn scan_array(
    input: &[u8],
    i: usize,
    outer: usize,
    max_depth: usize,
    utf8: &mut Utf8,
) -> Result<usize, JsonError> {
    let limit = max_depth.saturating_sub(outer);
    if limit == 0 {
        return Err(JsonError::TooDeep { max_depth });
    }
    let mut i = skip_ws(input, i + 1);
    let mut c = at(input, i);
    if c == b']' {
        return Ok(i + 1);
    }
    loop {
        if c == b'"' {
            i = scan_string(input, i + 1, utf8)?.0;
        } else if c.wrapping_sub(b'0') < 10 {
            i = scan_number(input, i)?;
        } else if c == b'[' || c == b'{' {
            // One array open (bit 0 clear) above the sentinel.
            return walk(input, i, c, 0b10, limit, max_depth, utf8);
        } else {
            i = scan_scalar(input, i, c, utf8)?;
        }
        c = at(input, i);
        if is_ws(c) {
            i = skip_ws(input, i);
            c = at(input, i);
        }
        match c {
            b',' => {
                i = skip_ws(input, i + 1);
                c = at(input, i);
            }
            b']' => return Ok(i + 1),
            _ => return Err(syntax(i)),
        }
    }
}

/// Skips the array or object at `i`, which sits at depth `outer + 1`, with everything nested in
/// it.
#[inline(never)]
fn scan_container(
    input: &[u8],
    i: usize,
    outer: usize,
    max_depth: usize,
    utf8: &mut Utf8,
) -> Result<usize, JsonError> {
    let limit = max_depth.saturating_sub(outer);
    walk(input, i, at(input, i), 1, limit, max_depth, utf8)
}

/// Skips values until the containers open in `stack` (and any opened meanwhile) are closed;
/// `i` is at the first byte `c` of a value (whitespace skipped) and `limit` is how many levels
/// may be open at once. Non-recursive: the kinds of the open containers form a bit stack in one
/// register (innermost in bit 0, 1 = object, above them a sentinel 1 bit); 63 levels fit, deeper
/// nesting moves full registers to a [`Spill`] stack (only reachable with `max_depth > 63`).
#[inline(never)]
fn walk(
    input: &[u8],
    mut i: usize,
    mut c: u8,
    mut stack: u64,
    limit: usize,
    max_depth: usize,
    utf8: &mut Utf8,
) -> Result<usize, JsonError> {
    let mut spill = Spill {
        inline: [0; 3],
        heap: Vec::new(),
        len: 0,
    };

    'value: loop {
        // `i` is at the first byte `c` of a value (whitespace skipped).
        if c == b'"' {
            i = scan_string(input, i + 1, utf8)?.0;
        } else if c.wrapping_sub(b'0') < 10 {
            i = scan_number(input, i)?;
        } else if c == b'[' || c == b'{' {
            // Levels open once this one is.
            let open = 64 - stack.leading_zeros() as usize + 63 * spill.len;
            if open > limit {
                return Err(JsonError::TooDeep { max_depth });
            }
            if stack >> 63 != 0 {
                spill.push(stack);
                stack = 1;
            }
            let object = c == b'{';
            stack = (stack << 1) | u64::from(object);
            i = skip_ws(input, i + 1);
            c = at(input, i);
            if object {
                if c != b'}' {
                    i = scan_key(input, i, c, utf8)?;
                    c = at(input, i);
                    continue 'value;
                }
            } else if c != b']' {
                continue 'value;
            }
            // Empty container: fall through with its closing bracket still to consume.
        } else {
            i = scan_scalar(input, i, c, utf8)?;
        }

        // After a value (or at the close of an empty container): close containers until a comma
        // leads to the next value.
        loop {
            c = at(input, i);
            if is_ws(c) {
                i = skip_ws(input, i);
                c = at(input, i);
            }
            if c == b',' {
                i = skip_ws(input, i + 1);
                c = at(input, i);
                if stack & 1 != 0 {
                    i = scan_key(input, i, c, utf8)?;
                    c = at(input, i);
                }
                continue 'value;
            }
            // `}` is `]` + 0x20.
            if c != b']' | ((stack as u8 & 1) << 5) {
                return Err(syntax(i));
            }
            i += 1;
            stack >>= 1;
            if stack == 1 {
                match spill.pop() {
                    Some(s) => stack = s,
                    None => return Ok(i),
                }
            }
        }
    }
}

/// Skips an object member's key and colon; `i` is at the key's opening quote `c` (whitespace
/// skipped). Returns the offset of the member's value, whitespace skipped.
#[inline(always)]
fn scan_key(input: &[u8], i: usize, c: u8, utf8: &mut Utf8) -> Result<usize, JsonError> {
    if c != b'"' {
        return Err(syntax(i));
    }
    let (end, _) = scan_string(input, i + 1, utf8)?;
    let i = skip_ws(input, end);
    if at(input, i) != b':' {
        return Err(syntax(i));
    }
    Ok(skip_ws(input, i + 1))
}

// ---------------------------------------------------------------------------------------------
// Unescaping (slow path: escaped keys, escaped string values)

/// One piece of an unescaped string.
enum Piece<'s> {
    /// Bytes copied as they are (UTF-8).
    Bytes(&'s [u8]),
    /// A character decoded from a `\u` escape (or pair).
    Char(char),
    /// A `\u` escape of a UTF-16 surrogate without its partner.
    LoneSurrogate,
}

/// The value of 4 hex digits, if they are.
fn hex4(b: Option<&[u8]>) -> Option<u32> {
    let b = b?;
    if b.len() != 4 {
        return None;
    }
    let mut v = 0u32;
    for &c in b {
        v = v * 16 + (c as char).to_digit(16)?;
    }
    Some(v)
}

/// Feeds the unescaped pieces of a validated string body to `f` until it returns false. Returns
/// whether every piece was fed.
fn unescape_each<'s>(content: &'s [u8], mut f: impl FnMut(Piece<'s>) -> bool) -> bool {
    let mut i = 0;
    while i < content.len() {
        let rest = &content[i..];
        let n = memchr::memchr(b'\\', rest).unwrap_or(rest.len());
        if n > 0 {
            if !f(Piece::Bytes(&rest[..n])) {
                return false;
            }
            i += n;
            continue;
        }
        // `content[i]` is a backslash.
        let simple: &'static [u8] = match content.get(i + 1) {
            Some(b'"') => b"\"",
            Some(b'\\') => b"\\",
            Some(b'/') => b"/",
            Some(b'b') => b"\x08",
            Some(b'f') => b"\x0c",
            Some(b'n') => b"\n",
            Some(b'r') => b"\r",
            Some(b't') => b"\t",
            _ => b"",
        };
        let piece = if !simple.is_empty() {
            i += 2;
            Piece::Bytes(simple)
        } else if let Some(hi) = hex4(content.get(i + 2..i + 6)) {
            i += 6;
            if (0xD800..0xDC00).contains(&hi) {
                let lo = if content.get(i) == Some(&b'\\') && content.get(i + 1) == Some(&b'u') {
                    hex4(content.get(i + 2..i + 6)).filter(|lo| (0xDC00..0xE000).contains(lo))
                } else {
                    None
                };
                match lo {
                    Some(lo) => {
                        i += 6;
                        let c = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
                        char::from_u32(c).map_or(Piece::LoneSurrogate, Piece::Char)
                    }
                    None => Piece::LoneSurrogate,
                }
            } else {
                char::from_u32(hi).map_or(Piece::LoneSurrogate, Piece::Char)
            }
        } else {
            // Unreachable for scanned input; pass the backslash through.
            i += 1;
            Piece::Bytes(b"\\")
        };
        if !f(piece) {
            return false;
        }
    }
    true
}

/// Whether the string body `content` (possibly escaped) unescapes to exactly `target`.
#[inline]
fn unescaped_eq(content: &[u8], target: &[u8]) -> bool {
    // Each escape is longer than what it stands for, so a body as long as the target equals it
    // exactly when it has no escape and the same bytes (then the target has no backslash
    // either); a shorter body never does. Only a longer body needs unescaping: no search for a
    // backslash on the common path.
    if content.len() == target.len() {
        return short_eq(content, target) && target.iter().all(|&b| b != b'\\');
    }
    if target.len() > content.len() {
        return false;
    }
    let mut rest = target;
    let mut buf = [0u8; 4];
    unescape_each(content, |piece| {
        let bytes: &[u8] = match piece {
            Piece::Bytes(b) => b,
            Piece::Char(c) => c.encode_utf8(&mut buf).as_bytes(),
            Piece::LoneSurrogate => return false,
        };
        match rest.strip_prefix(bytes) {
            Some(r) => {
                rest = r;
                true
            }
            None => false,
        }
    }) && rest.is_empty()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
