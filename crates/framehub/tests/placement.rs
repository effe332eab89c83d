//! Thread placement, read back from the kernel: with `[runtime]` set, the
//! hub's I/O threads (`framehub-io`) are allowed only on the configured
//! CPUs (`Cpus_allowed_list` in /proc/self/task/*/status), run at the
//! configured nice value, and serve connections.
//!
//! One test in this binary: the threads are found by name, so two hubs
//! with their own runtimes must not run at once.

mod common;

use std::fs;

use common::*;
use framehub::runtime::IO_THREAD_NAME;
use framehub::{HubConfig, RuntimeConfig, ThreadPriority};

/// Each `framehub-io` thread of this process: (tid, Cpus_allowed_list,
/// nice). A thread that exits while being read is left out.
fn io_threads() -> Vec<(String, String, i64)> {
    let mut out = Vec::new();
    for task in fs::read_dir("/proc/self/task").expect("procfs") {
        let task = task.expect("task").path();
        let comm = fs::read_to_string(task.join("comm")).unwrap_or_default();
        if comm.trim() != IO_THREAD_NAME {
            continue;
        }
        let (Ok(status), Ok(stat)) = (
            fs::read_to_string(task.join("status")),
            fs::read_to_string(task.join("stat")),
        ) else {
            continue;
        };
        let cpus = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .expect("Cpus_allowed_list")
            .trim()
            .to_owned();
        // Field 19 of stat is the nice value; the command name (field 2)
        // is in parentheses and may hold spaces, so count after it.
        let after_comm = &stat[stat.rfind(')').expect("comm end") + 2..];
        let nice = after_comm
            .split(' ')
            .nth(19 - 3)
            .and_then(|n| n.parse().ok())
            .expect("nice");
        let tid = task
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        out.push((tid, cpus, nice));
    }
    out
}

#[tokio::test]
async fn io_threads_run_on_the_configured_cpu_at_the_configured_nice_value() {
    assert!(io_threads().is_empty(), "no hub runtime before the hub");
    let hub = start_config(HubConfig {
        listener: vec![node_listener(None)],
        runtime: RuntimeConfig {
            io_threads: 2,
            cpu_affinity: vec![0],
            thread_priority: Some(ThreadPriority::Nice(5)),
        },
        ..HubConfig::default()
    })
    .await;
    // It serves from those threads.
    let r = hub.receiver("radar1");
    let mut s = connect(&hub).await;
    send_line(&mut s, &detection("radar1", None, 1)).await;
    r.recv_timeout(PATIENCE).await.expect("served");

    // Two workers, and any blocking-pool thread the runtime started (they
    // are placed the same way).
    let threads = io_threads();
    assert!(threads.len() >= 2, "{threads:?}");
    for (tid, cpus, nice) in &threads {
        assert_eq!(cpus, "0", "thread {tid}");
        assert_eq!(*nice, 5, "thread {tid}");
    }
    // The test's own threads are left alone.
    let own = fs::read_to_string("/proc/thread-self/status").expect("status");
    assert!(!own.contains("Cpus_allowed_list:\t0\n") || num_cpus_allowed() == 1);

    hub.shutdown().await;
    drop(hub);
    eventually("I/O threads gone", || {
        let gone = io_threads().is_empty();
        async move { gone }
    })
    .await;
}

fn num_cpus_allowed() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
