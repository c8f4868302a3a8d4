//! What a connection runs over: a small trait with the readiness-based,
//! non-blocking calls the connection loop ([`crate::server::connection`])
//! makes, so that plain TCP, TLS over TCP and WebSocket share the one
//! session loop (limits, flood control, store stalls, slow consumers).
//!
//! Whatever the transport, the loop sees the TCP wire: *framed bytes*, each
//! package a 4-byte big-endian length and a zlib stream. A byte stream
//! (TCP, TLS) passes them through as they are; a message transport
//! (WebSocket) turns each binary message into one such frame on the way in,
//! and each frame into one binary message on the way out. So the frame
//! decoder, the frame and package limits and the error packages are the
//! same code everywhere.
//!
//! [`TcpStream`] implements the trait directly with its own calls: the
//! plain TCP path is what it was, with nothing buffered while idle. Other
//! byte streams go through [`IoTransport`], which keeps a bounded write
//! buffer, pushed out by [`Transport::poll_flush`] (the loop flushes after
//! every batch and times the flush out as it times out a stalled write).

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_util::io::poll_read_buf;

/// Bytes asked of a byte stream per read.
const READ_CHUNK: usize = 8 * 1024;

/// Bytes a buffering transport takes before [`Transport::try_write`] says
/// `WouldBlock`; it takes a whole write once under this, so it holds at most
/// this plus one batch (the connection loop never splits a batch for it).
pub const WRITE_BUFFER: usize = 64 * 1024;

/// What one non-blocking read produced.
#[derive(Debug)]
pub enum Input {
    /// This many bytes of framed input were appended to the buffer.
    Data(usize),
    /// The peer closed its side.
    Eof,
    /// Input that is not a package and cannot be one (a WebSocket text
    /// message): answered with a `protocol` error, the connection stays.
    Refused(String),
    /// Input past a limit the transport enforces itself (a WebSocket
    /// message over the frame limit): a `protocol` error, then closed.
    Fatal(String),
}

/// A connection's transport, as the connection loop drives it. Every call
/// but the `poll_*` ones returns at once (`WouldBlock` when nothing can be
/// done); the `poll_*` ones register the task's waker when pending.
pub trait Transport: Send + 'static {
    /// Ready when [`Transport::try_read`] has something to give (data, the
    /// end, an error).
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// Appends what has arrived to `buf` as framed bytes, without waiting.
    fn try_read(&mut self, buf: &mut BytesMut) -> io::Result<Input>;
    /// Takes some of `bytes` (whole frames) without waiting; `WouldBlock`
    /// when it can take nothing now.
    fn try_write(&mut self, bytes: &[u8]) -> io::Result<usize>;
    /// Ready when [`Transport::try_write`] may take more.
    fn poll_write_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// Whether bytes taken by `try_write` still wait inside the transport
    /// for [`Transport::poll_flush`]. Never, for a plain socket.
    fn has_pending_output(&self) -> bool {
        false
    }
    /// Pushes out what `try_write` took.
    fn poll_flush(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    /// Flushes and closes the sending side.
    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

/// Flushes and closes the sending side of `t`.
pub async fn shutdown<T: Transport>(t: &mut T) -> io::Result<()> {
    poll_fn(|cx| t.poll_shutdown(cx)).await
}

impl Transport for TcpStream {
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        TcpStream::poll_read_ready(self, cx)
    }

    fn try_read(&mut self, buf: &mut BytesMut) -> io::Result<Input> {
        buf.reserve(READ_CHUNK);
        match self.try_read_buf(buf)? {
            0 => Ok(Input::Eof),
            n => Ok(Input::Data(n)),
        }
    }

    fn try_write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        TcpStream::try_write(self, bytes)
    }

    fn poll_write_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        TcpStream::poll_write_ready(self, cx)
    }

    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        AsyncWrite::poll_shutdown(Pin::new(self), cx)
    }
}

/// Any byte stream (a TLS session over TCP) as a [`Transport`]: what was
/// read ahead while waiting for readiness, and a bounded write buffer.
#[derive(Debug)]
pub struct IoTransport<S> {
    /// The stream.
    io: S,
    /// Bytes read while polling for readiness, not yet handed out.
    read: BytesMut,
    /// The stream ended (handed out after what was read before it).
    eof: bool,
    /// Bytes taken by `try_write`, not yet written to the stream.
    write: BytesMut,
    /// Written to the stream but not flushed through it yet.
    unflushed: bool,
}

impl<S> IoTransport<S> {
    /// Wraps `io`.
    pub fn new(io: S) -> Self {
        IoTransport {
            io,
            read: BytesMut::new(),
            eof: false,
            write: BytesMut::new(),
            unflushed: false,
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Transport for IoTransport<S> {
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.read.is_empty() || self.eof {
            return Poll::Ready(Ok(()));
        }
        self.read.reserve(READ_CHUNK);
        if ready!(poll_read_buf(Pin::new(&mut self.io), cx, &mut self.read))? == 0 {
            self.eof = true;
        }
        Poll::Ready(Ok(()))
    }

    fn try_read(&mut self, buf: &mut BytesMut) -> io::Result<Input> {
        if !self.read.is_empty() {
            let n = self.read.len();
            if buf.is_empty() {
                std::mem::swap(buf, &mut self.read);
            } else {
                buf.extend_from_slice(&self.read);
                self.read.clear();
            }
            return Ok(Input::Data(n));
        }
        if self.eof {
            return Ok(Input::Eof);
        }
        Err(io::ErrorKind::WouldBlock.into())
    }

    fn try_write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if self.write.len() >= WRITE_BUFFER {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.write.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn poll_write_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.write.len() < WRITE_BUFFER {
            return Poll::Ready(Ok(()));
        }
        self.poll_flush(cx)
    }

    fn has_pending_output(&self) -> bool {
        !self.write.is_empty() || self.unflushed
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.write.is_empty() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.write))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            let _ = self.write.split_to(n);
            self.unflushed = true;
        }
        // Give back what a burst made the buffer grow to.
        if self.write.capacity() > WRITE_BUFFER * 2 {
            self.write = BytesMut::new();
        }
        if self.unflushed {
            ready!(Pin::new(&mut self.io).poll_flush(cx))?;
            self.unflushed = false;
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_flush(cx))?;
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn io_transport_bounds_its_buffer_and_flushes_it() {
        let (near, mut far) = tokio::io::duplex(1024);
        let mut t = IoTransport::new(near);
        assert!(!t.has_pending_output());
        // Whole writes are taken until the buffer holds WRITE_BUFFER bytes.
        let chunk = vec![7u8; 40 * 1024];
        assert_eq!(t.try_write(&chunk).unwrap(), chunk.len());
        assert_eq!(t.try_write(&chunk).unwrap(), chunk.len());
        let e = t.try_write(&chunk).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        assert!(t.has_pending_output());
        // The far end reads; flushing pushes everything through.
        let reader = tokio::spawn(async move {
            let mut got = vec![0u8; 80 * 1024];
            far.read_exact(&mut got).await.unwrap();
            far.write_all(b"back").await.unwrap();
            far.shutdown().await.unwrap();
            got
        });
        poll_fn(|cx| t.poll_flush(cx)).await.unwrap();
        assert!(!t.has_pending_output());
        assert!(reader.await.unwrap().iter().all(|&b| b == 7));
        // Reading: readiness, then the bytes, then the end.
        let mut buf = BytesMut::new();
        poll_fn(|cx| t.poll_read_ready(cx)).await.unwrap();
        assert!(matches!(t.try_read(&mut buf).unwrap(), Input::Data(4)));
        assert_eq!(&buf[..], b"back");
        poll_fn(|cx| t.poll_read_ready(cx)).await.unwrap();
        assert!(matches!(t.try_read(&mut buf).unwrap(), Input::Eof));
    }
}
