//! The package codec: the three wire layers (framing, zlib, JSON) composed
//! into "bytes in, typed package out" and back.
//!
//! [`PackageCodec`] is a tokio-util `Decoder`/`Encoder`, so clients can use
//! it with `Framed`; the server calls [`decode_body`] and [`encode`]
//! directly. Errors say whether the connection survives them
//! ([`DecodeError::is_fatal`]): a bad package inside a good frame is
//! answered and forgotten, while a frame the stream cannot get past (too
//! long, empty, a compression bomb) ends the connection.

use bytes::{Bytes, BytesMut};
use serde::{de::DeserializeOwned, Serialize};
use tokio_util::codec::{Decoder, Encoder};

use crate::wire::compress::{self, InflateError};
use crate::wire::frame::{FrameCodec, FrameError};

/// Why a frame did not yield a package.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The stream could not be split into frames (fatal).
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The frame body is not an acceptable zlib stream.
    #[error(transparent)]
    Inflate(#[from] InflateError),
    /// The inflated bytes are not UTF-8.
    #[error("package is not valid UTF-8: {0}")]
    Utf8(#[from] std::str::Utf8Error),
    /// The inflated text is not a package of the expected shape.
    #[error("invalid package: {0}")]
    Json(#[from] serde_json::Error),
}

impl From<std::io::Error> for DecodeError {
    fn from(e: std::io::Error) -> Self {
        DecodeError::Frame(FrameError::Io(e))
    }
}

impl DecodeError {
    /// Whether the connection must be closed after this error. Only errors
    /// that leave the stream position unknown, or that an attacker could
    /// repeat to waste our CPU on bombs, are fatal.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            DecodeError::Frame(_) | DecodeError::Inflate(InflateError::TooLarge { .. })
        )
    }
}

/// Why a package could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// Serialization failed (cannot happen for the protocol's own types).
    #[error("cannot serialize package: {0}")]
    Json(#[from] serde_json::Error),
    /// The JSON text is over `max_package_bytes`.
    #[error("package of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// The serialized size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The socket failed (only from the `Encoder` impl).
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// Serializes, compresses and frames one package: the bytes to write.
pub fn encode<T: Serialize>(
    package: &T,
    max_package_bytes: usize,
    level: u32,
) -> Result<Bytes, EncodeError> {
    encode_packed(package, max_package_bytes, level, 0)
}

/// Like [`encode`], but a package whose JSON text is shorter than
/// `store_below` bytes is sent as stored zlib blocks rather than compressed
/// ([`compress::store_into`]): any inflater reads it the same way, and
/// short packages are most of what a server sends.
pub fn encode_packed<T: Serialize>(
    package: &T,
    max_package_bytes: usize,
    level: u32,
    store_below: usize,
) -> Result<Bytes, EncodeError> {
    let json = serde_json::to_vec(package)?;
    check_len(json.len(), max_package_bytes)?;
    // Compress straight behind room for the length prefix: no second copy.
    let stored = json.len() < store_below;
    let room = if stored {
        compress::stored_len(json.len())
    } else {
        json.len() / 2 + 64
    };
    let mut out = FrameCodec::buffer(room);
    if stored {
        compress::store_into(&json, &mut out);
    } else {
        compress::deflate_into(&json, level, true, &mut out);
    }
    Ok(FrameCodec::seal(out))
}

/// A package's last member, a list of names, compressed once so that many
/// packages can end with it (see [`compress::DeflatedTail`]).
///
/// Its text is `,"<member>":[...]}}`: the member, then the close of `data`
/// and of the package, so it fits any package whose `data` would otherwise
/// end without that member.
pub fn list_tail<S: Serialize>(
    member: &str,
    names: &[S],
    level: u32,
) -> Result<compress::DeflatedTail, EncodeError> {
    let mut text = Vec::with_capacity(names.len() * 16 + member.len() + 8);
    text.push(b',');
    serde_json::to_writer(&mut text, member)?;
    text.push(b':');
    serde_json::to_writer(&mut text, names)?;
    text.extend_from_slice(b"}}");
    Ok(compress::DeflatedTail::new(&text, level))
}

/// Frames `package` with `tail` (from [`list_tail`]) as its last member,
/// without compressing the tail again: the package is serialized without
/// that member and its closing braces are replaced by the tail.
pub fn encode_with_tail<T: Serialize>(
    package: &T,
    tail: &compress::DeflatedTail,
    max_package_bytes: usize,
) -> Result<Bytes, EncodeError> {
    let json = serde_json::to_vec(package)?;
    // Every package serializes as {"type":...,"data":{...}}, so its text
    // ends by closing data and then the package.
    let Some(head) = json.strip_suffix(b"}}") else {
        return Err(EncodeError::Json(serde::ser::Error::custom(
            "package does not end with its data object",
        )));
    };
    check_len(head.len() + tail.text_len(), max_package_bytes)?;
    let mut out = FrameCodec::buffer(tail.spliced_len(head.len()));
    tail.splice_into(head, &mut out);
    Ok(FrameCodec::seal(out))
}

fn check_len(len: usize, max: usize) -> Result<(), EncodeError> {
    if len > max {
        return Err(EncodeError::TooLarge { len, max });
    }
    Ok(())
}

/// Inflates and parses one frame body (without its length prefix).
pub fn decode_body<T: DeserializeOwned>(
    body: &[u8],
    max_package_bytes: usize,
) -> Result<T, DecodeError> {
    thread_local! {
        // Reused so steady traffic costs no allocation per package; its
        // capacity is bounded by max_package_bytes + 1.
        static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    SCRATCH.with(|cell| {
        let mut scratch = cell.borrow_mut();
        compress::inflate_into(body, max_package_bytes, &mut scratch)?;
        let text = std::str::from_utf8(&scratch)?;
        let package = serde_json::from_str(text)?;
        // Do not let one large package pin a large buffer to this thread.
        if scratch.capacity() > 64 * 1024 {
            *scratch = Vec::new();
        }
        Ok(package)
    })
}

/// A `Decoder`/`Encoder` for whole packages, for use with `Framed`.
///
/// `D` is the type decoded (a client decodes [`crate::ServerPackage`]).
/// Decoding yields `Ok(Some(Err(e)))` for a bad package inside a good frame,
/// so one bad package does not end the stream; `Err` is reserved for
/// errors after which the stream cannot continue.
#[derive(Debug)]
pub struct PackageCodec<D> {
    /// Framing layer.
    frames: FrameCodec,
    /// Inflate cap.
    max_package_bytes: usize,
    /// zlib level for encoding.
    level: u32,
    /// The decoded type.
    _decoded: std::marker::PhantomData<fn() -> D>,
}

impl<D> PackageCodec<D> {
    /// A codec with the given limits.
    pub fn new(max_frame_bytes: usize, max_package_bytes: usize) -> Self {
        PackageCodec {
            frames: FrameCodec::new(max_frame_bytes),
            max_package_bytes,
            level: crate::server::config::DEFAULT_COMPRESSION_LEVEL,
            _decoded: std::marker::PhantomData,
        }
    }
}

impl<D> Default for PackageCodec<D> {
    fn default() -> Self {
        Self::new(
            crate::server::config::DEFAULT_MAX_FRAME_BYTES,
            crate::server::config::DEFAULT_MAX_PACKAGE_BYTES,
        )
    }
}

impl<D: DeserializeOwned> Decoder for PackageCodec<D> {
    type Item = Result<D, DecodeError>;
    type Error = DecodeError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, DecodeError> {
        let Some(body) = self.frames.decode(src)? else {
            return Ok(None);
        };
        match decode_body(&body, self.max_package_bytes) {
            Err(e) if e.is_fatal() => Err(e),
            other => Ok(Some(other)),
        }
    }
}

impl<D, T: Serialize> Encoder<&T> for PackageCodec<D> {
    type Error = EncodeError;

    fn encode(&mut self, item: &T, dst: &mut BytesMut) -> Result<(), EncodeError> {
        let bytes = encode(item, self.max_package_bytes, self.level)?;
        dst.extend_from_slice(&bytes);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::protocol::{ClientPackage, OutgoingMessage, Request, ServerPackage};

    fn body(frame: &Bytes) -> &[u8] {
        &frame[crate::wire::frame::HEADER_LEN..]
    }

    #[test]
    fn session_with_a_spliced_list_equals_the_plain_encoding() {
        use crate::wire::protocol::Session;
        let names: Vec<String> = (0..300).map(|i| format!("chan-\"{i}\u{e9}")).collect();
        for level in [0, 1, 9] {
            let tail = list_tail("channels", &names, level).unwrap();
            let head =
                ServerPackage::Session(Session::accepted_without_list("al\"ice", "general", 777));
            let spliced = encode_with_tail(&head, &tail, 1 << 20).unwrap();
            let len = u32::from_be_bytes([spliced[0], spliced[1], spliced[2], spliced[3]]);
            assert_eq!(len as usize, spliced.len() - crate::wire::frame::HEADER_LEN);
            let plain =
                ServerPackage::Session(Session::accepted("al\"ice", "general", names.clone(), 777));
            let want = encode(&plain, 1 << 20, level).unwrap();
            // Same text, byte for byte, whatever the compressed bytes are.
            let text = |f: &Bytes| compress::inflate(body(f), 1 << 20).unwrap();
            assert_eq!(text(&spliced), text(&want));
            assert_eq!(
                decode_body::<ServerPackage>(body(&spliced), 1 << 20).unwrap(),
                plain
            );
        }
        // The limit counts the whole text, tail included.
        let tail = list_tail("channels", &names, 1).unwrap();
        let head = ServerPackage::Session(Session::accepted_without_list("a", "general", 1));
        assert!(matches!(
            encode_with_tail(&head, &tail, 1000),
            Err(EncodeError::TooLarge { .. })
        ));
    }

    #[test]
    fn short_packages_are_stored_and_long_ones_compressed() {
        let short = ServerPackage::Request(Request::login());
        let json_len = serde_json::to_vec(&short).unwrap().len();
        let stored = encode_packed(&short, 1024, 1, json_len + 1).unwrap();
        // Stored: zlib header, one final stored block of the whole text, checksum.
        assert_eq!(body(&stored)[2], 0x01, "final stored block");
        assert_eq!(body(&stored).len(), 2 + 5 + json_len + 4);
        let compressed = encode_packed(&short, 1024, 1, json_len).unwrap();
        assert_ne!(body(&compressed)[2] & 0x06, 0, "a compressed block");
        for f in [&stored, &compressed] {
            assert_eq!(decode_body::<ServerPackage>(body(f), 1024).unwrap(), short);
        }
    }

    #[test]
    fn encode_then_decode() {
        let p = ServerPackage::Request(Request::login());
        let frame = encode(&p, 1024, 1).unwrap();
        let len = u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
        assert_eq!(len, frame.len() - 4);
        let back: ServerPackage = decode_body(body(&frame), 1024).unwrap();
        assert_eq!(back, p);
    }

    #[test]
    fn login_request_frame_matches_protocol_md() {
        // protocol.md quotes these bytes as the start of the first frame.
        let frame = encode(&ServerPackage::Request(Request::login()), 1024, 1).unwrap();
        assert_eq!(&frame[..6], &[0, 0, 0, 0x2e, 0x78, 0x01]);
        assert_eq!(frame.len(), 4 + 0x2e);
    }

    #[test]
    fn codec_yields_soft_errors_and_continues() {
        let mut codec: PackageCodec<ClientPackage> = PackageCodec::default();
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&FrameCodec::frame(Bytes::from_static(b"not zlib")));
        let good = ClientPackage::Message(OutgoingMessage::text("hi"));
        codec.encode(&good, &mut buf).unwrap();
        let first = codec.decode(&mut buf).unwrap().unwrap();
        assert!(matches!(first, Err(DecodeError::Inflate(_))));
        let second = codec.decode(&mut buf).unwrap().unwrap().unwrap();
        assert_eq!(second, good);
        assert!(codec.decode(&mut buf).unwrap().is_none());
    }

    #[test]
    fn error_classes() {
        let not_utf8 = compress::deflate(b"\xff\xfe", 1);
        let e = decode_body::<ClientPackage>(&not_utf8, 1024).unwrap_err();
        assert!(matches!(e, DecodeError::Utf8(_)) && !e.is_fatal());
        let not_json = compress::deflate(b"{nope", 1);
        let e = decode_body::<ClientPackage>(&not_json, 1024).unwrap_err();
        assert!(matches!(e, DecodeError::Json(_)) && !e.is_fatal());
        let deep = format!(
            "{{\"type\":\"command\",\"data\":{{\"command\":\"x\",\"parameters\":{}{}}}}}",
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        let e = decode_body::<ClientPackage>(&compress::deflate(deep.as_bytes(), 1), 1 << 20)
            .unwrap_err();
        assert!(e.to_string().contains("recursion limit"), "{e}");
        let big = compress::deflate(&vec![b' '; 5000], 1);
        let e = decode_body::<ClientPackage>(&big, 4096).unwrap_err();
        assert!(e.is_fatal());
    }

    #[test]
    fn oversized_outgoing_package_is_refused() {
        let p = ServerPackage::error("x", "y".repeat(2000));
        assert!(matches!(
            encode(&p, 1000, 1),
            Err(EncodeError::TooLarge { .. })
        ));
    }
}
