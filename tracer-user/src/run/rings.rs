//! The ring buffers the session drains as they fill: process events, the kernel programs' log,
//! and any tracer's own rings. One future waits on all of them.

use std::{
    future::poll_fn,
    io,
    os::fd::{AsRawFd, RawFd},
    task::Poll,
};

use tokio::io::{Interest, unix::AsyncFd};

/// Whose ring became readable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Processes,
    Logs,
    /// The tracer at this index of the session's list.
    Tracer(usize),
}

/// A descriptor owned elsewhere (a map or the log reader) that outlives the poller.
struct Borrowed(RawFd);

impl AsRawFd for Borrowed {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// Every ring, registered with the reactor for readability.
#[derive(Default)]
pub struct Rings {
    fds: Vec<(Source, AsyncFd<Borrowed>)>,
}

impl Rings {
    /// Watches `fd`. Its owner must keep it open until the poller is dropped.
    pub fn add(&mut self, source: Source, fd: RawFd) -> io::Result<()> {
        // SAFETY: the fd belongs to a ring buffer map or the log reader, which the session keeps
        // open, unchanged, for longer than this poller lives (it is dropped first).
        let fd = unsafe { AsyncFd::register_with_interest(Borrowed(fd), Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        self.fds.push((source, fd));
        Ok(())
    }

    /// Waits until some ring is readable and returns whose, with its readiness cleared: the
    /// caller drains that ring completely (records arriving later wake the poller again).
    /// Pending forever when there is no ring.
    pub async fn readable(&self) -> Source {
        poll_fn(|cx| {
            for (source, fd) in &self.fds {
                if let Poll::Ready(Ok(mut guard)) = fd.poll_read_ready(cx) {
                    guard.clear_ready();
                    return Poll::Ready(*source);
                }
            }
            Poll::Pending
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::{AsRawFd as _, OwnedFd};

    use super::*;

    fn pipe() -> (OwnedFd, OwnedFd) {
        let mut fds = [0; 2];
        // SAFETY: a valid out-array of two descriptors.
        let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
        assert_eq!(r, 0);
        // SAFETY: both descriptors were just created and are owned here.
        unsafe {
            use std::os::fd::FromRawFd as _;
            (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))
        }
    }

    #[tokio::test]
    async fn the_ring_that_became_readable_is_named() {
        let (a_read, _a_write) = pipe();
        let (b_read, b_write) = pipe();
        let mut rings = Rings::default();
        rings.add(Source::Processes, a_read.as_raw_fd()).unwrap();
        rings.add(Source::Tracer(3), b_read.as_raw_fd()).unwrap();
        // SAFETY: writing one byte from a valid buffer to our own pipe.
        let written = unsafe { libc::write(b_write.as_raw_fd(), [1u8].as_ptr().cast(), 1) };
        assert_eq!(written, 1);
        let source = tokio::time::timeout(std::time::Duration::from_secs(5), rings.readable())
            .await
            .expect("a readable ring");
        assert_eq!(source, Source::Tracer(3));
    }

    #[tokio::test]
    async fn no_ring_means_waiting_forever() {
        let rings = Rings::default();
        let waited =
            tokio::time::timeout(std::time::Duration::from_millis(50), rings.readable()).await;
        assert!(waited.is_err());
    }
}
