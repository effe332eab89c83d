//! The process's file-descriptor limit (`RLIMIT_NOFILE`): raised to its
//! hard limit when a daemon starts ([`raise_nofile_limit`]), and read by the
//! accept loops, which close a new connection at once when fewer than
//! `fd_reserve` descriptors would be left ([`is_within_reserve`]), so the
//! admin port and the sinks keep working when devices take every one.
//!
//! systemd starts services with a soft limit of 1024 and a hard limit far
//! above it; a server that needs thousands of sockets raises its own.

use std::io;

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// The descriptor limits of the process, after [`raise_nofile_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdLimits {
    /// The soft limit in effect: descriptors the process may open.
    pub soft: u64,
    /// The hard limit (the most the soft one can be raised to; `None`:
    /// unlimited).
    pub hard: Option<u64>,
    /// The soft limit before it was raised (equal to `soft` if it was not).
    pub was: u64,
}

/// The soft `RLIMIT_NOFILE` now; `None` if unlimited.
pub fn nofile_limit() -> Option<u64> {
    getrlimit(Resource::Nofile).current
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (to the kernel's
/// `fs.nr_open` when the hard limit is unlimited), and says where it stands.
///
/// ```no_run
/// let limits = framehub::fdlimit::raise_nofile_limit()?;
/// println!("{} descriptors (was {})", limits.soft, limits.was);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn raise_nofile_limit() -> io::Result<FdLimits> {
    let Rlimit { current, maximum } = getrlimit(Resource::Nofile);
    let was = current.unwrap_or(u64::MAX);
    let target = match maximum {
        Some(hard) => hard,
        // An unlimited hard limit is still capped by the kernel.
        None => std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(was),
    };
    if target > was {
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(target),
                maximum,
            },
        )?;
    }
    Ok(FdLimits {
        soft: nofile_limit().unwrap_or(u64::MAX),
        hard: maximum,
        was,
    })
}

/// Whether a socket just accepted as descriptor `fd` leaves at least
/// `reserve` descriptors free under `limit`. Descriptors are numbered from
/// the lowest free one, so `fd` is at least the number open before it.
pub(crate) fn is_within_reserve(fd: u64, limit: Option<u64>, reserve: u64) -> bool {
    limit.is_none_or(|limit| fd.saturating_add(1).saturating_add(reserve) <= limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_is_kept_below_the_limit() {
        assert!(is_within_reserve(10, Some(1024), 128));
        assert!(is_within_reserve(895, Some(1024), 128));
        assert!(!is_within_reserve(896, Some(1024), 128));
        assert!(!is_within_reserve(1023, Some(1024), 128));
        assert!(is_within_reserve(1 << 40, None, 128));
        assert!(
            !is_within_reserve(5, Some(64), 128),
            "a limit below the reserve"
        );
    }

    #[test]
    fn raising_never_lowers_the_limit() {
        let before = nofile_limit();
        let limits = raise_nofile_limit().expect("raise");
        assert!(before.is_none_or(|b| limits.soft >= b));
        assert_eq!(Some(limits.soft), nofile_limit().or(Some(u64::MAX)));
        assert!(limits.hard.is_none_or(|h| limits.soft <= h));
    }
}
