//! Compression: each package is one self-contained zlib stream (RFC 1950).
//!
//! Inflating is where a hostile peer can hurt us (a 64 KiB frame can
//! inflate to gigabytes), so [`inflate`] never lets its output grow past
//! the caller's cap and insists that the stream ends exactly where the frame
//! does. The zlib state (about 300 KiB for deflate) is kept per thread and
//! reset between packages rather than allocated per package or per
//! connection: idle connections then cost no zlib memory at all.

use std::cell::RefCell;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// Why a frame body is not an acceptable zlib stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InflateError {
    /// Not a zlib stream, or a corrupt one.
    #[error("frame is not a valid zlib stream: {0}")]
    Corrupt(String),
    /// The stream stops before its end marker.
    #[error("zlib stream is truncated (no end of stream inside the frame)")]
    Truncated,
    /// Bytes follow the end of the stream inside the frame.
    #[error("{0} bytes follow the end of the zlib stream inside the frame")]
    TrailingBytes(usize),
    /// The inflated data would exceed the cap.
    #[error("package inflates past the limit of {max} bytes")]
    TooLarge {
        /// The cap that was hit.
        max: usize,
    },
}

thread_local! {
    static INFLATER: RefCell<Decompress> = RefCell::new(Decompress::new(true));
    static DEFLATERS: RefCell<Vec<(u32, bool, Compress)>> = const { RefCell::new(Vec::new()) };
}

/// Inflates one complete zlib stream into `out` (cleared first), producing
/// at most `max` bytes. `out` never grows past `max + 1` bytes of capacity
/// because of this call, whatever the input claims.
pub fn inflate_into(input: &[u8], max: usize, out: &mut Vec<u8>) -> Result<(), InflateError> {
    INFLATER.with(|cell| {
        let mut guard = cell.borrow_mut();
        let inflater = &mut *guard;
        inflater.reset(true);
        out.clear();
        // One more byte than allowed, so "exactly max" and "more than max" differ.
        let limit = max.saturating_add(1);
        let mut want = input.len().saturating_mul(4).max(256).min(limit);
        loop {
            if out.capacity() < want {
                out.reserve_exact(want - out.len());
            }
            let consumed = inflater.total_in() as usize;
            let produced = inflater.total_out();
            let rest = input.get(consumed..).unwrap_or_default();
            let status = inflater
                .decompress_vec(rest, out, FlushDecompress::None)
                .map_err(|e| InflateError::Corrupt(e.to_string()))?;
            if out.len() > max {
                return Err(InflateError::TooLarge { max });
            }
            if status == Status::StreamEnd {
                let used = inflater.total_in() as usize;
                return match input.len() - used {
                    0 => Ok(()),
                    extra => Err(InflateError::TrailingBytes(extra)),
                };
            }
            if out.len() == out.capacity() {
                // Output room ran out before the stream ended: grow, up to the cap.
                if want >= limit {
                    return Err(InflateError::TooLarge { max });
                }
                want = want.saturating_mul(2).min(limit);
            } else if inflater.total_in() as usize >= input.len()
                || (inflater.total_in() as usize == consumed && inflater.total_out() == produced)
            {
                // All input used (or no progress possible) yet no end marker.
                return Err(InflateError::Truncated);
            }
        }
    })
}

/// Inflates one complete zlib stream, producing at most `max` bytes.
pub fn inflate(input: &[u8], max: usize) -> Result<Vec<u8>, InflateError> {
    let mut out = Vec::new();
    inflate_into(input, max, &mut out)?;
    Ok(out)
}

/// Compresses `input` into one complete zlib stream at `level` (0..=9).
pub fn deflate(input: &[u8], level: u32) -> Vec<u8> {
    // zlib's worst case: stored blocks add 5 bytes per 16 KiB plus header and trailer.
    let mut out = Vec::with_capacity(input.len() + input.len() / 1000 + 64);
    deflate_into(input, level, true, &mut out);
    out
}

/// Appends `input`, compressed at `level` (0..=9), to `out`: a complete
/// zlib stream when `zlib` is true, else a bare deflate stream (RFC 1951)
/// whose last block is marked final.
pub fn deflate_into(input: &[u8], level: u32, zlib: bool, out: &mut Vec<u8>) {
    let level = level.min(9);
    DEFLATERS.with(|cell| {
        let mut deflaters = cell.borrow_mut();
        let index = match deflaters
            .iter()
            .position(|(l, z, _)| *l == level && *z == zlib)
        {
            Some(i) => i,
            None => {
                deflaters.push((level, zlib, Compress::new(Compression::new(level), zlib)));
                deflaters.len() - 1
            }
        };
        let deflater = &mut deflaters[index].2;
        deflater.reset();
        out.reserve(input.len() / 2 + 64);
        loop {
            let consumed = deflater.total_in() as usize;
            let rest = input.get(consumed..).unwrap_or_default();
            // Compressing into a Vec cannot fail except through misuse of
            // the stream state, which reset() above rules out.
            match deflater.compress_vec(rest, out, FlushCompress::Finish) {
                Ok(Status::StreamEnd) => return,
                Ok(_) | Err(_) => out.reserve(out.capacity().max(64)),
            }
        }
    })
}

/// The end of many packages' text, compressed once.
///
/// Some packages share a long tail and differ only in a short head: every
/// `session` carries the same list of up to 1,000 channel names and only
/// the user's name differs. Compressing that list again for every login was
/// a third of the server's time in a login storm. A zlib stream can be
/// spliced instead: the head goes out as one stored (uncompressed) deflate
/// block, which ends on a byte boundary, the tail's deflate blocks are
/// copied after it unchanged (they were compressed with no history, so they
/// refer to nothing in the head), and the Adler-32 of the whole text is
/// combined from the two parts' checksums. The result is an ordinary zlib
/// stream any inflater reads.
#[derive(Debug, Clone)]
pub struct DeflatedTail {
    /// A bare deflate stream of the tail text, last block final.
    deflated: Vec<u8>,
    /// Adler-32 of the tail text.
    adler: u32,
    /// Length of the tail text.
    len: usize,
}

impl DeflatedTail {
    /// Compresses `text` at `level` for use after any head.
    pub fn new(text: &[u8], level: u32) -> Self {
        let mut deflated = Vec::with_capacity(text.len() / 2 + 64);
        deflate_into(text, level, false, &mut deflated);
        DeflatedTail {
            deflated,
            adler: zlib_rs::adler32::adler32(1, text),
            len: text.len(),
        }
    }

    /// Length of the uncompressed tail text.
    pub fn text_len(&self) -> usize {
        self.len
    }

    /// Bytes [`DeflatedTail::splice_into`] appends for a head of `head_len` bytes.
    pub fn spliced_len(&self, head_len: usize) -> usize {
        stored_len(head_len) + self.deflated.len()
    }

    /// Appends to `out` one complete zlib stream whose text is `head`
    /// followed by this tail's text.
    pub fn splice_into(&self, head: &[u8], out: &mut Vec<u8>) {
        out.reserve(self.spliced_len(head.len()));
        out.extend_from_slice(&ZLIB_HEADER);
        store_blocks(head, false, out);
        out.extend_from_slice(&self.deflated);
        let adler = zlib_rs::adler32::adler32_combine(
            zlib_rs::adler32::adler32(1, head),
            self.adler,
            self.len as u64,
        );
        out.extend_from_slice(&adler.to_be_bytes());
    }
}

/// Appends `input` to `out` as one complete zlib stream of stored
/// (uncompressed) blocks.
///
/// For a package of a hundred bytes, deflate saves about ten, while
/// resetting the compressor clears its 128 KiB hash table: most of the cost
/// of encoding a short notification. Storing costs a copy and a checksum.
pub fn store_into(input: &[u8], out: &mut Vec<u8>) {
    out.reserve(stored_len(input.len()));
    out.extend_from_slice(&ZLIB_HEADER);
    store_blocks(input, true, out);
    out.extend_from_slice(&zlib_rs::adler32::adler32(1, input).to_be_bytes());
}

/// zlib header: deflate with a 32 KiB window, no preset dictionary,
/// "fastest" level hint; (0x78 * 256 + 0x01) is a multiple of 31 as the
/// format requires.
const ZLIB_HEADER: [u8; 2] = [0x78, 0x01];

/// Bytes a zlib stream of stored blocks holding `len` bytes takes at most
/// (what [`store_into`] appends).
pub fn stored_len(len: usize) -> usize {
    ZLIB_HEADER.len() + len + 5 * (len / STORED_MAX + 1) + 4
}

/// Writes `data` as stored deflate blocks (RFC 1951, 3.2.4), the last one
/// marked final when `last` is set. Each block is one header byte (BFINAL,
/// BTYPE = 00, then padding to the byte boundary), LEN and its one's
/// complement, little-endian, then the bytes as they are; a stored block
/// therefore always ends on a byte boundary.
fn store_blocks(data: &[u8], last: bool, out: &mut Vec<u8>) {
    let mut chunks = data.chunks(STORED_MAX).peekable();
    if chunks.peek().is_none() && last {
        // An empty final block still has to end the stream.
        out.extend_from_slice(&[0x01, 0x00, 0x00, 0xff, 0xff]);
    }
    while let Some(chunk) = chunks.next() {
        let len = chunk.len() as u16;
        out.push(u8::from(last && chunks.peek().is_none()));
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
}

/// Most bytes one stored deflate block can hold (its length is 16 bits).
const STORED_MAX: usize = u16::MAX as usize;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_all_levels() {
        let text = b"{\"type\":\"message\",\"data\":{\"message\":\"hello hello hello\"}}";
        for level in 0..=9 {
            let z = deflate(text, level);
            assert_eq!(inflate(&z, 1024).unwrap(), text);
        }
    }

    #[test]
    fn spliced_streams_inflate_to_head_then_tail() {
        let tail_text = br#","channels":["general","rust","rustaceans"]}}"#;
        for level in [0, 1, 6, 9] {
            let tail = DeflatedTail::new(tail_text, level);
            assert_eq!(tail.text_len(), tail_text.len());
            let long_head = vec![b'h'; 70_000];
            for head in [&b""[..], b"{\"type\":\"session\"", &long_head] {
                let mut z = vec![1, 2, 3];
                tail.splice_into(head, &mut z);
                assert_eq!(&z[..3], &[1, 2, 3], "appends");
                let mut want = head.to_vec();
                want.extend_from_slice(tail_text);
                // The strict inflater checks the Adler-32 and the end of stream.
                assert_eq!(inflate(&z[3..], 1 << 20).unwrap(), want, "level {level}");
                // And so does flate2's own reader, independently of ours.
                let mut plain = Vec::new();
                std::io::Read::read_to_end(
                    &mut flate2::read::ZlibDecoder::new(&z[3..]),
                    &mut plain,
                )
                .unwrap();
                assert_eq!(plain, want);
            }
        }
    }

    #[test]
    fn stored_streams_round_trip() {
        for len in [0, 1, 100, 65_535, 65_536, 200_000] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let mut z = vec![9];
            store_into(&data, &mut z);
            assert!(z.len() - 1 <= stored_len(len), "reserve covers it");
            assert_eq!(inflate(&z[1..], 1 << 20).unwrap(), data, "len {len}");
            let mut plain = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::ZlibDecoder::new(&z[1..]), &mut plain)
                .unwrap();
            assert_eq!(plain, data);
        }
    }

    #[test]
    fn spliced_stream_with_a_wrong_checksum_is_refused() {
        let tail = DeflatedTail::new(b"tail", 1);
        let mut z = Vec::new();
        tail.splice_into(b"head", &mut z);
        let last = z.len() - 1;
        z[last] ^= 1;
        assert!(matches!(inflate(&z, 1024), Err(InflateError::Corrupt(_))));
    }

    #[test]
    fn raw_deflate_has_no_zlib_header() {
        let mut raw = Vec::new();
        deflate_into(b"hello hello", 1, false, &mut raw);
        let mut z = Vec::new();
        deflate_into(b"hello hello", 1, true, &mut z);
        assert_eq!(&z[2..z.len() - 4], &raw[..]);
    }

    #[test]
    fn empty_input_round_trips() {
        let z = deflate(b"", 1);
        assert_eq!(inflate(&z, 10).unwrap(), b"");
    }

    #[test]
    fn garbage_is_corrupt() {
        assert!(matches!(
            inflate(b"this is not zlib", 1024),
            Err(InflateError::Corrupt(_))
        ));
    }

    #[test]
    fn truncated_stream_is_detected() {
        let z = deflate(&[b'a'; 5000], 6);
        for cut in [1, 2, z.len() / 2, z.len() - 1] {
            let err = inflate(&z[..cut], 100_000).unwrap_err();
            assert!(
                matches!(err, InflateError::Truncated | InflateError::Corrupt(_)),
                "cut {cut}: {err:?}"
            );
        }
    }

    #[test]
    fn trailing_bytes_are_detected() {
        let mut z = deflate(b"{}", 1);
        z.extend_from_slice(b"xyz");
        assert_eq!(inflate(&z, 1024), Err(InflateError::TrailingBytes(3)));
    }

    #[test]
    fn exactly_at_cap_passes_and_one_past_fails() {
        let data = vec![b'x'; 4096];
        let z = deflate(&data, 9);
        assert_eq!(inflate(&z, 4096).unwrap().len(), 4096);
        assert_eq!(inflate(&z, 4095), Err(InflateError::TooLarge { max: 4095 }));
    }

    #[test]
    fn bomb_never_allocates_past_the_cap() {
        // 8 MiB of zeros compress to a few KiB: a 1000:1 bomb.
        let bomb = deflate(&vec![0u8; 8 << 20], 9);
        let mut out = Vec::new();
        let err = inflate_into(&bomb, 256 * 1024, &mut out).unwrap_err();
        assert_eq!(err, InflateError::TooLarge { max: 256 * 1024 });
        assert!(
            out.capacity() <= 256 * 1024 + 1,
            "capacity {}",
            out.capacity()
        );
    }
}
