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
//!   recursion: nesting is tracked with a bit stack that lives on the stack up to 256 levels and
//!   spills to the heap only beyond that.

use std::borrow::Cow;

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
}

impl EnvelopeKeys<'static> {
    /// The radar system's field names: `node_id`, `token`, `type`, `timestamp`.
    pub const DEFAULT: EnvelopeKeys<'static> = EnvelopeKeys {
        node_id: b"node_id",
        token: b"token",
        msg_type: b"type",
        timestamp: b"timestamp",
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
/// JSON type; check it with [`RawValue::is_string`]. Never allocates unless `max_depth > 256`
/// and the input nests deeper than 256.
pub fn scan_envelope<'a>(
    input: &'a [u8],
    keys: &EnvelopeKeys<'_>,
    max_depth: usize,
) -> Result<Envelope<'a>, JsonError> {
    let (first, env) = scan(input, Some(keys), max_depth)?;
    if first == b'{' {
        Ok(env)
    } else {
        Err(JsonError::NotAnObject)
    }
}

/// Validates that `input` is exactly one JSON value of any type (used by sinks to decide whether a frame can be embedded verbatim).
pub fn validate(input: &[u8], max_depth: usize) -> Result<(), JsonError> {
    scan(input, None, max_depth).map(|_| ())
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

/// Skips a string body. `i` is just past the opening quote. Returns the offset just past the
/// closing quote and whether the string contains escapes.
#[inline(always)]
fn scan_string(input: &[u8], mut i: usize, utf8: &mut Utf8) -> Result<(usize, bool), JsonError> {
    let mut escaped = false;
    loop {
        // Word at a time over ordinary bytes.
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

/// Skips a number (RFC 8259 grammar); `i` is at its first byte (`-` or a digit). What follows the
/// number is checked by the caller, so `012` fails there, at the `1`.
#[inline(always)]
fn scan_number(input: &[u8], mut i: usize) -> Result<usize, JsonError> {
    if at(input, i) == b'-' {
        i += 1;
    }
    match at(input, i) {
        b'0' => i += 1,
        b'1'..=b'9' => {
            i += 1;
            while at(input, i).is_ascii_digit() {
                i += 1;
            }
        }
        _ => return Err(syntax(i)),
    }
    if at(input, i) == b'.' {
        i += 1;
        if !at(input, i).is_ascii_digit() {
            return Err(syntax(i));
        }
        i += 1;
        while at(input, i).is_ascii_digit() {
            i += 1;
        }
    }
    if at(input, i) | 0x20 == b'e' {
        i += 1;
        if matches!(at(input, i), b'+' | b'-') {
            i += 1;
        }
        if !at(input, i).is_ascii_digit() {
            return Err(syntax(i));
        }
        i += 1;
        while at(input, i).is_ascii_digit() {
            i += 1;
        }
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

/// Whether each open container is an object (bit set) or an array, indexed by depth - 1.
/// The first 256 levels live inline; deeper levels (only reachable with `max_depth > 256`) spill
/// to the heap.
struct Kinds {
    inline: [u64; 4],
    spill: Vec<u64>,
}

impl Kinds {
    #[inline(always)]
    fn new() -> Self {
        Kinds {
            inline: [0; 4],
            spill: Vec::new(),
        }
    }

    /// Records the kind of the container at `depth` (>= 1).
    #[inline(always)]
    fn set(&mut self, depth: usize, object: bool) {
        let bit = depth - 1;
        let word = if bit < 256 {
            &mut self.inline[bit / 64]
        } else {
            self.spill_word(bit)
        };
        let m = 1u64 << (bit % 64);
        if object {
            *word |= m;
        } else {
            *word &= !m;
        }
    }

    #[cold]
    #[inline(never)]
    fn spill_word(&mut self, bit: usize) -> &mut u64 {
        let idx = bit / 64 - 4;
        if self.spill.len() <= idx {
            self.spill.resize(idx + 1, 0);
        }
        &mut self.spill[idx]
    }

    /// Whether the container at `depth` (>= 1) is an object.
    #[inline(always)]
    fn is_object(&self, depth: usize) -> bool {
        let bit = depth - 1;
        let word = if bit < 256 {
            self.inline[bit / 64]
        } else {
            self.spill.get(bit / 64 - 4).copied().unwrap_or(0)
        };
        word & (1 << (bit % 64)) != 0
    }
}

const F_NODE_ID: u8 = 1;
const F_TOKEN: u8 = 2;
const F_TYPE: u8 = 4;
const F_TIMESTAMP: u8 = 8;

/// Which envelope fields the key `content` (still escaped if `escaped`) names; a bit set, since
/// a user may configure the same name for two fields.
#[inline(always)]
fn match_key(content: &[u8], escaped: bool, keys: &EnvelopeKeys<'_>) -> u8 {
    if escaped {
        return match_key_escaped(content, keys);
    }
    let mut m = 0;
    if content == keys.node_id {
        m |= F_NODE_ID;
    }
    if content == keys.token {
        m |= F_TOKEN;
    }
    if content == keys.msg_type {
        m |= F_TYPE;
    }
    if content == keys.timestamp {
        m |= F_TIMESTAMP;
    }
    m
}

#[cold]
#[inline(never)]
fn match_key_escaped(content: &[u8], keys: &EnvelopeKeys<'_>) -> u8 {
    let mut m = 0;
    for (key, flag) in [
        (keys.node_id, F_NODE_ID),
        (keys.token, F_TOKEN),
        (keys.msg_type, F_TYPE),
        (keys.timestamp, F_TIMESTAMP),
    ] {
        if unescaped_eq(content, key) {
            m |= flag;
        }
    }
    m
}

/// Stores `raw` in every envelope field named in `fields`.
#[inline(always)]
fn commit<'a>(env: &mut Envelope<'a>, fields: u8, raw: &'a [u8]) {
    if fields == 0 {
        return;
    }
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
}

/// The one scanner behind [`scan_envelope`] and [`validate`]: validates `input` as exactly one
/// JSON value and, when `keys` is given, collects the top-level object's envelope fields.
/// Returns the first byte of the top-level value (so the caller can tell an object) and the
/// envelope (empty unless the top level is an object).
fn scan<'a>(
    input: &'a [u8],
    keys: Option<&EnvelopeKeys<'_>>,
    max_depth: usize,
) -> Result<(u8, Envelope<'a>), JsonError> {
    let mut utf8 = Utf8 { hi_mask: HI };
    match scan_inner(input, keys, max_depth, &mut utf8) {
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

#[inline(always)]
fn scan_inner<'a>(
    input: &'a [u8],
    keys: Option<&EnvelopeKeys<'_>>,
    max_depth: usize,
    utf8: &mut Utf8,
) -> Result<(u8, Envelope<'a>), JsonError> {
    let mut env = Envelope::default();
    let mut kinds = Kinds::new();
    let mut depth = 0usize;
    // Whether the innermost open container is an object (meaningless at depth 0).
    let mut in_object = false;
    // For the current top-level member: the envelope fields its key names, and where its value
    // starts.
    let mut fields = 0u8;
    let mut value_start = 0usize;

    let mut i = skip_ws(input, 0);
    let first = match input.get(i) {
        Some(&b) => b,
        None => return Err(JsonError::Empty),
    };

    // Parses an object member's key and colon; `$i` is at the key's opening quote (whitespace
    // skipped). Leaves `i` at the member's value, whitespace skipped.
    macro_rules! member {
        () => {{
            if at(input, i) != b'"' {
                return Err(syntax(i));
            }
            let start = i + 1;
            let (end, escaped) = scan_string(input, start, utf8)?;
            let top = depth == 1;
            if top && let Some(keys) = keys {
                fields = match_key(&input[start..end - 1], escaped, keys);
            }
            i = skip_ws(input, end);
            if at(input, i) != b':' {
                return Err(syntax(i));
            }
            i = skip_ws(input, i + 1);
            if top {
                value_start = i;
            }
        }};
    }

    'value: loop {
        // `i` is at the first byte of a value.
        match at(input, i) {
            b'"' => i = scan_string(input, i + 1, utf8)?.0,
            b'-' | b'0'..=b'9' => i = scan_number(input, i)?,
            b'{' => {
                depth += 1;
                if depth > max_depth {
                    return Err(JsonError::TooDeep { max_depth });
                }
                kinds.set(depth, true);
                in_object = true;
                i = skip_ws(input, i + 1);
                if at(input, i) != b'}' {
                    member!();
                    continue 'value;
                }
                // Empty object: fall through to "after a value" with the `}` still to close.
            }
            b'[' => {
                depth += 1;
                if depth > max_depth {
                    return Err(JsonError::TooDeep { max_depth });
                }
                kinds.set(depth, false);
                in_object = false;
                i = skip_ws(input, i + 1);
                if at(input, i) != b']' {
                    continue 'value;
                }
                // Empty array: fall through with the `]` still to close.
            }
            b't' => i = scan_literal(input, i, b"true")?,
            b'f' => i = scan_literal(input, i, b"false")?,
            b'n' => i = scan_literal(input, i, b"null")?,
            _ => return Err(syntax(i)),
        }

        // After a complete value (or at the close of an empty container): close containers until
        // a comma leads to the next value.
        loop {
            if depth == 0 {
                break 'value;
            }
            let end = i;
            i = skip_ws(input, i);
            let c = at(input, i);
            if in_object {
                if c == b',' {
                    if depth == 1 {
                        commit(&mut env, fields, &input[value_start..end]);
                    }
                    i = skip_ws(input, i + 1);
                    member!();
                    continue 'value;
                } else if c == b'}' {
                    // `fields` is 0 unless a member was parsed at depth 1 since the last commit.
                    if depth == 1 {
                        commit(&mut env, fields, &input[value_start..end]);
                    }
                } else {
                    return Err(syntax(i));
                }
            } else if c == b',' {
                i = skip_ws(input, i + 1);
                continue 'value;
            } else if c != b']' {
                return Err(syntax(i));
            }
            // Close the container.
            i += 1;
            depth -= 1;
            if depth > 0 {
                in_object = kinds.is_object(depth);
            }
        }
    }

    i = skip_ws(input, i);
    if i != input.len() {
        return Err(syntax(i));
    }
    Ok((first, env))
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
    if memchr::memchr(b'\\', content).is_none() {
        return content == target;
    }
    // Unescaping never lengthens: each escape is at least as long as what it stands for.
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
mod tests {
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
    fn missing_fields_and_empty_object() {
        let e = env(br#"{"delay":[1,2],"snr":{"node_id":"nested"}}"#).unwrap();
        assert!(e.node_id.is_none() && e.token.is_none());
        assert!(e.msg_type.is_none() && e.timestamp.is_none());
        let e = env(b" {  } ").unwrap();
        assert!(e.node_id.is_none());
    }

    #[test]
    fn non_string_values_any_type() {
        let e = env(br#"{"node_id":3,"token":null,"type":{"a":[1,{"b":2}]},"timestamp":[1, 2 ]}"#)
            .unwrap();
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
        let e = env(
            br#"{"node\u005fid":"ra\u0064ar\"3\"","\u0074oken":"s\/e\\c","type":"\ud83d\ude00"}"#,
        )
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
        let e =
            env("{\"node_id\":\"räd€r😀\",\"x\":\"日本語のテキスト、長い長い文字列\"}".as_bytes())
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
        // Specials at every position relative to the 8-byte words.
        for pad in 0..20 {
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
}
