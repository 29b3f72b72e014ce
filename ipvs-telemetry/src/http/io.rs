//! A connection wrapper that gives up on peers that stall: no byte read for [`READ_IDLE`]
//! (idle keep-alive connections included) or a write that cannot progress for
//! [`WRITE_STALL`] (a client that stopped reading a large exposition).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Longest wait for the next byte from a client, including between keep-alive requests.
pub(super) const READ_IDLE: Duration = Duration::from_secs(120);
/// Longest time a write may stay blocked on a client that does not read.
pub(super) const WRITE_STALL: Duration = Duration::from_secs(30);

/// `T` with read-idle and write-stall deadlines.
pub(super) struct TimeoutIo<T> {
    inner: T,
    read: Pin<Box<Sleep>>,
    read_armed: bool,
    write: Pin<Box<Sleep>>,
    write_armed: bool,
}

impl<T> TimeoutIo<T> {
    /// Wraps `inner`.
    pub(super) fn new(inner: T) -> Self {
        TimeoutIo {
            inner,
            read: Box::pin(tokio::time::sleep(READ_IDLE)),
            read_armed: false,
            write: Box::pin(tokio::time::sleep(WRITE_STALL)),
            write_armed: false,
        }
    }
}

fn check(
    sleep: &mut Pin<Box<Sleep>>,
    armed: &mut bool,
    limit: Duration,
    cx: &mut Context<'_>,
    what: &str,
) -> Option<io::Error> {
    if !*armed {
        sleep.as_mut().reset(Instant::now() + limit);
        *armed = true;
    }
    if sleep.as_mut().poll(cx).is_ready() {
        return Some(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("{what} timed out"),
        ));
    }
    None
}

impl<T: AsyncRead + Unpin> AsyncRead for TimeoutIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Pending => {
                match check(&mut this.read, &mut this.read_armed, READ_IDLE, cx, "read") {
                    Some(e) => Poll::Ready(Err(e)),
                    None => Poll::Pending,
                }
            }
            ready => {
                this.read_armed = false;
                ready
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> TimeoutIo<T> {
    fn pending_write<R>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<R>> {
        match check(
            &mut self.write,
            &mut self.write_armed,
            WRITE_STALL,
            cx,
            "write",
        ) {
            Some(e) => Poll::Ready(Err(e)),
            None => Poll::Pending,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TimeoutIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Pending => this.pending_write(cx),
            ready => {
                this.write_armed = false;
                ready
            }
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write_vectored(cx, bufs) {
            Poll::Pending => this.pending_write(cx),
            ready => {
                this.write_armed = false;
                ready
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Pending => this.pending_write(cx),
            ready => {
                this.write_armed = false;
                ready
            }
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_shutdown(cx) {
            Poll::Pending => this.pending_write(cx),
            ready => ready,
        }
    }
}
