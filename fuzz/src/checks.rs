//! What each fuzz target checks, one function per target, taking the raw
//! fuzz input. Kept free of anything but `framehub`, `bytes`, `serde_json`
//! and `tokio-util`, so `crates/framehub/tests/fuzz_corpus.rs` includes this
//! file and replays the committed corpus (crashes found included) on stable
//! `cargo test`.
//!
//! A target's input is decoded by [`Input`]: a few leading bytes choose the
//! configuration and where the stream is cut into reads, the rest is the
//! stream, so seeds are mostly the bytes a peer would send.

use std::time::Duration;

use bytes::BytesMut;
use framehub::codec::{
    Endian, FrameDecoder, FrameEncoder, FramingConfig, JsonConfig, LengthPrefix, SpacePacketConfig,
};
use framehub::fuzzing::{HeaderReader, MAX_HEADER_BYTES, Session, Step};
use framehub::json::{
    self, DEFAULT_MAX_DEPTH, EnvelopeKeys, JsonError, RawValue, remove_members, scan_envelope,
};
use framehub::{CloseReason, ListenerConfig, Protocol};
use serde::de::IgnoredAny;
use serde_json::Value;
use tokio_util::codec::{Decoder, Encoder};

/// Reads a fuzz input front to back; past its end every read is zero.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Input<'a> {
        Input { data }
    }

    pub fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    pub fn bit(&mut self) -> bool {
        self.byte() & 1 == 1
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    /// `n` cut points (sorted) into the stream that [`Input::rest`] gives.
    pub fn cuts(&mut self) -> Vec<u16> {
        let n = self.byte() % 8;
        (0..n).map(|_| self.u16()).collect()
    }

    pub fn rest(self) -> &'a [u8] {
        self.data
    }
}

/// `stream` cut into reads at `cuts` (taken modulo its length): never an
/// empty read, since an empty read is the end of the stream.
pub fn split<'s>(stream: &'s [u8], cuts: &[u16]) -> Vec<&'s [u8]> {
    let mut at: Vec<usize> = cuts
        .iter()
        .map(|&c| usize::from(c) % (stream.len() + 1))
        .collect();
    at.push(0);
    at.push(stream.len());
    at.sort_unstable();
    at.dedup();
    at.windows(2).map(|w| &stream[w[0]..w[1]]).collect()
}

// ---------------------------------------------------------------------------------------------
// codec

/// A frame, or the label of a skipped one (`!` appended when fatal).
type Out = Result<Vec<u8>, String>;

fn framing(input: &mut Input<'_>) -> FramingConfig {
    match input.byte() % 6 {
        0 => FramingConfig::Lines,
        1 => FramingConfig::Length(LengthPrefix {
            bytes: [1, 2, 4, 8][usize::from(input.byte() % 4)],
            endian: if input.bit() {
                Endian::Little
            } else {
                Endian::Big
            },
        }),
        2 => FramingConfig::Cobs,
        3 => FramingConfig::SpacePacket(SpacePacketConfig {
            allowed_packet_ids: match input.byte() % 4 {
                0 => None,
                n => Some((0..n).map(|_| input.u16() & 0x1FFF).collect()),
            },
        }),
        4 => FramingConfig::Chunk,
        _ => FramingConfig::Json(JsonConfig {
            validate: !input.bit(),
        }),
    }
}

fn max_frame(input: &mut Input<'_>) -> usize {
    match input.byte() {
        b @ 0..=191 => 1 + usize::from(b % 48),
        b @ 192..=254 => 64 + 16 * usize::from(b - 192),
        255 => 1 << 20,
    }
}

fn max_depth(input: &mut Input<'_>) -> usize {
    match input.byte() % 10 {
        0 => DEFAULT_MAX_DEPTH,
        d => usize::from(d),
    }
}

/// Runs `decode_next` over the reads, then at end of stream, as the
/// connection does; stops at the first fatal error.
fn decode_next_all(decoder: &mut FrameDecoder, reads: &[&[u8]], bound: usize) -> Vec<Out> {
    let mut out = Vec::new();
    let mut buf = BytesMut::new();
    let mut drain = |buf: &mut BytesMut, eof: bool, out: &mut Vec<Out>| loop {
        match decoder.decode_next(buf, eof) {
            Ok(Some(frame)) => out.push(Ok(frame.to_vec())),
            Ok(None) => return true,
            Err(e) if e.is_fatal() => {
                out.push(Err(format!("{}!", e.reason())));
                return false;
            }
            Err(e) => out.push(Err(e.reason().to_owned())),
        }
    };
    for read in reads {
        buf.extend_from_slice(read);
        if !drain(&mut buf, false, &mut out) {
            return out;
        }
        assert!(
            buf.len() <= bound,
            "decoder keeps {} bytes, over its bound of {bound}",
            buf.len()
        );
    }
    if drain(&mut buf, true, &mut out) {
        assert!(buf.is_empty(), "decode_eof left {} bytes", buf.len());
    }
    out
}

/// The same reads through `Decoder::decode`/`decode_eof`, as `FramedRead`
/// drives them: the frames, the fatal error, and the skipped frames'
/// labels, sorted.
fn framed_all(decoder: &mut FrameDecoder, reads: &[&[u8]]) -> (Vec<Out>, Vec<String>) {
    let mut out = Vec::new();
    let mut buf = BytesMut::new();
    let mut step = |buf: &mut BytesMut, eof: bool, out: &mut Vec<Out>| loop {
        let r = if eof {
            decoder.decode_eof(buf)
        } else {
            decoder.decode(buf)
        };
        match r {
            Ok(Some(frame)) => out.push(Ok(frame.to_vec())),
            Ok(None) => return true,
            Err(e) => {
                assert!(e.is_fatal(), "decode returned a skippable error: {e}");
                out.push(Err(format!("{}!", e.reason())));
                return false;
            }
        }
    };
    let mut ended = false;
    for read in reads {
        buf.extend_from_slice(read);
        if !step(&mut buf, false, &mut out) {
            ended = true;
            break;
        }
    }
    if !ended {
        step(&mut buf, true, &mut out);
    }
    let s = *decoder.skipped();
    let mut skipped = Vec::new();
    for (label, n) in [
        ("oversize", s.oversize),
        ("invalid_cobs", s.invalid_cobs),
        ("invalid_header", s.invalid_header),
        ("unknown_packet_id", s.unknown_packet_id),
        ("truncated", s.truncated),
        ("invalid_json", s.invalid_json),
        ("too_deep", s.too_deep),
    ] {
        skipped.extend(std::iter::repeat_n(label.to_owned(), n as usize));
    }
    (out, skipped)
}

/// The same reads through a raw listener's connection core: what the hub
/// really delivers (decoded in place for `lines`, `cobs` and `json`), the
/// drops' labels sorted, and how it closed.
fn session_all(
    framing: &FramingConfig,
    max: usize,
    depth: usize,
    reads: &[&[u8]],
    bound: usize,
) -> (Vec<Vec<u8>>, Vec<String>, Result<(), CloseReason>) {
    let config = ListenerConfig {
        framing: framing.clone(),
        protocol: Protocol::Raw,
        max_frame_bytes: framehub::ByteSize(max),
        read_buffer_bytes: framehub::ByteSize(512),
        max_json_depth: depth,
        ..ListenerConfig::default()
    };
    let mut session = Session::new(&config).expect("a raw listener needs no token file");
    let mut frames = Vec::new();
    let mut end = Ok(());
    let mut bytes_in = 0;
    for (i, read) in reads.iter().chain(std::iter::once(&&b""[..])).enumerate() {
        bytes_in += read.len() as u64;
        let (delivered, result) = session.read(read, Duration::from_millis(i as u64));
        frames.extend(delivered.into_iter().map(|d| {
            assert!(d.node.is_none() && d.timestamp.is_none());
            d.payload.to_vec()
        }));
        if let Err(reason) = result {
            end = Err(reason);
            break;
        }
        if !read.is_empty() {
            assert!(
                session.buffered() <= bound,
                "the connection keeps {} bytes, over its bound of {bound}",
                session.buffered()
            );
        }
    }
    let mut drops = Vec::new();
    for (reason, n) in session.drops() {
        drops.extend(std::iter::repeat_n(reason.as_str().to_owned(), *n as usize));
    }
    drops.sort();
    let c = session.counts();
    assert_eq!(
        c.frames_in,
        frames.len() as u64,
        "raw: every frame delivered"
    );
    assert_eq!(c.dropped, drops.len() as u64);
    assert_eq!(c.bytes_in, bytes_in);
    (frames, drops, end)
}

/// Every framing's decoder, all three ways the crate runs it, on any bytes
/// in any reads: the same frames and skips whatever the split, none over
/// the maximum, no more buffered than a frame and its framing, nothing left
/// at end of stream; and whatever the encoder writes decodes back.
pub fn codec(data: &[u8]) {
    let mut input = Input::new(data);
    let framing = framing(&mut input);
    let max = max_frame(&mut input);
    let depth = max_depth(&mut input);
    let cuts = input.cuts();
    let stream = input.rest();
    if framing.validate().is_err() {
        return;
    }
    let new = || FrameDecoder::new(&framing, max).with_max_json_depth(depth);
    // An incomplete frame at most: the payload's maximum, its framing (a
    // COBS overhead byte per 254, delimiters, a prefix or header), and for
    // `json` whitespace the decoder may hold (checked by the assertion).
    let bound = max + max / 254 + 16;
    let reads = split(stream, &cuts);
    let whole = decode_next_all(&mut new(), &[stream], bound);
    let split_out = decode_next_all(&mut new(), &reads, bound);

    for frame in whole.iter().chain(&split_out).flatten() {
        assert!(frame.len() <= max, "frame of {} > max {max}", frame.len());
    }
    let frames = |out: &[Out]| -> Vec<Vec<u8>> { out.iter().flatten().cloned().collect() };
    let skips = |out: &[Out]| -> Vec<String> {
        let mut s: Vec<String> = out
            .iter()
            .filter_map(|o| o.as_ref().err())
            .filter(|e| !e.ends_with('!'))
            .cloned()
            .collect();
        s.sort();
        s
    };
    let fatal = |out: &[Out]| {
        out.last()
            .is_some_and(|o| o.as_ref().is_err_and(|e| e.ends_with('!')))
    };
    if framing != FramingConfig::Chunk {
        // Chunk frames are the reads themselves.
        assert_eq!(
            frames(&whole),
            frames(&split_out),
            "frames depend on the reads"
        );
        assert_eq!(fatal(&whole), fatal(&split_out));
    }

    // FramedRead's loop: the same frames, the skips counted.
    let (framed, skipped) = framed_all(&mut new(), &reads);
    assert_eq!(frames(&framed), frames(&split_out));
    assert_eq!(fatal(&framed), fatal(&split_out));
    let mut skipped = skipped;
    skipped.sort();
    assert_eq!(skipped, skips(&split_out));

    // The connection's own loop.
    let (delivered, drops, end) = session_all(&framing, max, depth, &reads, bound);
    assert_eq!(
        delivered,
        frames(&split_out),
        "the hub delivers other frames"
    );
    assert_eq!(drops, skips(&split_out), "the hub counts other drops");
    assert_eq!(
        matches!(end, Err(CloseReason::FramingLost(_))),
        fatal(&split_out),
        "{end:?}"
    );

    // The encoder's output decodes to the payload.
    let payload = &stream[..stream.len().min(max)];
    let mut wire = BytesMut::new();
    if FrameEncoder::new(&framing, max)
        .encode(payload, &mut wire)
        .is_ok()
    {
        // The encoder has no depth limit of its own: decoded with the default.
        let back = decode_next_all(&mut FrameDecoder::new(&framing, max), &[&wire], usize::MAX);
        let expected: Vec<Out> = match &framing {
            // An empty chunk writes nothing; an allowlist may skip a packet.
            FramingConfig::Chunk if payload.is_empty() => vec![],
            FramingConfig::SpacePacket(c) if c.allowed_packet_ids.is_some() => back.clone(),
            _ => vec![Ok(payload.to_vec())],
        };
        assert_eq!(back, expected, "encoded as {wire:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// JSON

/// Nesting depth of valid JSON: brackets outside strings.
fn depth_of(x: &[u8]) -> usize {
    let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in x {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth -= 1,
            _ => {}
        }
    }
    max
}

fn same_field(name: &str, ours: Option<RawValue<'_>>, theirs: Option<&Value>, x: &[u8]) {
    match (ours, theirs) {
        (None, None) => {}
        (Some(r), Some(Value::String(s))) => {
            assert!(r.is_string(), "{name}: {x:?}");
            assert_eq!(r.as_str().as_deref(), Some(s.as_str()), "{name}: {x:?}");
            assert!(r.str_eq(s), "{name}: {x:?}");
            assert!(!r.str_eq(&format!("{s}x")), "{name}: {x:?}");
        }
        (Some(r), Some(v)) => {
            assert!(!r.is_string(), "{name}: {x:?}");
            assert_eq!(r.as_str(), None);
            let reparsed: Value = serde_json::from_slice(r.raw()).expect("a raw value parses");
            assert_eq!(&reparsed, v, "{name}: {x:?}");
        }
        (o, t) => panic!("{name}: ours {o:?} theirs {t:?} in {x:?}"),
    }
}

/// The envelope scanner, through its public API, against serde_json: the
/// same verdict on validity (UTF-8 checked everywhere, which serde_json's
/// `IgnoredAny` skips), `TooDeep` exactly past the depth limit, the same
/// value for every envelope field, and member removal that leaves the
/// object serde_json sees minus that member.
pub fn json_envelope(x: &[u8]) {
    let utf8 = std::str::from_utf8(x).is_ok();
    let ignored_ok = serde_json::from_slice::<IgnoredAny>(x).is_ok() && utf8;
    let unlimited = json::validate(x, usize::MAX);
    assert_eq!(
        unlimited.is_ok(),
        ignored_ok,
        "validate={unlimited:?} serde={ignored_ok}"
    );
    if !utf8 {
        assert_eq!(unlimited, Err(JsonError::InvalidUtf8));
    }
    if unlimited.is_ok() {
        let depth = depth_of(x);
        for limit in [0, 1, 2, 3, 5, DEFAULT_MAX_DEPTH] {
            let limited = json::validate(x, limit);
            if depth > limit {
                assert_eq!(limited, Err(JsonError::TooDeep { max_depth: limit }));
            } else {
                assert_eq!(limited, Ok(()), "depth {depth} <= {limit}");
            }
        }
    }
    let ours = scan_envelope(x, &EnvelopeKeys::DEFAULT, DEFAULT_MAX_DEPTH);
    match serde_json::from_slice::<Value>(x) {
        Ok(Value::Object(map)) => {
            let env = ours.unwrap_or_else(|e| panic!("{e:?}: serde_json reads an object"));
            same_field("node_id", env.node_id, map.get("node_id"), x);
            same_field("token", env.token, map.get("token"), x);
            same_field("type", env.msg_type, map.get("type"), x);
            same_field("timestamp", env.timestamp, map.get("timestamp"), x);
            for key in ["token", "node_id"] {
                let mut expected = map.clone();
                expected.remove(key);
                let mut frame = x.to_vec();
                let len =
                    remove_members(&mut frame, &[key.as_bytes()], DEFAULT_MAX_DEPTH, &mut None)
                        .unwrap_or_else(|e| panic!("{e}: removing {key}"));
                let out = &frame[..len];
                let got: Value = serde_json::from_slice(out).unwrap_or_else(|e| {
                    panic!(
                        "{e}: {:?} after removing {key}",
                        String::from_utf8_lossy(out)
                    )
                });
                assert_eq!(got, Value::Object(expected), "removing {key}");
            }
        }
        Ok(_) => assert_eq!(ours, Err(JsonError::NotAnObject)),
        Err(_) => {
            if ours.is_ok() {
                // Accepted by us: valid for IgnoredAny, refused by `Value`
                // only for what `Value` adds (lone surrogates, numbers out
                // of f64 range, its recursion limit).
                assert!(ignored_ok);
                assert_eq!(x.iter().find(|b| !b.is_ascii_whitespace()), Some(&b'{'));
            }
        }
    }
    match ours {
        Ok(_) | Err(JsonError::NotAnObject) => {
            assert_eq!(json::validate(x, DEFAULT_MAX_DEPTH), Ok(()))
        }
        Err(e) => assert_eq!(json::validate(x, DEFAULT_MAX_DEPTH), Err(e)),
    }
}

// ---------------------------------------------------------------------------------------------
// node protocol

/// The node protocol's connection core on any bytes, reads and timing:
/// nothing delivered before the peer authenticates, every delivered frame a
/// JSON object of its bound node without the token or a `redact` field,
/// its timestamp span right, every frame accounted for, the buffer bounded,
/// and a deadline that fires either closes or moves on.
pub fn node_session(data: &[u8]) {
    let mut input = Input::new(data);
    let flags = input.byte();
    let mut config = ListenerConfig {
        framing: if flags & 1 == 0 {
            FramingConfig::Lines
        } else {
            FramingConfig::Json(JsonConfig {
                validate: flags & 2 == 0,
            })
        },
        protocol: Protocol::Node,
        max_frame_bytes: framehub::ByteSize(max_frame(&mut input) * 4),
        read_buffer_bytes: framehub::ByteSize(512),
        max_json_depth: max_depth(&mut input),
        idle_timeout: (flags & 4 != 0).then(|| Duration::from_millis(300)),
        ..ListenerConfig::default()
    };
    config.auth.timeout = Duration::from_millis(200);
    config.auth.max_frame_bytes = framehub::ByteSize(max_frame(&mut input) * 4);
    if flags & 8 != 0 {
        config.auth.token = Some("secret".into());
    }
    if flags & 16 != 0 {
        config.auth.tokens.insert("radar9".into(), "nine".into());
    }
    if flags & 32 != 0 {
        config.redact = vec!["password".into()];
    }
    let requires_auth = flags & (8 | 16) != 0;
    let max = config.max_frame_bytes.0;
    // Ten milliseconds per step of the byte after each cut.
    let cuts = input.cuts();
    let delays: Vec<u8> = cuts.iter().map(|_| input.byte()).collect();
    let stream = input.rest();
    let reads = split(stream, &cuts);

    let mut session = Session::new(&config).expect("tokens come from the config");
    let (mut now, mut delivered, mut bound) = (Duration::ZERO, 0u64, None::<String>);
    let mut closed = None;
    'reads: for (i, read) in reads.iter().chain(std::iter::once(&&b""[..])).enumerate() {
        now += Duration::from_millis(10 * u64::from(delays.get(i).copied().unwrap_or(0)));
        // The timer fires at each deadline passed before this read.
        let mut fired = 0;
        while let Some(at) = session.poll_timeout().filter(|at| *at <= now) {
            fired += 1;
            assert!(fired < 4, "the deadline at {at:?} fires again and again");
            if let Err(reason) = session.timeout(at) {
                closed = Some(reason);
                break 'reads;
            }
        }
        let (frames, result) = session.read(read, now);
        assert!(
            frames.is_empty() || session.is_authenticated(),
            "a frame delivered before the peer authenticated"
        );
        for f in frames {
            delivered += 1;
            check_node_frame(&f.payload, f.timestamp, &config, max);
            let node = f.node.as_deref().expect("a delivered frame names its node");
            match &bound {
                Some(b) => assert_eq!(b, node, "frames of two nodes on one connection"),
                None => bound = Some(node.to_owned()),
            }
        }
        if let Err(reason) = result {
            assert!(
                !matches!(reason, CloseReason::FramingLost(_)),
                "lines and json framings cannot lose the framing: {reason:?}"
            );
            closed = Some(reason);
            break;
        }
        assert!(
            session.buffered() <= max + max / 254 + 16 || read.is_empty(),
            "the connection keeps {} bytes past a maximum of {max}",
            session.buffered()
        );
    }
    if delivered > 0 {
        assert!(session.is_authenticated());
        assert_eq!(session.node().map(|n| n.to_string()), bound);
    }
    if !session.is_authenticated() {
        assert!(requires_auth);
        assert_eq!(delivered, 0, "frames delivered without a token");
        if closed.is_none() {
            let late = session.timeout(now + config.auth.timeout);
            assert!(
                matches!(late, Err(CloseReason::AuthFailed(_))),
                "an unauthenticated peer outlives its auth deadline: {late:?}"
            );
        }
    }
    let c = session.counts();
    assert!(
        delivered + session.heartbeats() + c.dropped >= c.frames_in,
        "a frame neither delivered, a heartbeat nor dropped: {c:?}, delivered {delivered}"
    );
}

fn check_node_frame(
    payload: &[u8],
    timestamp: Option<std::ops::Range<usize>>,
    config: &ListenerConfig,
    max: usize,
) {
    assert!(payload.len() <= max);
    let env = scan_envelope(payload, &EnvelopeKeys::DEFAULT, config.max_json_depth)
        .unwrap_or_else(|e| panic!("{e}: delivered {:?}", String::from_utf8_lossy(payload)));
    assert!(env.token.is_none(), "the token was delivered");
    assert!(env.node_id.is_some_and(|n| n.is_string()));
    match (timestamp, env.timestamp) {
        (None, None) => {}
        (Some(span), Some(ts)) => assert_eq!(&payload[span], ts.raw()),
        (ours, theirs) => panic!("timestamp span {ours:?} for {theirs:?}"),
    }
    if !config.redact.is_empty() {
        let keys = EnvelopeKeys {
            node_id: b"password",
            ..EnvelopeKeys::DEFAULT
        };
        let env = scan_envelope(payload, &keys, config.max_json_depth).expect("scanned above");
        assert!(env.node_id.is_none(), "a redact field was delivered");
    }
}

// ---------------------------------------------------------------------------------------------
// PROXY header

/// How a PROXY header read ended.
#[derive(Debug, PartialEq, Eq)]
enum ProxyEnd {
    /// The header was `taken` bytes long; the connection comes from `source`.
    Done(usize, Option<std::net::SocketAddr>),
    Absent,
    /// Closed before saying anything.
    PeerClosed,
    Refused(framehub::ProxyFailure),
}

/// Drives the reader as `connection/proxy.rs`'s `read_header` does over a
/// socket that receives `reads` one by one: peek what is there, take what
/// the reader says is the header's, wait for more (or time out), end.
fn read_header(required: bool, trusted: bool, reads: &[&[u8]]) -> ProxyEnd {
    let mut reader = HeaderReader::new(required, trusted);
    let mut socket: Vec<u8> = Vec::new();
    let (mut taken, mut arrived) = (0usize, 0usize);
    let mut steps = 0;
    loop {
        steps += 1;
        assert!(steps < 10_000, "the header reader never decides");
        let peek_len = reader.peek_len();
        let peeked = &socket[taken..socket.len().min(taken + peek_len)];
        let step = if peeked.is_empty() {
            if arrived < reads.len() {
                socket.extend_from_slice(reads[arrived]);
                arrived += 1;
                continue;
            }
            if taken == 0 {
                return ProxyEnd::PeerClosed;
            }
            reader.handle_eof()
        } else {
            reader.handle_peek(peeked)
        };
        let step = match step {
            Ok(Step::Wait) if arrived < reads.len() => {
                socket.extend_from_slice(reads[arrived]);
                arrived += 1;
                continue;
            }
            // Nothing more comes: `proxy_timeout` passes.
            Ok(Step::Wait) => reader.handle_timeout(),
            step => step,
        };
        match step {
            Err(failure) => return ProxyEnd::Refused(failure),
            Ok(Step::Take(n)) => {
                assert!(
                    n > 0 && n <= peeked.len(),
                    "take {n} of {} peeked",
                    peeked.len()
                );
                taken += n;
            }
            Ok(Step::Done { take, source }) => {
                assert!(
                    take <= peeked.len(),
                    "take {take} of {} peeked",
                    peeked.len()
                );
                taken += take;
                assert!(taken <= MAX_HEADER_BYTES);
                return ProxyEnd::Done(taken, source);
            }
            Ok(Step::Absent) => {
                // The device's own bytes stay in the socket.
                assert_eq!(taken, 0, "bytes taken, then no header");
                assert!(!required);
                return ProxyEnd::Absent;
            }
            Ok(Step::Wait) => unreachable!("handled above"),
        }
        assert!(taken <= MAX_HEADER_BYTES, "took {taken} bytes");
    }
}

/// The PROXY header reader on any bytes in any reads: it ends, never takes
/// more than was peeked nor more than a header's bound, never takes a
/// device's bytes, refuses an untrusted peer, and ends the same way
/// however the bytes arrive.
pub fn proxy_header(data: &[u8]) {
    let mut input = Input::new(data);
    let flags = input.byte();
    let (required, trusted) = (flags & 1 != 0, flags & 2 != 0);
    let cuts = input.cuts();
    let stream = input.rest();
    let whole = read_header(required, trusted, &[stream]);
    let split_end = read_header(required, trusted, &split(stream, &cuts));
    assert_eq!(whole, split_end, "the header's end depends on the reads");
    if let ProxyEnd::Done(taken, _) = whole {
        assert!(trusted, "a header believed from an untrusted peer");
        assert!(stream.starts_with(b"PROXY ") || stream.starts_with(b"\r\n\r\n\0\r\nQUIT\n"));
        assert!(taken <= stream.len());
    }
}
