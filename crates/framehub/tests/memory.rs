//! Memory bounds under hostile input, measured with a counting allocator
//! (this test binary's global allocator), not eyeballed.
//!
//! The hub runs in this process, so every byte it allocates is counted. The
//! tests take a lock so that they measure one at a time.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use framehub::codec::{FramingConfig, LengthPrefix};
use framehub::{DropReason, ListenerConfig, Protocol};
use tokio::io::AsyncWriteExt;

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

// SAFETY: delegates to the system allocator and only adds bookkeeping.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                let now = CURRENT.fetch_add(new_size - layout.size(), Ordering::Relaxed)
                    + (new_size - layout.size());
                PEAK.fetch_max(now, Ordering::Relaxed);
            } else {
                CURRENT.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn reset_peak() -> usize {
    let now = CURRENT.load(Ordering::Relaxed);
    PEAK.store(now, Ordering::Relaxed);
    now
}

const MIB: usize = 1 << 20;

/// Runs one measurement alone: the lock is held from before its runtime
/// starts until after it is dropped, so no other test's runtime allocates
/// or frees while this one counts.
fn measured(test: impl std::future::Future<Output = ()>) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(test);
    drop(rt);
}

#[test]
fn ten_mib_without_newline_keeps_connection_memory_bounded() {
    measured(async {
        let hub = start(node_listener(Some("t"))).await;
        let r = hub.receiver("radar3");
        let mut s = connect(&hub).await;
        send_line(&mut s, &heartbeat("radar3", Some("t"))).await;
        counters_until(&hub, "authenticated", |c| c.heartbeats == 1).await;

        let chunk = vec![b'x'; 64 << 10];
        let base = reset_peak();
        for _ in 0..160 {
            s.write_all(&chunk).await.expect("write");
        }
        counters_until(&hub, "10 MiB read", |c| c.bytes_received >= 10 * MIB as u64).await;
        let peak = PEAK.load(Ordering::Relaxed) - base;
        // One read buffer plus at most one max-size frame (1 MiB), with slack.
        assert!(
            peak < 2 * MIB,
            "peak {peak} bytes while streaming 10 MiB without a newline"
        );
        assert_eq!(hub.counters().dropped(DropReason::Oversize), 1);
        // The stream goes on after the newline finally comes.
        send_line(&mut s, "").await;
        send_line(&mut s, &detection("radar3", None, 1)).await;
        assert!(r.recv_timeout(PATIENCE).await.is_ok());
    });
}

#[test]
fn four_gib_length_prefix_closes_without_allocating() {
    measured(async {
        let hub = start(ListenerConfig {
            bind: Some(loopback()),
            protocol: Protocol::Raw,
            framing: FramingConfig::Length(LengthPrefix::default()),
            ..ListenerConfig::default()
        })
        .await;
        let mut s = connect(&hub).await;
        let base = reset_peak();
        s.write_all(&[0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3])
            .await
            .expect("write");
        expect_closed(&mut s).await;
        let peak = PEAK.load(Ordering::Relaxed) - base;
        assert!(peak < MIB, "peak {peak} bytes after a 4 GiB length prefix");
        assert_eq!(hub.counters().connections_closed, 1);
    });
}

#[test]
fn full_queue_of_2000_small_frames_stays_small() {
    measured(async {
        let hub = start(node_listener(None)).await;
        let r = hub.receiver("radar3");
        let base = reset_peak();
        let mut s = connect(&hub).await;
        // Each frame is followed by a 30 KiB line that is skipped (not JSON):
        // frames cut from the read buffer would each pin the ~30 KiB around
        // them (2000 x 30 KiB = 60 MB) unless queued frames are copied out.
        let junk = format!("{}\n", "j".repeat(30 << 10));
        for ts in 0..2000 {
            let mut line = detection("radar3", None, ts);
            line.push_str(&" ".repeat(200usize.saturating_sub(line.len() + 1)));
            line.push('\n');
            assert_eq!(line.len(), 200);
            s.write_all(line.as_bytes()).await.expect("write");
            s.write_all(junk.as_bytes()).await.expect("write");
        }
        counters_until(&hub, "2000 delivered", |c| c.frames_delivered == 2000).await;
        drop(s);
        counters_until(&hub, "closed", |c| c.connections_closed == 1).await;
        let held = CURRENT.load(Ordering::Relaxed) as isize - base as isize;
        assert_eq!(r.len(), 2000);
        eprintln!("2000 queued 200-byte frames hold {held} bytes");
        // At least the payloads themselves (the measurement sees them)...
        assert!(
            held >= 2000 * 199,
            "measured {held} bytes: less than the payloads"
        );
        // ...and far from 2000 pinned read buffers (125 MiB) or 4 MB.
        assert!(
            held < 2 * MIB as isize,
            "a full queue of 2000 x 200-byte frames holds {held} bytes"
        );
    });
}

#[test]
fn full_queue_of_densely_sent_frames_stays_near_their_size() {
    measured(async {
        let hub = start(node_listener(None)).await;
        let r = hub.receiver("radar3");
        let base = reset_peak();
        let mut s = connect(&hub).await;
        // Nothing but frames: reads that are (nearly) all delivered frames are
        // handed on without a copy, keeping the read buffer's allocation
        // alive instead; that may cost a third more than the frames, plus
        // the buffer still being filled, never a buffer per frame.
        let mut all = String::new();
        for ts in 0..2000 {
            let mut line = detection("radar3", None, ts);
            line.push_str(&" ".repeat(200usize.saturating_sub(line.len() + 1)));
            line.push('\n');
            all.push_str(&line);
        }
        s.write_all(all.as_bytes()).await.expect("write");
        drop(all);
        counters_until(&hub, "2000 delivered", |c| c.frames_delivered == 2000).await;
        drop(s);
        counters_until(&hub, "closed", |c| c.connections_closed == 1).await;
        let held = CURRENT.load(Ordering::Relaxed) as isize - base as isize;
        assert_eq!(r.len(), 2000);
        eprintln!("2000 densely sent 200-byte frames hold {held} bytes");
        assert!(
            held >= 2000 * 199,
            "measured {held} bytes: less than the payloads"
        );
        assert!(
            held < 2 * 2000 * 200,
            "2000 x 200-byte frames hold {held} bytes"
        );
    });
}

/// An idle authenticated connection keeps no `read_buffer_bytes` (64 KiB)
/// allocation: its hello was read into a small first buffer, and the full
/// one is taken only when the peer streams (issue 16). Heap bytes per
/// connection, both ends counted (the clients run in this process too).
#[test]
fn idle_authenticated_connections_hold_no_full_read_buffer() {
    measured(async {
        let hub = start(node_listener(Some("t"))).await;
        const CONNS: usize = 200;
        let base = CURRENT.load(Ordering::Relaxed);
        let mut open = Vec::with_capacity(CONNS);
        for i in 0..CONNS {
            let mut s = connect(&hub).await;
            send_line(&mut s, &heartbeat(&format!("idle-{i}"), Some("t"))).await;
            open.push(s);
        }
        counters_until(&hub, "every hello read", |c| c.heartbeats == CONNS as u64).await;
        let per_conn = (CURRENT.load(Ordering::Relaxed) - base) / CONNS;
        eprintln!("heap per idle authenticated connection: {per_conn} bytes");
        // The full read buffer alone is 64 KiB; what an idle connection
        // holds besides (its task, egress writer, registry entry, node
        // queue, the client's socket here) is a few KiB.
        assert!(
            per_conn < 16 << 10,
            "{per_conn} bytes of heap per idle authenticated connection"
        );
        // A connection that streams takes the full buffer and goes on.
        let r = hub.receiver("idle-0");
        let frames: String = (1..=500)
            .map(|ts| detection("idle-0", None, ts) + "\n")
            .collect();
        send(&mut open[0], frames.as_bytes()).await;
        for _ in 0..500 {
            assert!(r.recv_timeout(PATIENCE).await.is_ok());
        }
        assert_eq!(hub.counters().dropped_total(), 0);
    });
}
