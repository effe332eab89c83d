//! The PROXY protocol (v1 text, v2 binary) at the start of a connection:
//! who the device behind a load balancer is. A sans-IO reader
//! ([`HeaderReader`]: peeked bytes in, what to take off the socket out) and
//! the short async step that drives it with `peek` under `proxy_timeout`
//! ([`origin`]).
//!
//! Only the header's own bytes are ever taken off the socket: what follows
//! it (frames, or a TLS handshake) stays in the socket for whoever reads
//! next, so nothing is lost and nothing needs handing over. Fields are
//! parsed by the `ppp` crate; this module decides where the header ends,
//! bounds it, and keeps an untrusted peer from being believed.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ppp::v2::{Addresses as V2Addresses, Command, Protocol as V2Protocol};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::config::{IpNet, ProxyProtocol};
use crate::context::ListenerShared;
use crate::reason::{CloseReason, ProxyFailure};

/// The v1 header's start.
const V1_PREFIX: &[u8] = b"PROXY ";
/// The v1 header's longest form, CRLF included (the spec's bound).
const V1_MAX_BYTES: usize = 107;
/// The v2 header's signature.
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
/// The v2 header's fixed part: signature, version and command, family and
/// protocol, length.
const V2_FIXED_BYTES: usize = 16;
/// The longest v2 header accepted, TLVs included. The spec asks receivers
/// for at least 536 bytes (one minimal TCP segment); balancers that add
/// TLVs (TLS details, cloud endpoint IDs) stay well under 1 KiB.
pub const MAX_HEADER_BYTES: usize = 1024;
/// How long to wait before peeking again at a few bytes that might still
/// become a signature (`optional` only: they cannot be taken, in case they
/// are the device's own).
const UNDECIDED_PAUSE: Duration = Duration::from_millis(5);

/// What to do after a peek.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Take this many bytes off the socket (all of them the header's),
    /// then peek again.
    Take(usize),
    /// The bytes may still become a signature or may be the device's
    /// own: take nothing, peek again a little later.
    Wait,
    /// The header ends after this many more bytes: take them. The
    /// connection comes from `source`; `None`: keep the socket's address
    /// (a LOCAL command, as a balancer's health check sends, or a family
    /// other than TCP over IPv4/IPv6).
    Done {
        /// Bytes still to take: the rest of the header.
        take: usize,
        /// Where the connection comes from, if the header says.
        source: Option<SocketAddr>,
    },
    /// The stream does not start with a PROXY header (`optional`): it is
    /// the device's own.
    Absent,
}

/// Reads one PROXY header from peeked bytes, without I/O. Bytes it was
/// told to take are kept, so each peek only shows what follows them.
#[derive(Debug)]
pub struct HeaderReader {
    required: bool,
    trusted: bool,
    /// The header's bytes taken off the socket so far.
    taken: Vec<u8>,
}

impl HeaderReader {
    /// `required`: a stream without a header is refused; `trusted`: the
    /// socket's peer is in `trusted_proxies`.
    pub fn new(required: bool, trusted: bool) -> HeaderReader {
        HeaderReader {
            required,
            trusted,
            taken: Vec::new(),
        }
    }

    /// At most how many bytes the next peek needs to show.
    pub fn peek_len(&self) -> usize {
        MAX_HEADER_BYTES - self.taken.len()
    }

    /// Decides from what the socket holds now (unread, after what was
    /// taken). `peeked` is not empty.
    pub fn handle_peek(&mut self, peeked: &[u8]) -> Result<Step, ProxyFailure> {
        let have = self.taken.len();
        let mut all = std::mem::take(&mut self.taken);
        all.extend_from_slice(peeked);
        let step = self.decide(&all, have);
        all.truncate(have);
        if let Ok(Step::Take(n)) = step {
            all.extend_from_slice(&peeked[..n]);
        }
        self.taken = all;
        step
    }

    /// The stream ended with nothing more to peek.
    pub fn handle_eof(&self) -> Result<Step, ProxyFailure> {
        if self.taken.is_empty() && !self.required {
            Ok(Step::Absent)
        } else {
            Err(ProxyFailure::Truncated)
        }
    }

    /// `proxy_timeout` passed. With `optional`, a connection that has not
    /// started a header by then (silent, or a few bytes that might have
    /// been a signature's start) is not behind a balancer, which writes
    /// the header at once: it is served as itself, and its bytes are left
    /// for the driver.
    pub fn handle_timeout(&self) -> Result<Step, ProxyFailure> {
        if self.taken.is_empty() && !self.required {
            Ok(Step::Absent)
        } else {
            Err(ProxyFailure::Timeout)
        }
    }

    /// `all`: the taken bytes (`have` of them) followed by the peeked ones.
    fn decide(&self, all: &[u8], have: usize) -> Result<Step, ProxyFailure> {
        let peeked = all.len() - have;
        let starts = |sig: &[u8]| all.len() >= sig.len() && all.starts_with(sig);
        let may_become = |sig: &[u8]| all.len() < sig.len() && sig.starts_with(all);
        let parsed = if starts(V1_PREFIX) {
            parse_v1(all)
        } else if starts(V2_SIGNATURE) {
            parse_v2(all)
        } else if may_become(V1_PREFIX) || may_become(V2_SIGNATURE) {
            // Taking them is safe only where a stream without a header is
            // refused anyway.
            return Ok(if self.required {
                Step::Take(peeked)
            } else {
                Step::Wait
            });
        } else if self.required {
            return Err(ProxyFailure::Missing);
        } else {
            return Ok(Step::Absent);
        };
        if !self.trusted {
            return Err(ProxyFailure::Untrusted);
        }
        Ok(match parsed? {
            // Everything seen is the header's: it ends past it.
            None => Step::Take(peeked),
            Some((len, source)) => Step::Done {
                take: len - have,
                source,
            },
        })
    }
}

/// A header at the start of `all`: `None` while it is incomplete,
/// else its length and source.
type Parsed = Result<Option<(usize, Option<SocketAddr>)>, ProxyFailure>;

fn parse_v1(all: &[u8]) -> Parsed {
    use ppp::v1::{Addresses, Header};
    let window = &all[..all.len().min(V1_MAX_BYTES)];
    // The line is parsed only once its CRLF is in: `ppp` calls some cut
    // lines malformed (one that ends in the space before the destination
    // port), and a balancer writes the whole line at once anyway.
    let Some(cr) = memchr::memchr(b'\r', window) else {
        return if all.len() >= V1_MAX_BYTES {
            Err(ProxyFailure::Oversized)
        } else {
            Ok(None)
        };
    };
    let len = cr + 2;
    // Decided before the byte after the CR is looked at: whether that byte
    // has arrived yet must not change the verdict (the fuzzer found a
    // line whose CR is its 107th byte called oversized in two reads and
    // malformed in one).
    if len > V1_MAX_BYTES {
        return Err(ProxyFailure::Oversized);
    }
    let Some(&next) = all.get(cr + 1) else {
        return Ok(None);
    };
    if next != b'\n' {
        return Err(ProxyFailure::Malformed);
    }
    let header = Header::try_from(&all[..len]).map_err(|_| ProxyFailure::Malformed)?;
    let source = match header.addresses {
        Addresses::Tcp4(a) => Some(SocketAddr::new(IpAddr::V4(a.source_address), a.source_port)),
        Addresses::Tcp6(a) => Some(SocketAddr::new(IpAddr::V6(a.source_address), a.source_port)),
        Addresses::Unknown => None,
    };
    Ok(Some((len, source)))
}

fn parse_v2(all: &[u8]) -> Parsed {
    use ppp::PartialResult;
    use ppp::v2::Header;
    if all.len() < V2_FIXED_BYTES {
        return Ok(None);
    }
    let len = V2_FIXED_BYTES + usize::from(u16::from_be_bytes([all[14], all[15]]));
    if len > MAX_HEADER_BYTES {
        return Err(ProxyFailure::Oversized);
    }
    let header = match Header::try_from(&all[..len.min(all.len())]) {
        Ok(header) => header,
        Err(e) if e.is_incomplete() => return Ok(None),
        Err(_) => return Err(ProxyFailure::Malformed),
    };
    let tcp = matches!(
        header.protocol,
        V2Protocol::Stream | V2Protocol::Unspecified
    );
    let source = match (header.command, header.addresses) {
        (Command::Proxy, V2Addresses::IPv4(a)) if tcp => {
            Some(SocketAddr::new(IpAddr::V4(a.source_address), a.source_port))
        }
        (Command::Proxy, V2Addresses::IPv6(a)) if tcp => {
            Some(SocketAddr::new(IpAddr::V6(a.source_address), a.source_port))
        }
        _ => None,
    };
    Ok(Some((len, source)))
}

/// Whether `peer` may send a PROXY header. An IPv4 peer on a dual-stack
/// socket (`::ffff:10.0.0.1`) is matched as the IPv4 address it is.
pub(crate) fn is_trusted(trusted: &[IpNet], peer: IpAddr) -> bool {
    let ip = peer.to_canonical();
    trusted.iter().any(|net| net.contains(&ip))
}

/// Where the connection really comes from: the socket's peer, or, with
/// `proxy_protocol` on, the device named by the balancer's PROXY header,
/// which is then taken off the stream (and nothing after it). Errs with
/// why the connection must close.
pub(crate) async fn origin(
    shared: &ListenerShared,
    stream: &mut TcpStream,
    peer: SocketAddr,
) -> Result<SocketAddr, CloseReason> {
    let config = &shared.config;
    let required = match config.proxy_protocol {
        ProxyProtocol::Off => return Ok(peer),
        ProxyProtocol::Optional => false,
        ProxyProtocol::Required => true,
    };
    let trusted = is_trusted(&config.trusted_proxies, peer.ip());
    if required && !trusted {
        // Nothing it could send would be believed.
        return Err(CloseReason::ProxyRejected(ProxyFailure::Untrusted));
    }
    let mut reader = HeaderReader::new(required, trusted);
    let read = tokio::select! {
        _ = shared.cancel.cancelled() => return Err(CloseReason::Shutdown),
        read = tokio::time::timeout(config.proxy_timeout, read_header(stream, &mut reader)) => read,
    };
    let source = match read {
        Ok(read) => read?,
        Err(_) => match reader.handle_timeout() {
            Ok(_) => None,
            Err(failure) => return Err(CloseReason::ProxyRejected(failure)),
        },
    };
    Ok(source.unwrap_or(peer))
}

/// Drives `reader` over the socket: peek, take what it says is the
/// header's. `Ok(None)`: keep the socket's address.
async fn read_header(
    stream: &mut TcpStream,
    reader: &mut HeaderReader,
) -> Result<Option<SocketAddr>, CloseReason> {
    let read_error = |e: std::io::Error| CloseReason::ReadError(e.to_string());
    let rejected = CloseReason::ProxyRejected;
    // Allocated only for connections that may carry a header, and freed
    // once it is read.
    let mut window = vec![0u8; MAX_HEADER_BYTES];
    loop {
        let n = stream
            .peek(&mut window[..reader.peek_len()])
            .await
            .map_err(read_error)?;
        let step = if n == 0 {
            if reader.taken.is_empty() {
                // Closed before saying anything, as a balancer's plain TCP
                // health check does: an ordinary close, not a refusal.
                return Err(CloseReason::PeerClosed);
            }
            reader.handle_eof()
        } else {
            reader.handle_peek(&window[..n])
        };
        match step.map_err(rejected)? {
            Step::Take(n) => {
                stream
                    .read_exact(&mut window[..n])
                    .await
                    .map_err(read_error)?;
            }
            Step::Wait => tokio::time::sleep(UNDECIDED_PAUSE).await,
            Step::Done { take, source } => {
                stream
                    .read_exact(&mut window[..take])
                    .await
                    .map_err(read_error)?;
                return Ok(source);
            }
            Step::Absent => return Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use ppp::v2::{Builder, Type};
    use proptest::prelude::*;

    use super::*;

    fn v2(command: u8, family: u8, addresses: &[u8], tlvs: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(0x20 | command);
        out.push(family);
        let len = u16::try_from(addresses.len() + tlvs.len()).expect("short");
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(addresses);
        out.extend_from_slice(tlvs);
        out
    }

    fn v2_tcp4(src: [u8; 4], port: u16) -> Vec<u8> {
        let mut a = src.to_vec();
        a.extend_from_slice(&[10, 0, 0, 1]);
        a.extend_from_slice(&port.to_be_bytes());
        a.extend_from_slice(&30050u16.to_be_bytes());
        v2(0x1, 0x11, &a, &[])
    }

    /// What the socket of [`run`] did: the header's outcome, and the bytes
    /// left for whoever reads next.
    type Outcome = (Verdict, Vec<u8>);

    /// What a header makes of the connection's origin.
    type Verdict = Result<Option<SocketAddr>, ProxyFailure>;

    /// Drives a reader as `read_header` does, over a simulated socket
    /// that receives `chunks` one at a time (the next arrives when the
    /// reader waits or has taken everything), then ends.
    fn run(required: bool, trusted: bool, chunks: &[Vec<u8>]) -> Outcome {
        let mut reader = HeaderReader::new(required, trusted);
        let mut arrived: VecDeque<u8> = VecDeque::new();
        let mut pending = chunks.iter();
        let mut arrive = |arrived: &mut VecDeque<u8>| match pending.next() {
            Some(chunk) => {
                arrived.extend(chunk);
                true
            }
            None => false,
        };
        arrive(&mut arrived);
        let result = loop {
            let peeked: Vec<u8> = arrived.iter().copied().take(reader.peek_len()).collect();
            let step = if peeked.is_empty() {
                if arrive(&mut arrived) {
                    continue;
                }
                reader.handle_eof()
            } else {
                reader.handle_peek(&peeked)
            };
            match step {
                Err(e) => break Err(e),
                Ok(Step::Take(n)) => {
                    assert!(n > 0 && n <= peeked.len(), "take {n} of {}", peeked.len());
                    arrived.drain(..n);
                }
                Ok(Step::Wait) => {
                    if !arrive(&mut arrived) {
                        // Nothing more will come: the timeout decides.
                        match reader.handle_timeout() {
                            Ok(Step::Absent) => break Ok(None),
                            Ok(other) => panic!("{other:?} on timeout"),
                            Err(e) => break Err(e),
                        }
                    }
                }
                Ok(Step::Done { take, source }) => {
                    assert!(take <= peeked.len(), "take {take} of {}", peeked.len());
                    arrived.drain(..take);
                    break Ok(source);
                }
                Ok(Step::Absent) => break Ok(None),
            }
        };
        let mut rest: Vec<u8> = arrived.into_iter().collect();
        for chunk in pending {
            rest.extend_from_slice(chunk);
        }
        (result, rest)
    }

    fn whole(required: bool, bytes: &[u8]) -> Outcome {
        run(required, true, &[bytes.to_vec()])
    }

    fn addr(s: &str) -> Option<SocketAddr> {
        Some(s.parse().expect("addr"))
    }

    #[test]
    fn v1_tcp4_tcp6_and_unknown() {
        let (r, rest) = whole(
            true,
            b"PROXY TCP4 192.0.2.7 10.0.0.1 51234 30050\r\n{\"a\":1}\n",
        );
        assert_eq!(r, Ok(addr("192.0.2.7:51234")));
        assert_eq!(rest, b"{\"a\":1}\n");
        let (r, rest) = whole(true, b"PROXY TCP6 2001:db8::7 2001:db8::1 4000 30050\r\nx");
        assert_eq!(r, Ok(addr("[2001:db8::7]:4000")));
        assert_eq!(rest, b"x");
        let (r, rest) = whole(true, b"PROXY UNKNOWN\r\nx");
        assert_eq!(r, Ok(None));
        assert_eq!(rest, b"x");
    }

    /// `ppp` calls `"PROXY TCP4 a b 1 "` malformed although the port may
    /// still come: a v1 line is parsed only once its CRLF is in.
    #[test]
    fn a_v1_line_cut_before_its_destination_port_waits_for_the_rest() {
        let chunks = [
            b"PROXY TCP4 192.0.2.7 10.0.0.1 51234 ".to_vec(),
            b"30050\r\n{}\n".to_vec(),
        ];
        let (r, rest) = run(true, true, &chunks);
        assert_eq!(r, Ok(addr("192.0.2.7:51234")));
        assert_eq!(rest, b"{}\n");
    }

    #[test]
    fn v2_families_and_commands() {
        let (r, rest) = whole(
            true,
            &[v2_tcp4([192, 0, 2, 7], 51234), b"x".to_vec()].concat(),
        );
        assert_eq!(r, Ok(addr("192.0.2.7:51234")));
        assert_eq!(rest, b"x");

        let mut a6 = "2001:db8::7"
            .parse::<std::net::Ipv6Addr>()
            .expect("ip")
            .octets()
            .to_vec();
        a6.extend_from_slice(&[0; 16]);
        a6.extend_from_slice(&4000u16.to_be_bytes());
        a6.extend_from_slice(&30050u16.to_be_bytes());
        let (r, _) = whole(true, &v2(0x1, 0x21, &a6, &[]));
        assert_eq!(r, Ok(addr("[2001:db8::7]:4000")));

        // LOCAL (a balancer's own health check): the socket's address.
        let (r, rest) = whole(true, &[v2(0x0, 0x00, &[], &[]), b"x".to_vec()].concat());
        assert_eq!(r, Ok(None));
        assert_eq!(rest, b"x");
        // UNSPEC and UNIX families, and UDP: the socket's address too.
        let (r, _) = whole(true, &v2(0x1, 0x00, &[1, 2, 3], &[]));
        assert_eq!(r, Ok(None));
        let (r, _) = whole(true, &v2(0x1, 0x31, &[0; 216], &[]));
        assert_eq!(r, Ok(None));
        let (r, _) = whole(
            true,
            &v2(0x1, 0x12, &[1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2], &[]),
        );
        assert_eq!(r, Ok(None));
    }

    #[test]
    fn v2_tlvs_are_skipped_and_the_ppp_builder_agrees() {
        let header = Builder::with_addresses(
            0x21,
            ppp::v2::Protocol::Stream,
            (
                "198.51.100.9:7000".parse::<SocketAddr>().expect("a"),
                "10.0.0.1:30050".parse::<SocketAddr>().expect("a"),
            ),
        )
        .write_tlv(Type::Authority, b"radar.example")
        .expect("tlv")
        .write_tlv(Type::NoOp, &[0; 40])
        .expect("tlv")
        .build()
        .expect("header");
        let (r, rest) = whole(true, &[header, b"{}\n".to_vec()].concat());
        assert_eq!(r, Ok(addr("198.51.100.9:7000")));
        assert_eq!(rest, b"{}\n");
    }

    #[test]
    fn refusals() {
        use ProxyFailure::*;
        assert_eq!(whole(true, b"{\"node_id\":\"a\"}\n").0, Err(Missing));
        assert_eq!(whole(true, b"PROXY TCP4 1.2.3.4\r\n{}\n").0, Err(Malformed));
        assert_eq!(whole(true, b"PROXY TCP4 a b c d\r\n").0, Err(Malformed));
        assert_eq!(whole(true, b"PROXY TCP9 1 2 3 4\r\n").0, Err(Malformed));
        assert_eq!(
            whole(true, b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX").0,
            Err(Malformed)
        );
        let long = format!("PROXY TCP4 {}\r\n", " ".repeat(120));
        assert_eq!(whole(true, long.as_bytes()).0, Err(Oversized));
        // A CR as the 107th byte: oversized whether or not the next byte
        // came in the same read (found by the proxy_header fuzz target).
        let mut cr_last = b"PROXY TCP4 ".to_vec();
        cr_last.resize(106, b'1');
        cr_last.push(b'\r');
        assert_eq!(whole(true, &cr_last).0, Err(Oversized));
        cr_last.push(b'x');
        assert_eq!(whole(true, &cr_last).0, Err(Oversized));
        let no_end = vec![b'7'; 200];
        assert_eq!(
            whole(true, &[V1_PREFIX.to_vec(), no_end].concat()).0,
            Err(Oversized)
        );
        // v2: bad version, bad command, oversized length field.
        let mut bad = v2_tcp4([1, 2, 3, 4], 1);
        bad[12] = 0x11;
        assert_eq!(whole(true, &bad).0, Err(Malformed));
        bad[12] = 0x2F;
        assert_eq!(whole(true, &bad).0, Err(Malformed));
        let mut big = v2(0x1, 0x11, &[0; 12], &[]);
        big[14..16].copy_from_slice(&2000u16.to_be_bytes());
        assert_eq!(whole(true, &big).0, Err(Oversized));
        // A v2 address block shorter than its family needs.
        assert_eq!(
            whole(true, &v2(0x1, 0x11, &[1, 2, 3], &[])).0,
            Err(Malformed)
        );
        // Cut short.
        assert_eq!(whole(true, b"PROXY TCP4 1.2.3.4 ").0, Err(Truncated));
        assert_eq!(
            whole(true, &v2_tcp4([1, 2, 3, 4], 1)[..20]).0,
            Err(Truncated)
        );
        assert_eq!(whole(true, b"\r\n\r\n").0, Err(Truncated));
    }

    #[test]
    fn an_untrusted_peer_is_refused_as_soon_as_it_starts_a_header() {
        let h = b"PROXY TCP4 192.0.2.7 10.0.0.1 1 2\r\n{}\n";
        assert_eq!(
            run(false, false, &[h.to_vec()]).0,
            Err(ProxyFailure::Untrusted)
        );
        assert_eq!(
            run(false, false, &[b"PROXY ".to_vec()]).0,
            Err(ProxyFailure::Untrusted)
        );
        // ... and served as itself when it sends none.
        let (r, rest) = run(false, false, &[b"{}\n".to_vec()]);
        assert_eq!(r, Ok(None));
        assert_eq!(rest, b"{}\n");
    }

    #[test]
    fn optional_takes_nothing_that_may_be_the_devices_own() {
        // Starts like a signature, then is not one: every byte is left.
        let (r, rest) = run(false, true, &[b"PRO".to_vec(), b"DUCT\n".to_vec()]);
        assert_eq!(r, Ok(None));
        assert_eq!(rest, b"PRODUCT\n");
        let (r, rest) = run(false, true, &[b"\r\n".to_vec(), b"{}\n".to_vec()]);
        assert_eq!(r, Ok(None));
        assert_eq!(rest, b"\r\n{}\n");
        // A closed stream without a byte: served, and the driver sees the end.
        assert_eq!(run(false, true, &[]).0, Ok(None));
        // A few bytes that never become a signature nor anything else:
        // served as they are once proxy_timeout passes.
        let (r, rest) = run(false, true, &[b"PRO".to_vec()]);
        assert_eq!(r, Ok(None));
        assert_eq!(rest, b"PRO");
        // A header started and not finished: refused either way.
        let started = [b"PROXY TCP4 1".to_vec()];
        let reader = |required| {
            let mut r = HeaderReader::new(required, true);
            assert_eq!(r.handle_peek(&started[0]), Ok(Step::Take(started[0].len())));
            r
        };
        assert_eq!(reader(false).handle_timeout(), Err(ProxyFailure::Timeout));
        assert_eq!(reader(true).handle_timeout(), Err(ProxyFailure::Timeout));
        assert_eq!(
            HeaderReader::new(true, true).handle_timeout(),
            Err(ProxyFailure::Timeout)
        );
    }

    #[test]
    fn trust_matches_cidrs_and_mapped_addresses() {
        let nets = ["10.0.0.0/8", "::1/128"].map(|n| n.parse::<IpNet>().expect("net"));
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert!(is_trusted(&nets, ip("10.1.2.3")));
        assert!(is_trusted(&nets, ip("::ffff:10.1.2.3")));
        assert!(is_trusted(&nets, ip("::1")));
        assert!(!is_trusted(&nets, ip("11.0.0.1")));
        assert!(!is_trusted(&nets, ip("127.0.0.1")));
        assert!(!is_trusted(&[], ip("10.1.2.3")));
    }

    /// Headers of every kind, each with the outcome it must give.
    fn headers() -> Vec<(Vec<u8>, Verdict)> {
        let tlv = Builder::with_addresses(
            0x21,
            ppp::v2::Protocol::Stream,
            (
                "[2001:db8::9]:7000".parse::<SocketAddr>().expect("a"),
                "[2001:db8::1]:1".parse::<SocketAddr>().expect("a"),
            ),
        )
        .write_tlv(Type::Authority, b"radar.example")
        .expect("tlv")
        .build()
        .expect("header");
        vec![
            (
                b"PROXY TCP4 192.0.2.7 10.0.0.1 51234 30050\r\n".to_vec(),
                Ok(addr("192.0.2.7:51234")),
            ),
            (
                b"PROXY TCP6 2001:db8::7 2001:db8::1 4000 30050\r\n".to_vec(),
                Ok(addr("[2001:db8::7]:4000")),
            ),
            (b"PROXY UNKNOWN\r\n".to_vec(), Ok(None)),
            (v2_tcp4([192, 0, 2, 7], 51234), Ok(addr("192.0.2.7:51234"))),
            (v2(0x0, 0x00, &[], &[]), Ok(None)),
            (tlv, Ok(addr("[2001:db8::9]:7000"))),
            (
                b"PROXY TCP4 1.2.3.4\r\n".to_vec(),
                Err(ProxyFailure::Malformed),
            ),
        ]
    }

    /// Splits `bytes` at the given points (taken modulo its length).
    fn split(bytes: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        cuts.sort_unstable();
        let mut chunks = Vec::new();
        let mut at = 0;
        for c in cuts.into_iter().chain([bytes.len()]) {
            chunks.push(bytes[at..c].to_vec());
            at = c;
        }
        chunks.retain(|c| !c.is_empty());
        chunks
    }

    proptest! {
        /// Any split of a header and the frames after it gives the same
        /// outcome as one write, and leaves exactly the frames.
        #[test]
        fn any_split_gives_the_same_result(
            which in 0usize..7,
            required in any::<bool>(),
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
        ) {
            let (header, expected) = headers().swap_remove(which);
            let frames = b"{\"node_id\":\"radar3\"}\n\x00\x01PROXY \r\n".to_vec();
            let bytes = [header, frames.clone()].concat();
            let (result, rest) = run(required, true, &split(&bytes, &cuts));
            prop_assert_eq!(result, expected);
            if expected.is_ok() {
                prop_assert_eq!(rest, frames);
            }
        }

        /// Whatever the bytes, the reader ends within its bound and takes
        /// no more than the header's bound.
        #[test]
        fn arbitrary_bytes_end_within_the_bound(
            prefix in 0usize..3,
            body in proptest::collection::vec(any::<u8>(), 0..1500),
            cuts in proptest::collection::vec(any::<usize>(), 0..6),
        ) {
            let start: &[u8] = [&b""[..], V1_PREFIX, V2_SIGNATURE][prefix];
            let bytes = [start, &body[..]].concat();
            let (_, rest) = run(true, true, &split(&bytes, &cuts));
            prop_assert!(bytes.len() - rest.len() <= MAX_HEADER_BYTES);
        }
    }
}
