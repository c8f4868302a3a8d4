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
    static DEFLATERS: RefCell<Vec<(u32, Compress)>> = const { RefCell::new(Vec::new()) };
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
    let level = level.min(9);
    DEFLATERS.with(|cell| {
        let mut deflaters = cell.borrow_mut();
        let index = match deflaters.iter().position(|(l, _)| *l == level) {
            Some(i) => i,
            None => {
                deflaters.push((level, Compress::new(Compression::new(level), true)));
                deflaters.len() - 1
            }
        };
        let deflater = &mut deflaters[index].1;
        deflater.reset();
        // zlib's worst case: stored blocks add 5 bytes per 16 KiB plus header and trailer.
        let mut out = Vec::with_capacity(input.len() + input.len() / 1000 + 64);
        loop {
            let consumed = deflater.total_in() as usize;
            let rest = input.get(consumed..).unwrap_or_default();
            // Compressing into a Vec cannot fail except through misuse of
            // the stream state, which reset() above rules out.
            match deflater.compress_vec(rest, &mut out, FlushCompress::Finish) {
                Ok(Status::StreamEnd) => return out,
                Ok(_) | Err(_) => out.reserve(out.capacity().max(64)),
            }
        }
    })
}

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
