//! Latency histograms in `/metrics` of a real `framehub serve`: read to
//! delivery, the file sink's writes and syncs; each with cumulative
//! buckets, `_sum` and `_count`, counts rising with traffic.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};

use common::*;

/// One histogram as scraped: `(le, cumulative)` in order, sum, count.
#[derive(Debug)]
struct Scraped {
    buckets: Vec<(String, f64)>,
    sum: f64,
    count: f64,
}

fn scrape(admin: SocketAddr, name: &str, labels: &str) -> Scraped {
    let (status, body) = http_get(admin, "/metrics");
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(&format!("# TYPE {name} histogram\n")),
        "no histogram {name}"
    );
    let value = |line: &str| -> f64 {
        line.rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("not a sample: {line}"))
    };
    let bucket_prefix = format!("{name}_bucket{{{labels}");
    let buckets: Vec<(String, f64)> = body
        .lines()
        .filter(|l| l.starts_with(&bucket_prefix))
        .map(|l| {
            let le = l
                .split("le=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .expect("le label");
            (le.to_owned(), value(l))
        })
        .collect();
    let braces = if labels.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", labels.trim_end_matches(','))
    };
    let single = |suffix: &str| {
        let start = format!("{name}_{suffix}{braces} ");
        body.lines()
            .find(|l| l.starts_with(&start))
            .map(value)
            .unwrap_or_else(|| panic!("no {start}"))
    };
    Scraped {
        buckets,
        sum: single("sum"),
        count: single("count"),
    }
}

/// What Prometheus requires of a histogram's samples.
fn assert_well_formed(h: &Scraped, what: &str) {
    assert!(h.buckets.len() > 5, "{what}: {h:?}");
    let (last_le, last) = h.buckets.last().expect("buckets");
    assert_eq!(last_le, "+Inf", "{what}");
    assert_eq!(*last, h.count, "{what}: +Inf is the count");
    let bounds: Vec<f64> = h.buckets[..h.buckets.len() - 1]
        .iter()
        .map(|(le, _)| le.parse().expect("numeric le"))
        .collect();
    assert!(bounds.windows(2).all(|w| w[0] < w[1]), "{what}: {bounds:?}");
    assert!(
        h.buckets.windows(2).all(|w| w[0].1 <= w[1].1),
        "{what}: buckets are cumulative: {h:?}"
    );
    assert!(h.sum >= 0.0, "{what}");
}

#[test]
fn latency_histograms_appear_and_count_the_traffic() {
    let dir = temp_dir("histograms");
    let out = dir.join("frames.ndjson");
    let mut daemon = Daemon::with_config(
        &dir,
        &format!(
            "[[listener]]\nbind = \"127.0.0.1:0\"\n\n[[sink]]\ntype = \"file\"\nname = \"disk\"\npath = \"{}\"\nfsync = \"always\"\n",
            out.display()
        ),
        &[],
    );
    let addr = daemon.addr();
    let admin = daemon.admin();
    let delivery = "framehub_sink_delivery_latency_seconds";
    let write = "framehub_sink_file_write_duration_seconds";
    let sync = "framehub_sink_file_sync_duration_seconds";
    let disk = "sink=\"disk\",";

    let before = [
        scrape(admin, delivery, ""),
        scrape(admin, write, disk),
        scrape(admin, sync, disk),
    ];
    for (h, what) in before.iter().zip([delivery, write, sync]) {
        assert_well_formed(h, what);
    }
    assert_eq!(before[0].count, 0.0, "no frame yet");

    let mut total = 0;
    for round in 1..=2u64 {
        let mut s = TcpStream::connect(addr).expect("connect");
        for ts in 0..50 {
            s.write_all(detection(&format!("n{round}"), None, ts).as_bytes())
                .expect("send");
        }
        total += 50;
        eventually("the records are in the file", || line_count(&out) >= total);
        let delivered = scrape(admin, delivery, "");
        assert_well_formed(&delivered, delivery);
        assert_eq!(
            delivered.count, total as f64,
            "one observation per frame taken by the sink thread"
        );
        eventually("a write and a sync counted", || {
            let w = scrape(admin, write, disk);
            let y = scrape(admin, sync, disk);
            assert_well_formed(&w, write);
            assert_well_formed(&y, sync);
            w.count >= round as f64 && y.count >= round as f64
        });
    }
    let after = [
        scrape(admin, delivery, ""),
        scrape(admin, write, disk),
        scrape(admin, sync, disk),
    ];
    for (a, b) in after.iter().zip(&before) {
        assert!(a.count > b.count, "{a:?} rose from {b:?}");
        assert!(a.sum > b.sum, "{a:?}: time adds up");
    }
    assert_eq!(daemon.terminate(), 0);
    let _ = std::fs::remove_dir_all(dir);
}
