//! Deadlines of the blocking calls, and the one way they wait: `poll(2)` in whole milliseconds,
//! rounded up. Socket timeouts (SO_RCVTIMEO) are not used: under 1 µs left they become `{0, 0}`,
//! which the kernel reads as "wait forever".

use std::io;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// When a blocking call must have returned, and the limit it was given (for error texts).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline {
    at: Option<Instant>,
    limit: Duration,
}

impl Deadline {
    /// A deadline `limit` from now; `None` waits without limit.
    pub(crate) fn after(limit: Option<Duration>) -> Deadline {
        Deadline {
            at: limit.map(|l| Instant::now() + l),
            limit: limit.unwrap_or_default(),
        }
    }

    /// The limit as text for error messages, such as "400 ms".
    pub(crate) fn limit_text(&self) -> String {
        format!("{} ms", self.limit.as_millis())
    }

    /// The `poll(2)` timeout: -1 without a deadline, else the milliseconds left rounded up (at
    /// least 1); `None` once the deadline has passed.
    fn poll_ms(&self) -> Option<libc::c_int> {
        let Some(at) = self.at else { return Some(-1) };
        let left = at.checked_duration_since(Instant::now()).filter(|l| !l.is_zero())?;
        let ms = left.as_nanos().div_ceil(1_000_000);
        Some(ms.min(libc::c_int::MAX as u128) as libc::c_int)
    }

    /// Sleeps a millisecond (less if the deadline comes first), for what cannot be polled;
    /// `Timeout` once the deadline has passed.
    pub(crate) fn nap(&self, timed_out: impl Fn() -> String) -> Result<()> {
        let Some(ms) = self.poll_ms() else {
            return Err(Error::Timeout(timed_out().into()));
        };
        let ms = if ms < 0 { 1 } else { ms.min(1) };
        std::thread::sleep(Duration::from_millis(ms as u64));
        Ok(())
    }

    /// Waits until `fd` is ready for `events` (`POLLIN`, `POLLOUT`) and returns what it is
    /// ready for, or `Timeout` with the text `timed_out()` once the deadline passes.
    pub(crate) fn wait(
        &self,
        fd: RawFd,
        events: libc::c_short,
        timed_out: impl Fn() -> String,
    ) -> Result<libc::c_short> {
        loop {
            let Some(ms) = self.poll_ms() else {
                return Err(Error::Timeout(timed_out().into()));
            };
            let mut pfd = libc::pollfd { fd, events, revents: 0 };
            // SAFETY: one valid pollfd, for the duration of the call.
            match unsafe { libc::poll(&mut pfd, 1, ms) } {
                1 => return Ok(pfd.revents),
                0 => {}
                _ => {
                    let e = io::Error::last_os_error();
                    if e.kind() != io::ErrorKind::Interrupted {
                        return Err(Error::io("poll", e));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn under_a_millisecond_left_waits_one_millisecond_not_forever() {
        let d = Deadline {
            at: Some(Instant::now() + Duration::from_nanos(500)),
            limit: Duration::from_millis(1),
        };
        assert!(matches!(d.poll_ms(), Some(1) | None));
        let past = Deadline {
            at: Some(Instant::now()),
            limit: Duration::ZERO,
        };
        assert_eq!(past.poll_ms(), None);
        assert_eq!(Deadline::after(None).poll_ms(), Some(-1));
        let d = Deadline::after(Some(Duration::from_micros(1500)));
        assert!(matches!(d.poll_ms(), Some(1..=2) | None));
    }

    #[test]
    fn a_wait_past_its_deadline_times_out() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let d = Deadline::after(Some(Duration::from_millis(20)));
        let t = Instant::now();
        let r = d.wait(std::os::fd::AsRawFd::as_raw_fd(&a), libc::POLLIN, || {
            "nothing came".into()
        });
        assert!(matches!(r, Err(Error::Timeout(ref t)) if t == "nothing came"), "{r:?}");
        assert!(t.elapsed() >= Duration::from_millis(20));
    }
}
