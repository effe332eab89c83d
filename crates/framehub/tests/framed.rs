//! framehub's codecs under tokio-util's `FramedRead`/`Framed` over real TCP sockets: a skipped
//! frame (an oversize line, an invalid COBS frame, a space packet with an unknown ID) is
//! counted and the stream goes on to every good frame after it; only a lost framing ends it.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use framehub::codec::{
    CobsCodec, CodecError, FrameDecoder, FramingConfig, LengthCodec, LengthPrefix, LinesCodec,
    SpacePacketCodec, SpacePacketConfig,
};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::{Decoder, Framed, FramedRead};

const PATIENCE: Duration = Duration::from_secs(10);

/// A connected pair of sockets on 127.0.0.1:0: (the writer's end, the reader's end).
async fn socket_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (writer, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
    let writer = writer.unwrap();
    writer.set_nodelay(true).unwrap();
    (writer, accepted.unwrap().0)
}

/// Writes `writes` one by one (each its own `write`, with a pause so that most arrive as
/// separate reads), then closes the connection.
async fn send(mut writer: TcpStream, writes: Vec<Vec<u8>>) {
    for write in writes {
        writer.write_all(&write).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    writer.shutdown().await.unwrap();
}

/// Everything a `FramedRead` yields until its stream ends, and its decoder.
async fn read_all<R, D>(mut frames: FramedRead<R, D>) -> (Vec<Result<Bytes, CodecError>>, D)
where
    R: AsyncRead + Unpin,
    D: Decoder<Item = Bytes, Error = CodecError>,
{
    let mut out = Vec::new();
    loop {
        match tokio::time::timeout(PATIENCE, frames.next()).await {
            Ok(Some(item)) => out.push(item),
            Ok(None) => return (out, frames.into_parts().codec),
            Err(_) => panic!("stream stalled after {} items", out.len()),
        }
    }
}

fn ok(frames: &[&str]) -> Vec<Bytes> {
    frames.iter().map(|f| Bytes::from(f.to_string())).collect()
}

fn frames_only(items: Vec<Result<Bytes, CodecError>>) -> Vec<Bytes> {
    items
        .into_iter()
        .map(|item| item.expect("no error: only a lost framing is one"))
        .collect()
}

/// The lines sent by `oversized_line_writes`: an oversized line in the middle, sent over
/// several writes (longer than one 8 KiB `FramedRead` read), then more good lines.
fn oversized_line_writes() -> Vec<Vec<u8>> {
    let mut writes = vec![b"first\nsecond\r\n".to_vec(), b"too long: ".to_vec()];
    writes.extend((0..4).map(|_| vec![b'x'; 5000]));
    writes.push(b"\nthird\n".to_vec());
    writes.push(b"fourth\nlast line without newline".to_vec());
    writes
}

const GOOD_LINES: [&str; 5] = [
    "first",
    "second",
    "third",
    "fourth",
    "last line without newline",
];

#[tokio::test]
async fn framed_read_goes_past_an_oversized_line() {
    let (writer, reader) = socket_pair().await;
    let sender = tokio::spawn(send(writer, oversized_line_writes()));
    let (items, codec) = read_all(FramedRead::new(reader, LinesCodec::new(64))).await;
    sender.await.unwrap();
    assert_eq!(frames_only(items), ok(&GOOD_LINES));
    assert_eq!(codec.skipped().oversize, 1);
    assert_eq!(codec.skipped().total(), 1);
}

#[tokio::test]
async fn framed_read_over_frame_decoder_goes_past_an_oversized_line() {
    let (writer, reader) = socket_pair().await;
    let sender = tokio::spawn(send(writer, oversized_line_writes()));
    let decoder = FrameDecoder::new(&FramingConfig::Lines, 64);
    let (items, decoder) = read_all(FramedRead::new(reader, decoder)).await;
    sender.await.unwrap();
    assert_eq!(frames_only(items), ok(&GOOD_LINES));
    assert_eq!(decoder.skipped().oversize, 1);
}

/// The skip count is readable while the stream runs, through `FramedRead::decoder()`.
#[tokio::test]
async fn skips_are_visible_as_they_happen() {
    let (mut writer, reader) = socket_pair().await;
    let mut lines = FramedRead::new(reader, LinesCodec::new(8));
    writer
        .write_all(b"ok\nfar too long for eight\nnext\n")
        .await
        .unwrap();
    assert_eq!(lines.next().await.unwrap().unwrap(), "ok");
    assert_eq!(lines.next().await.unwrap().unwrap(), "next");
    assert_eq!(lines.decoder().skipped().oversize, 1);
    drop(writer);
    assert!(lines.next().await.is_none());
}

fn cobs_frame(payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0];
    frame.extend_from_slice(&cobs::encode_vec(payload));
    frame.push(0);
    frame
}

#[tokio::test]
async fn framed_read_goes_past_invalid_cobs_frames() {
    let (writer, reader) = socket_pair().await;
    let writes = vec![
        cobs_frame(b"one\0"),
        // 0x05 announces four more bytes, but the frame ends after one.
        b"\x05a\0".to_vec(),
        cobs_frame(b"two"),
        // Over the maximum once decoded, sent over two writes.
        [cobs_frame(&[7; 100]), cobs_frame(b"three")].concat(),
        b"\x03ab\x09bad\0".to_vec(),
        cobs_frame(b"four"),
        // Never terminated: dropped at the end of the stream.
        b"\x03ab".to_vec(),
    ];
    let sender = tokio::spawn(send(writer, writes));
    let (items, codec) = read_all(FramedRead::new(reader, CobsCodec::new(32))).await;
    sender.await.unwrap();
    assert_eq!(
        frames_only(items),
        [&b"one\0"[..], b"two", b"three", b"four"]
    );
    let skipped = codec.skipped();
    assert_eq!(skipped.invalid_cobs, 2);
    assert_eq!(skipped.oversize, 1);
    assert_eq!(skipped.truncated, 1);
    assert_eq!(skipped.total(), 4);
}

#[tokio::test]
async fn framed_read_over_frame_decoder_goes_past_invalid_cobs_frames() {
    let (writer, reader) = socket_pair().await;
    let writes = vec![cobs_frame(b"one"), b"\x05a\0".to_vec(), cobs_frame(b"two")];
    let sender = tokio::spawn(send(writer, writes));
    let decoder = FrameDecoder::new(&FramingConfig::Cobs, 32);
    let (items, decoder) = read_all(FramedRead::new(reader, decoder)).await;
    sender.await.unwrap();
    assert_eq!(frames_only(items), ok(&["one", "two"]));
    assert_eq!(decoder.skipped().invalid_cobs, 1);
}

/// A space packet with one byte of data.
fn space_packet(packet_id: u16, data: u8) -> Vec<u8> {
    let mut packet = packet_id.to_be_bytes().to_vec();
    packet.extend_from_slice(&[0xC0, 0, 0, 0, data]);
    packet
}

#[tokio::test]
async fn framed_read_skips_unknown_packet_ids_and_garbage() {
    let (writer, reader) = socket_pair().await;
    let writes = vec![
        space_packet(0x1801, 1),
        space_packet(0x0802, 2),
        [&[0xFF, 0xEE][..], &space_packet(0x1801, 3)].concat(),
    ];
    let sender = tokio::spawn(send(writer, writes));
    let config = SpacePacketConfig {
        allowed_packet_ids: Some(vec![0x1801]),
    };
    let framed = FramedRead::new(reader, SpacePacketCodec::new(&config, 64));
    let (items, codec) = read_all(framed).await;
    sender.await.unwrap();
    assert_eq!(
        frames_only(items),
        [space_packet(0x1801, 1), space_packet(0x1801, 3)]
    );
    assert_eq!(codec.skipped().unknown_packet_id, 1);
    assert_eq!(codec.skipped().invalid_header, 1);
}

/// A `length` prefix over the maximum loses the framing: the one error, then the end.
#[tokio::test]
async fn a_lost_framing_ends_the_stream() {
    let (mut writer, reader) = socket_pair().await;
    // All written before reading: the reader closes with bytes unread.
    writer
        .write_all(b"\0\0\0\x02hi\0\0\x10\0\0\0\0\x02no")
        .await
        .unwrap();
    writer.shutdown().await.unwrap();
    let framed = FramedRead::new(reader, LengthCodec::new(LengthPrefix::default(), 16));
    let (items, codec) = read_all(framed).await;
    assert_eq!(items.len(), 2, "{items:?}");
    assert_eq!(items[0].as_ref().unwrap(), "hi");
    assert!(matches!(
        items[1],
        Err(CodecError::LengthOversize {
            announced: 4096,
            max: 16
        })
    ));
    assert_eq!(codec.skipped().total(), 0);
}

/// One codec value both ways with `Framed`: what one end sends, the other receives.
#[tokio::test]
async fn framed_both_ways() {
    let (writer, reader) = socket_pair().await;
    let prefix = LengthPrefix::default();
    let mut a = Framed::new(writer, LengthCodec::new(prefix, 1024));
    let mut b = Framed::new(reader, LengthCodec::new(prefix, 1024));
    a.send(Bytes::from_static(b"ping")).await.unwrap();
    assert_eq!(b.next().await.unwrap().unwrap(), "ping");
    b.send(Bytes::from_static(b"pong")).await.unwrap();
    assert_eq!(a.next().await.unwrap().unwrap(), "pong");
    // Refused before anything is written: the stream stays usable.
    assert!(matches!(
        a.send(Bytes::from(vec![0; 2000])).await,
        Err(CodecError::Oversize { max: 1024 })
    ));
    a.send(Bytes::from_static(b"after")).await.unwrap();
    assert_eq!(b.next().await.unwrap().unwrap(), "after");
    let mut lines = Framed::new(a.into_inner(), LinesCodec::new(64));
    lines.send(Bytes::from_static(b"a line")).await.unwrap();
    drop(lines);
    let mut rest = FramedRead::new(b.into_inner(), LinesCodec::new(64));
    assert_eq!(rest.next().await.unwrap().unwrap(), "a line");
    assert!(rest.next().await.is_none());
}
