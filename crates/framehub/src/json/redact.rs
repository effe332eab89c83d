//! Removing top-level members from a JSON object in place: how the token
//! (and any field a listener lists in `redact`) is taken out of a frame
//! before a receiver, a sink or the tap sees it.
//!
//! Everything else in the frame stays byte for byte: the member goes with
//! one neighbouring comma, the whitespace around it stays, so the object
//! is still valid JSON and equal to the original minus that key.

use std::ops::Range;

use super::{HI, JsonError, Utf8, at, scan_string, scan_value, skip_ws, syntax, unescaped_eq};

/// Removes, in place, every top-level member of the object in `frame`
/// whose key (unescaped) is one of `keys`, duplicates included; returns the
/// object's new length (`frame[..len]`).
///
/// `follow` is a span of the frame (a dedup key) to keep pointing at the
/// same bytes: shifted past the cuts before it, or `None` when it was cut.
///
/// `frame` must hold one JSON object (as [`super::scan_envelope`] accepted
/// it); anything else is an error and `frame` may then be partly
/// compacted, so callers check first. Never allocates.
///
/// ```
/// use framehub::json::remove_members;
/// let mut frame = br#"{"node_id":"r3", "token":"s3cret","ts":17}"#.to_vec();
/// let mut ts = Some(39..41);
/// let len = remove_members(&mut frame, &[b"token"], 128, &mut ts).unwrap();
/// assert_eq!(&frame[..len], br#"{"node_id":"r3","ts":17}"#);
/// assert_eq!(&frame[ts.unwrap()], b"17");
/// ```
pub fn remove_members<K: AsRef<[u8]>>(
    frame: &mut [u8],
    keys: &[K],
    max_depth: usize,
    follow: &mut Option<Range<usize>>,
) -> Result<usize, JsonError> {
    let mut utf8 = Utf8 { hi_mask: HI };
    let mut cuts = Compactor {
        write: 0,
        copied: 0,
        follow_shift: 0,
    };
    let mut i = skip_ws(frame, 0);
    if at(frame, i) != b'{' {
        return Err(JsonError::NotAnObject);
    }
    i = skip_ws(frame, i + 1);
    if at(frame, i) == b'}' {
        return Ok(frame.len());
    }
    // Whether a member before this one was kept: the first member kept
    // after removed ones loses its leading comma.
    let mut kept_before = false;
    // Where the comma before the current member is (none for the first).
    let mut comma: Option<usize> = None;
    loop {
        if at(frame, i) != b'"' {
            return Err(syntax(i));
        }
        let key_start = i;
        let (key_end, _) = scan_string(frame, i + 1, &mut utf8)?;
        let content = &frame[key_start + 1..key_end - 1];
        let remove = keys.iter().any(|k| unescaped_eq(content, k.as_ref()));
        i = skip_ws(frame, key_end);
        if at(frame, i) != b':' {
            return Err(syntax(i));
        }
        i = skip_ws(frame, i + 1);
        let value_end = scan_value(frame, i, 1, max_depth, &mut utf8)?;
        match (remove, comma) {
            // The first member: its trailing comma goes with the next kept one.
            (true, None) => cuts.cut(frame, key_start..value_end, follow),
            (true, Some(c)) => cuts.cut(frame, c..value_end, follow),
            (false, Some(c)) if !kept_before => cuts.cut(frame, c..c + 1, follow),
            (false, _) => {}
        }
        kept_before |= !remove;
        i = skip_ws(frame, value_end);
        match at(frame, i) {
            b',' => {
                comma = Some(i);
                i = skip_ws(frame, i + 1);
            }
            b'}' => break,
            _ => return Err(syntax(i)),
        }
    }
    Ok(cuts.finish(frame, follow))
}

/// Compacts the frame as cuts are found, left to right: bytes move only
/// towards the start, below where the scan still reads.
struct Compactor {
    /// Where the next kept byte goes.
    write: usize,
    /// Bytes before this are either moved or cut.
    copied: usize,
    /// Bytes cut before the followed span.
    follow_shift: usize,
}

impl Compactor {
    fn cut(&mut self, frame: &mut [u8], cut: Range<usize>, follow: &mut Option<Range<usize>>) {
        frame.copy_within(self.copied..cut.start, self.write);
        self.write += cut.start - self.copied;
        self.copied = cut.end;
        if let Some(span) = follow {
            if span.start >= cut.end {
                self.follow_shift += cut.len();
            } else if span.end > cut.start {
                *follow = None;
            }
        }
    }

    fn finish(self, frame: &mut [u8], follow: &mut Option<Range<usize>>) -> usize {
        frame.copy_within(self.copied.., self.write);
        if let Some(span) = follow {
            *span = span.start - self.follow_shift..span.end - self.follow_shift;
        }
        self.write + frame.len() - self.copied
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redact(input: &str, keys: &[&str]) -> String {
        let keys: Vec<&[u8]> = keys.iter().map(|k| k.as_bytes()).collect();
        let mut frame = input.as_bytes().to_vec();
        let len = remove_members(&mut frame, &keys, 128, &mut None).expect("an object");
        String::from_utf8(frame[..len].to_vec()).expect("utf8")
    }

    #[test]
    fn first_middle_last_and_only_member() {
        let t = &["token"];
        assert_eq!(redact(r#"{"token":"s","a":1}"#, t), r#"{"a":1}"#);
        assert_eq!(
            redact(r#"{"a":1,"token":"s","b":2}"#, t),
            r#"{"a":1,"b":2}"#
        );
        assert_eq!(redact(r#"{"a":1,"token":"s"}"#, t), r#"{"a":1}"#);
        assert_eq!(redact(r#"{"token":"s"}"#, t), r#"{}"#);
        assert_eq!(redact(r#"{}"#, t), r#"{}"#);
        assert_eq!(
            redact(r#"{"a":{"token":"nested stays"}}"#, t),
            r#"{"a":{"token":"nested stays"}}"#
        );
    }

    #[test]
    fn whitespace_stays_where_it_was() {
        let t = &["token"];
        assert_eq!(
            redact(" { \"token\" : \"s\" , \"a\" : 1 } ", t),
            " {   \"a\" : 1 } "
        );
        assert_eq!(
            redact("{\n  \"a\": 1,\n  \"token\": \"s\",\n  \"b\": [2]\n}", t),
            "{\n  \"a\": 1,\n  \"b\": [2]\n}"
        );
        assert_eq!(
            redact("{ \"a\":1 ,\t\"token\":\"s\"\t}", t),
            "{ \"a\":1 \t}"
        );
    }

    #[test]
    fn duplicates_escaped_keys_and_several_fields_all_go() {
        assert_eq!(
            redact(
                r#"{"token":"1","a":1,"\u0074oken":"2","token":"3"}"#,
                &["token"]
            ),
            r#"{"a":1}"#
        );
        assert_eq!(
            redact(
                r#"{"password":"p","a":1,"token":"t","b":2}"#,
                &["token", "password"]
            ),
            r#"{"a":1,"b":2}"#
        );
        assert_eq!(
            redact(r#"{"token":"1","x":2}"#, &["tok"]),
            r#"{"token":"1","x":2}"#
        );
    }

    #[test]
    fn a_followed_span_moves_with_its_bytes() {
        let mut frame = br#"{"token":"abc","ts":12,"x":1}"#.to_vec();
        let mut ts = Some(20..22);
        assert_eq!(&frame[20..22], b"12");
        let len = remove_members(&mut frame, &[b"token"], 128, &mut ts).expect("object");
        assert_eq!(&frame[..len], br#"{"ts":12,"x":1}"#);
        assert_eq!(&frame[ts.expect("kept")], b"12");
        // A span inside a removed member is gone.
        let mut frame = br#"{"ts":12,"x":1}"#.to_vec();
        let mut ts = Some(6..8);
        let len = remove_members(&mut frame, &[b"ts"], 128, &mut ts).expect("object");
        assert_eq!(&frame[..len], br#"{"x":1}"#);
        assert_eq!(ts, None);
    }

    #[test]
    fn not_an_object_is_an_error() {
        assert_eq!(
            remove_members(&mut b"[1]".to_vec(), &[b"a"], 128, &mut None),
            Err(JsonError::NotAnObject)
        );
    }
}
