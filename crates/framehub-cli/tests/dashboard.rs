//! The dashboard in a real browser: `framehub serve` runs, frames are
//! pushed, and headless Chromium loads `/` (installed with apt-get when
//! missing; the test fails, never skips, when it cannot run). The figures
//! on the rendered page must be the ones `/api/stats` reports for the same
//! statistics period, and must change when the traffic does.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::*;
use serde_json::Value;

/// The Chromium binary, installed from the Debian package when missing.
fn chromium() -> PathBuf {
    let find = || {
        ["chromium", "chromium-browser"].iter().find_map(|name| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|p| p.join(name))
                    .find(|p| p.is_file())
            })
        })
    };
    if let Some(path) = find() {
        return path;
    }
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .unwrap_or_else(|e| panic!("chromium is missing and apt-get cannot run: {e}"))
    };
    assert!(apt(&["update"]).success(), "apt-get update failed");
    assert!(
        apt(&["install", "-y", "chromium"]).success(),
        "apt-get install chromium failed: the browser test cannot run"
    );
    find().expect("chromium on PATH after apt-get install")
}

/// Loads the page in headless Chromium, lets its script poll for about
/// 2.5 s of virtual time, and returns every figure the page shows
/// (`data-k` name -> text as displayed).
fn load_page(browser: &Path, admin: SocketAddr, profile: &Path) -> HashMap<String, String> {
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--virtual-time-budget=2500",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("http://{admin}/"))
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dom = String::from_utf8(out.stdout).expect("utf-8 DOM");
    // The figures are in the rendered markup; the script below it holds
    // the templates.
    let body = &dom[..dom.find("<script").expect("the page's script")];
    let mut figures = HashMap::new();
    for part in body.split("data-k=\"").skip(1) {
        let (key, rest) = part.split_once('"').expect("attribute end");
        let text = rest[rest.find('>').expect("tag end") + 1..]
            .split('<')
            .next()
            .expect("text");
        figures.insert(key.to_owned(), text.to_owned());
    }
    figures
}

/// A figure as a number: digits with thousands separators.
fn int(figures: &HashMap<String, String>, key: &str) -> u64 {
    let text = figures
        .get(key)
        .unwrap_or_else(|| panic!("{key} is not on the page: {figures:?}"));
    text.replace(',', "")
        .parse()
        .unwrap_or_else(|_| panic!("{key} = {text:?} is not an integer"))
}

/// Loads the page until it shows the statistics period `/api/stats` is
/// at right after, and checks the listener's figures are that period's.
fn page_matching_stats(
    browser: &Path,
    admin: SocketAddr,
    profile: &Path,
) -> (HashMap<String, String>, Value) {
    for _ in 0..10 {
        let page = load_page(browser, admin, profile);
        let stats = get_json(admin, "/api/stats");
        if int(&page, "seq") != stats["seq"].as_u64().expect("seq") {
            continue; // a period ended in between: look again
        }
        let l = &stats["listeners"][0];
        assert_eq!(l["listener"], "radars");
        for key in ["connections_open", "frames_in"] {
            assert_eq!(
                int(&page, &format!("listener.radars.{key}")),
                l[key].as_u64().expect(key),
                "{key}: page {page:?} vs /api/stats {stats}"
            );
        }
        let shown: f64 = page["listener.radars.frames_in_per_sec"]
            .replace(',', "")
            .parse()
            .expect("rate");
        let rate = l["frames_in_per_sec"].as_f64().expect("rate");
        assert!(
            (shown - rate).abs() <= 0.51,
            "frames/s: page {shown} vs /api/stats {rate}"
        );
        return (page, stats);
    }
    panic!("the page never showed the period /api/stats was at");
}

#[test]
fn dashboard_in_chromium_shows_the_stats_and_follows_traffic() {
    let browser = chromium();
    let dir = temp_dir("dashboard");
    let out = dir.join("frames.ndjson");
    let mut daemon = Daemon::with_config(
        &dir,
        r#"
stats_interval = "2s"
[[listener]]
name = "radars"
bind = "127.0.0.1:0"
"#,
        &["--out", out.to_str().expect("path")],
    );
    let addr = daemon.addr();
    let admin = daemon.admin();
    let profile = dir.join("chromium-profile");
    eventually("first statistics period", || {
        get_json(admin, "/api/stats")["seq"].as_u64() >= Some(1)
    });

    // Quiet: nothing received, no node, no connection.
    let (quiet, _) = page_matching_stats(&browser, admin, &profile);
    assert_eq!(int(&quiet, "listener.radars.frames_received_total"), 0);
    assert_eq!(int(&quiet, "listener.radars.frames_in"), 0);
    assert!(!quiet.keys().any(|k| k.starts_with("node.")), "{quiet:?}");

    // Traffic: one node sending 20 frames every 100 ms until stopped.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let mut stream = TcpStream::connect(addr).expect("connect");
    let peer = stream.local_addr().expect("addr").to_string();
    let sender = {
        let (stop, sent) = (stop.clone(), sent.clone());
        std::thread::spawn(move || {
            let mut ts = 0;
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..20 {
                    stream
                        .write_all(detection("radar1", None, ts).as_bytes())
                        .expect("write");
                    ts += 1;
                }
                sent.fetch_add(20, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
            stream
        })
    };
    eventually("a whole period with traffic", || {
        let stats = get_json(admin, "/api/stats");
        stats["listeners"][0]["frames_in"].as_u64() > Some(0)
            && stats["listeners"][0]["connections_open"] == 1
    });
    let (busy, stats) = page_matching_stats(&browser, admin, &profile);
    assert!(int(&busy, "listener.radars.frames_in") > 0, "{stats}");
    assert_eq!(int(&busy, "listener.radars.connections_open"), 1);
    assert!(int(&busy, "listener.radars.frames_received_total") > 0);
    assert!(int(&busy, "node.radar1.frames") > 0, "{busy:?}");
    let conn_peer = busy
        .iter()
        .find(|(k, _)| k.starts_with("conn.") && k.ends_with(".peer"))
        .map(|(_, v)| v.clone())
        .expect("a connection row");
    assert_eq!(conn_peer, peer);

    // Traffic stops and the connection closes: the totals are exact, and
    // the closed connection is listed with its reason.
    stop.store(true, Ordering::Relaxed);
    let stream = sender.join().expect("sender");
    drop(stream);
    let total = sent.load(Ordering::Relaxed);
    eventually("connection closed", || {
        get_json(admin, "/api/connections")["total"] == 0
    });
    let done = load_page(&browser, admin, &profile);
    assert_eq!(int(&done, "listener.radars.frames_received_total"), total);
    assert_eq!(int(&done, "node.radar1.frames"), total);
    let closed = get_json(admin, "/api/connections?state=closed");
    let id = closed["connections"][0]["id"].as_u64().expect("closed id");
    assert_eq!(done[&format!("closed.{id}.reason")], "peer_closed");
    assert_eq!(int(&done, &format!("closed.{id}.frames_in")), total);
    assert!(int(&done, "sink.out.records_written") <= total, "{done:?}");
    assert!(!done.keys().any(|k| k.starts_with("conn.")), "{done:?}");
    assert_eq!(daemon.terminate(), 0);
}

/// The page needs nothing from elsewhere: no external script, style,
/// font or image, and it fits a phone's width.
#[test]
fn dashboard_page_is_self_contained() {
    let mut daemon = Daemon::start(&["--listen", "127.0.0.1:0", "--out", "/dev/null"]);
    let admin = daemon.admin();
    let (status, page) = http_get(admin, "/");
    assert_eq!(status, 200);
    assert!(page.contains("<title>framehub</title>"));
    assert!(page.contains("name=\"viewport\""), "phone-sized screens");
    for external in ["http://", "https://", "//cdn", "src=\"", "<link"] {
        assert!(!page.contains(external), "the page refers to {external:?}");
    }
    let overview = get_json(admin, "/api/overview");
    assert_eq!(overview["listeners"][0]["name"], "default");
    assert_eq!(overview["sinks"][0]["name"], "out");
}

/// `framehub top --once` draws the same view in text: the node, its
/// connection and the listener's total received.
#[test]
fn top_once_shows_the_daemon() {
    let mut daemon = Daemon::start(&["--listen", "127.0.0.1:0", "--out", "/dev/null"]);
    let addr = daemon.addr();
    let admin = daemon.admin();
    let mut s = TcpStream::connect(addr).expect("connect");
    for ts in 0..37 {
        s.write_all(detection("radar7", None, ts).as_bytes())
            .expect("write");
    }
    eventually("frames counted", || {
        get_json(admin, "/api/overview")["listeners"][0]["frames_received_total"] == 37
    });
    let out = framehub()
        .args(["top", "--once", "--size", "140x40", "--admin"])
        .arg(admin.to_string())
        .output()
        .expect("run top");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let screen = String::from_utf8(out.stdout).expect("utf-8");
    assert!(
        screen.contains(&format!("framehub top · {admin}")),
        "{screen}"
    );
    let listener = screen
        .lines()
        .find(|l| l.contains("│default "))
        .unwrap_or_else(|| panic!("no listener row: {screen}"));
    assert!(listener.split_whitespace().any(|w| w == "37"), "{listener}");
    let peer = s.local_addr().expect("addr").to_string();
    let conn = screen
        .lines()
        .find(|l| l.contains(&peer))
        .unwrap_or_else(|| panic!("no connection row: {screen}"));
    assert!(conn.contains("radar7") && conn.contains(" 37 "), "{conn}");
    // A daemon that is not there: an error, not a blank screen.
    drop(daemon);
    let gone = framehub()
        .args(["top", "--once", "--admin"])
        .arg(admin.to_string())
        .output()
        .expect("run top");
    assert!(!gone.status.success());
    assert!(String::from_utf8_lossy(&gone.stderr).contains("cannot connect"));
}
