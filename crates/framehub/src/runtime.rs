//! Thread placement (`[runtime]`): the hub's own tokio runtime, whose
//! threads are pinned to the configured CPUs and run at the configured
//! priority, as the robotics stage places its I/O thread.
//!
//! Affinity that cannot be applied is a configuration error found before
//! anything is bound. A priority the process is not allowed to take
//! (`SCHED_FIFO` or a negative nice value without `CAP_SYS_NICE` or an
//! `RLIMIT_RTPRIO`/`RLIMIT_NICE` that allows it) is logged once as a
//! warning and the threads run on at the priority they had.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::thread::CpuSet;
use tokio::runtime::Runtime;

use crate::config::{ConfigError, RuntimeConfig, ThreadPriority};

/// The name of the hub's I/O threads, as `/proc/<pid>/task/*/comm` shows it.
pub const IO_THREAD_NAME: &str = "framehub-io";

/// Builds the hub's own runtime when the configuration asks for one.
pub(crate) fn build(config: &RuntimeConfig) -> Result<Option<Runtime>, ConfigError> {
    if !config.is_dedicated() {
        return Ok(None);
    }
    let cpus = cpu_set(&config.cpu_affinity)?;
    let threads = if config.io_threads > 0 {
        config.io_threads
    } else if !config.cpu_affinity.is_empty() {
        config.cpu_affinity.len()
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    };
    let priority = config.thread_priority;
    // Every thread tries; one warning is enough.
    let warned = Arc::new(AtomicBool::new(false));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name(IO_THREAD_NAME)
        .enable_all()
        .on_thread_start(move || place_current_thread(cpus.as_ref(), priority, &warned))
        .build()
        .map_err(|e| ConfigError {
            key: "runtime".into(),
            message: format!("cannot start the I/O runtime: {e}"),
        })?;
    tracing::info!(
        threads,
        cpu_affinity = ?config.cpu_affinity,
        thread_priority = ?priority,
        "hub I/O runs on its own threads"
    );
    Ok(Some(runtime))
}

/// The CPU set of `cpu_affinity`, checked against the CPUs this process may
/// use (a container or `taskset` may allow fewer than the machine has).
fn cpu_set(cpus: &[usize]) -> Result<Option<CpuSet>, ConfigError> {
    if cpus.is_empty() {
        return Ok(None);
    }
    let error = |message: String| ConfigError {
        key: "runtime.cpu_affinity".into(),
        message,
    };
    let allowed = rustix::thread::sched_getaffinity(None)
        .map_err(|e| error(format!("cannot read this process's CPUs: {e}")))?;
    let mut set = CpuSet::new();
    for &cpu in cpus {
        if cpu >= CpuSet::MAX_CPU || !allowed.is_set(cpu) {
            return Err(error(format!("CPU {cpu} is not available to this process")));
        }
        set.set(cpu);
    }
    Ok(Some(set))
}

fn place_current_thread(
    cpus: Option<&CpuSet>,
    priority: Option<ThreadPriority>,
    warned: &AtomicBool,
) {
    if let Some(cpus) = cpus {
        // Checked against the allowed set before the runtime was built;
        // only a change of the process's own affinity since could fail.
        if let Err(e) = rustix::thread::sched_setaffinity(None, cpus) {
            tracing::warn!(error = %e, "cannot pin an I/O thread to its CPUs");
        }
    }
    if let Some(priority) = priority
        && let Err(e) = set_priority(priority)
        && !warned.swap(true, Ordering::Relaxed)
    {
        tracing::warn!(
            thread_priority = ?priority,
            error = %e,
            "cannot set the I/O threads' priority (not permitted?); running at normal priority"
        );
    }
}

/// Sets the calling thread's priority.
pub(crate) fn set_priority(priority: ThreadPriority) -> io::Result<()> {
    match priority {
        ThreadPriority::Nice(nice) => {
            // On Linux a nice value belongs to one thread (task), not to
            // the whole process.
            rustix::process::setpriority_process(Some(rustix::thread::gettid()), nice)
                .map_err(io::Error::from)
        }
        ThreadPriority::Realtime(level) => {
            use thread_priority::{
                RealtimeThreadSchedulePolicy, ThreadPriorityValue, ThreadSchedulePolicy,
            };
            let value = ThreadPriorityValue::try_from(level).map_err(io::Error::other)?;
            thread_priority::set_thread_priority_and_policy(
                thread_priority::thread_native_id(),
                thread_priority::ThreadPriority::Crossplatform(value),
                ThreadSchedulePolicy::Realtime(RealtimeThreadSchedulePolicy::Fifo),
            )
            .map_err(|e| match e {
                thread_priority::Error::OS(code) => io::Error::from_raw_os_error(code),
                other => io::Error::other(other.to_string()),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_runtime_of_its_own_by_default() {
        assert!(build(&RuntimeConfig::default()).expect("valid").is_none());
    }

    #[test]
    fn a_cpu_this_process_cannot_use_is_a_config_error() {
        let err = cpu_set(&[CpuSet::MAX_CPU - 1]).expect_err("no such CPU here");
        assert_eq!(err.key, "runtime.cpu_affinity");
    }

    #[test]
    fn a_lower_priority_is_always_allowed() {
        // Raising the nice value needs no privilege; do it on a thread of
        // its own so the test harness's threads keep theirs.
        let nice = std::thread::spawn(|| {
            set_priority(ThreadPriority::Nice(5)).expect("lowering priority is allowed");
            rustix::process::getpriority_process(Some(rustix::thread::gettid()))
        })
        .join()
        .expect("thread");
        assert_eq!(nice.ok(), Some(5));
    }
}
