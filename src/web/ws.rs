//! A WebSocket session as a [`Transport`]: each binary message is one
//! package (the TCP frame's body, a zlib stream), so on the way in it
//! becomes one frame (its length, then the message) for the connection
//! loop, and on the way out each frame the loop writes becomes one binary
//! message. The frame decoder, the limits and the error packages are then
//! the TCP ones.
//!
//! A text message is no package: it is answered with a `protocol` error
//! and the session stays. A message over `max_frame_bytes` is refused by
//! the WebSocket layer while its header is read (tungstenite's frame and
//! message size limits, set to the same value), and closes with a
//! `protocol` error as an oversized TCP frame does. Pings are answered by
//! the WebSocket layer; permessage-deflate is never negotiated.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use axum::extract::ws::{Message, WebSocket};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::{Sink, Stream};

use crate::server::transport::{Input, Transport, WRITE_BUFFER};

/// The frame header the connection loop reads: a 4-byte length.
const HEADER: usize = 4;

/// What arrived and waits to be read.
#[derive(Debug)]
enum Incoming {
    /// A binary message: one package.
    Binary(Bytes),
    /// A text message.
    Text,
    /// The peer closed (a close frame, or the stream ended).
    Eof,
    /// A message over the size limit.
    TooLong(String),
    /// The socket failed.
    Failed(io::Error),
}

/// A WebSocket session, driven by the connection loop.
pub struct WsTransport {
    /// The socket.
    ws: WebSocket,
    /// What the last readiness poll found, not yet read.
    incoming: Option<Incoming>,
    /// Frames written by the loop, not yet handed to the socket (whole
    /// frames: the loop writes whole batches).
    out: BytesMut,
    /// Messages handed to the socket but not flushed through it yet.
    unflushed: bool,
}

impl std::fmt::Debug for WsTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsTransport")
            .field("incoming", &self.incoming)
            .field("out", &self.out.len())
            .finish_non_exhaustive()
    }
}

impl WsTransport {
    /// Wraps an upgraded socket.
    pub fn new(ws: WebSocket) -> Self {
        WsTransport {
            ws,
            incoming: None,
            out: BytesMut::new(),
            unflushed: false,
        }
    }
}

/// What the WebSocket layer's error means for the session.
fn classify(e: axum::Error) -> Incoming {
    let inner = e.into_inner();
    match inner.downcast::<tungstenite::Error>() {
        Ok(e) => match *e {
            tungstenite::Error::Capacity(tungstenite::error::CapacityError::MessageTooLong {
                size,
                max_size,
            }) => Incoming::TooLong(format!(
                "WebSocket message of {size} bytes exceeds the limit of {max_size} bytes"
            )),
            tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
                Incoming::Eof
            }
            tungstenite::Error::Io(e) => Incoming::Failed(e),
            other => Incoming::Failed(io::Error::new(io::ErrorKind::InvalidData, other)),
        },
        Err(other) => Incoming::Failed(io::Error::other(other)),
    }
}

impl Transport for WsTransport {
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.incoming.is_none() {
            let next = match ready!(Pin::new(&mut self.ws).poll_next(cx)) {
                Some(Ok(Message::Binary(b))) => Incoming::Binary(b),
                Some(Ok(Message::Text(_))) => Incoming::Text,
                // Answered by the WebSocket layer itself.
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(Message::Close(_))) | None => Incoming::Eof,
                Some(Err(e)) => classify(e),
            };
            self.incoming = Some(next);
        }
        Poll::Ready(Ok(()))
    }

    fn try_read(&mut self, buf: &mut BytesMut) -> io::Result<Input> {
        match self.incoming.take() {
            None => Err(io::ErrorKind::WouldBlock.into()),
            Some(Incoming::Binary(b)) => {
                // Within the limit (the WebSocket layer checked), so within u32.
                let len = u32::try_from(b.len()).unwrap_or(u32::MAX);
                buf.reserve(HEADER + b.len());
                buf.put_u32(len);
                buf.extend_from_slice(&b);
                Ok(Input::Data(HEADER + b.len()))
            }
            Some(Incoming::Text) => Ok(Input::Refused(
                "A text WebSocket message is not a package: send each package as one binary \
                 message holding its zlib stream."
                    .into(),
            )),
            Some(Incoming::Eof) => Ok(Input::Eof),
            Some(Incoming::TooLong(why)) => Ok(Input::Fatal(why)),
            Some(Incoming::Failed(e)) => Err(e),
        }
    }

    fn try_write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if self.out.len() >= WRITE_BUFFER {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.out.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn poll_write_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.out.len() < WRITE_BUFFER {
            return Poll::Ready(Ok(()));
        }
        self.poll_flush(cx)
    }

    fn has_pending_output(&self) -> bool {
        !self.out.is_empty() || self.unflushed
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.out.len() >= HEADER {
            let len = (&self.out[..HEADER]).get_u32() as usize;
            if self.out.len() < HEADER + len {
                // Cannot happen (whole frames only); never send half a package.
                return Poll::Ready(Err(io::Error::other("a partial frame was written")));
            }
            ready!(Pin::new(&mut self.ws).poll_ready(cx)).map_err(io::Error::other)?;
            let mut frame = self.out.split_to(HEADER + len).freeze();
            frame.advance(HEADER);
            Pin::new(&mut self.ws)
                .start_send(Message::Binary(frame))
                .map_err(io::Error::other)?;
            self.unflushed = true;
        }
        if self.out.is_empty() && self.out.capacity() > WRITE_BUFFER * 2 {
            self.out = BytesMut::new();
        }
        if self.unflushed {
            ready!(Pin::new(&mut self.ws).poll_flush(cx)).map_err(io::Error::other)?;
            self.unflushed = false;
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_flush(cx))?;
        Pin::new(&mut self.ws)
            .poll_close(cx)
            .map_err(io::Error::other)
    }
}
