//! Framing: the 4-byte big-endian length prefix that delimits packages on
//! the byte stream.
//!
//! ```text
//! +--------+--------+--------+--------+------------------------------+
//! |        length N (u32, big-endian)  |  N bytes: one zlib stream    |
//! +--------+--------+--------+--------+------------------------------+
//!            1 <= N <= max_frame_bytes
//! ```
//!
//! The work is done by tokio-util's [`LengthDelimitedCodec`]; this module
//! adds the checks the protocol wants on the header *before* any body is
//! buffered (an empty frame, a frame over the cap) and names them, so the
//! connection can tell the peer exactly why it is being closed.

use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::{Decoder, LengthDelimitedCodec};

/// Size of the length prefix.
pub const HEADER_LEN: usize = 4;

/// Why the byte stream could not be split into frames. Every variant is
/// fatal for the connection: after it the stream position is unknown.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The length prefix was zero.
    #[error("frame length 0 is not allowed (a frame carries at least one byte)")]
    Empty,
    /// The length prefix was over the cap.
    #[error("frame length {len} exceeds the limit of {max} bytes")]
    TooLarge {
        /// The announced length.
        len: u64,
        /// The configured `max_frame_bytes`.
        max: usize,
    },
    /// The socket failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// Splits a byte stream into frame bodies and prefixes outgoing bodies with
/// their length.
#[derive(Debug)]
pub struct FrameCodec {
    /// The tokio-util codec doing the actual (de)framing.
    inner: LengthDelimitedCodec,
    /// Largest body accepted, checked on the header before buffering.
    max_frame_bytes: usize,
}

impl FrameCodec {
    /// A codec that refuses frames longer than `max_frame_bytes`.
    pub fn new(max_frame_bytes: usize) -> Self {
        let inner = LengthDelimitedCodec::builder()
            .length_field_length(HEADER_LEN)
            .big_endian()
            .max_frame_length(max_frame_bytes)
            .new_codec();
        FrameCodec {
            inner,
            max_frame_bytes,
        }
    }

    /// Frames `body` into a freshly allocated buffer ready to write.
    pub fn frame(body: Bytes) -> Bytes {
        let mut out = FrameCodec::buffer(body.len());
        out.extend_from_slice(&body);
        FrameCodec::seal(out)
    }

    /// An empty frame under construction: room for the length prefix, with
    /// capacity for `body_capacity` more bytes. Append the body, then
    /// [`FrameCodec::seal`] it; the body is built in place, never copied.
    pub fn buffer(body_capacity: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + body_capacity);
        out.extend_from_slice(&[0; HEADER_LEN]);
        out
    }

    /// Writes the length of the body appended after [`FrameCodec::buffer`]'s
    /// prefix into it. A body over `u32::MAX` bytes cannot be framed and
    /// gives an empty buffer; callers cap packages far below that, so this
    /// only guards against misuse.
    pub fn seal(mut frame: Vec<u8>) -> Bytes {
        let body = frame.len().saturating_sub(HEADER_LEN);
        match u32::try_from(body) {
            Ok(len) if frame.len() >= HEADER_LEN => {
                frame[..HEADER_LEN].copy_from_slice(&len.to_be_bytes());
                Bytes::from(frame)
            }
            _ => Bytes::new(),
        }
    }
}

impl Decoder for FrameCodec {
    type Item = BytesMut;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, FrameError> {
        if src.len() < HEADER_LEN {
            return Ok(None);
        }
        let len = (&src[..HEADER_LEN]).get_u32() as u64;
        if len == 0 {
            return Err(FrameError::Empty);
        }
        if len > self.max_frame_bytes as u64 {
            return Err(FrameError::TooLarge {
                len,
                max: self.max_frame_bytes,
            });
        }
        // The inner codec reserves room for the whole announced body as soon
        // as it reads a header. Hand it only complete frames, so a peer that
        // announces a large frame and stalls holds only the bytes it really
        // sent, not max_frame_bytes, until it times out. (It also means the
        // inner codec never holds a half-read header between calls.)
        if (src.len() as u64) < HEADER_LEN as u64 + len {
            return Ok(None);
        }
        Ok(self.inner.decode(src)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(codec: &mut FrameCodec, bytes: &[u8]) -> Result<Vec<BytesMut>, FrameError> {
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(frame) = codec.decode(&mut buf)? {
            out.push(frame);
        }
        Ok(out)
    }

    #[test]
    fn round_trip() {
        let mut codec = FrameCodec::new(1024);
        let framed = FrameCodec::frame(Bytes::from_static(b"hello"));
        assert_eq!(&framed[..], b"\x00\x00\x00\x05hello");
        let frames = decode_all(&mut codec, &framed).unwrap();
        assert_eq!(frames.len(), 1);
        assert_eq!(&frames[0][..], b"hello");
    }

    #[test]
    fn partial_header_and_body_wait_for_more() {
        let mut codec = FrameCodec::new(1024);
        let mut buf = BytesMut::from(&b"\x00\x00"[..]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        buf.extend_from_slice(b"\x00\x03ab");
        assert!(codec.decode(&mut buf).unwrap().is_none());
        buf.extend_from_slice(b"c\x00");
        assert_eq!(&codec.decode(&mut buf).unwrap().unwrap()[..], b"abc");
        assert_eq!(&buf[..], b"\x00");
    }

    #[test]
    fn zero_length_is_rejected() {
        let mut codec = FrameCodec::new(1024);
        assert!(matches!(
            decode_all(&mut codec, b"\x00\x00\x00\x00"),
            Err(FrameError::Empty)
        ));
    }

    #[test]
    fn over_limit_is_rejected_on_the_header_alone() {
        let mut codec = FrameCodec::new(1024);
        // Only the header is present: the decision must not wait for the body.
        match decode_all(&mut codec, b"\x00\x00\x04\x01") {
            Err(FrameError::TooLarge { len, max }) => {
                assert_eq!(len, 1025);
                assert_eq!(max, 1024);
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
        assert!(matches!(
            decode_all(&mut codec, b"\xff\xff\xff\xff"),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn announced_length_is_not_reserved_up_front() {
        let mut codec = FrameCodec::new(64 * 1024);
        let mut buf = BytesMut::with_capacity(16);
        buf.extend_from_slice(&(64u32 * 1024).to_be_bytes());
        buf.extend_from_slice(b"x");
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert!(buf.capacity() < 1024, "reserved {}", buf.capacity());
        assert_eq!(&buf[..], b"\x00\x01\x00\x00x", "nothing consumed");
    }

    #[test]
    fn exactly_at_limit_is_accepted() {
        let mut codec = FrameCodec::new(8);
        let frames = decode_all(
            &mut codec,
            &FrameCodec::frame(Bytes::from_static(b"12345678")),
        )
        .unwrap();
        assert_eq!(&frames[0][..], b"12345678");
    }
}
