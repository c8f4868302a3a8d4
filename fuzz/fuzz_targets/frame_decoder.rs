//! Fuzz target: arbitrary bytes through the frame splitter and the package
//! decoder, as the server and a client would read them. Panics, and errors
//! of the wrong class or fatality, are findings.

#![no_main]

use bytes::BytesMut;
use chatmaster::wire::codec::{self, DecodeError, PackageCodec};
use chatmaster::wire::compress::InflateError;
use chatmaster::wire::frame::{FrameCodec, FrameError};
use chatmaster::wire::protocol::{ClientPackage, ServerPackage};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

fn check(e: &DecodeError) {
    match e {
        DecodeError::Frame(_) => panic!("frame error from a body: {e:?}"),
        DecodeError::Inflate(InflateError::TooLarge { .. }) => assert!(e.is_fatal()),
        _ => assert!(!e.is_fatal(), "{e:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    // The first two bytes pick the limits and the read size, so small
    // caps (where the edge cases are) get explored too.
    let (limits, stream) = data.split_at(data.len().min(2));
    let max_frame = 16 + usize::from(limits.first().copied().unwrap_or(0)) * 64;
    let max_package = 16 + usize::from(limits.get(1).copied().unwrap_or(0)) * 256;
    let chunk = 1 + usize::from(limits.first().copied().unwrap_or(0) % 61);

    let mut frames = FrameCodec::new(max_frame);
    let mut buf = BytesMut::new();
    'outer: for piece in stream.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match frames.decode(&mut buf) {
                Ok(Some(body)) => {
                    assert!(!body.is_empty() && body.len() <= max_frame);
                    if let Err(e) = codec::decode_body::<ClientPackage>(&body, max_package) {
                        check(&e);
                    }
                    if let Err(e) = codec::decode_body::<ServerPackage>(&body, max_package) {
                        check(&e);
                    }
                }
                Ok(None) => break,
                Err(FrameError::Io(e)) => panic!("i/o error from memory: {e}"),
                Err(_) => break 'outer,
            }
        }
        // What stays buffered is at most one unfinished frame.
        assert!(buf.len() < 4 + max_frame);
    }

    let mut packages: PackageCodec<ServerPackage> = PackageCodec::new(max_frame, max_package);
    let mut buf = BytesMut::from(stream);
    loop {
        match packages.decode(&mut buf) {
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => assert!(!e.is_fatal(), "{e:?}"),
            Ok(None) => break,
            Err(e) => {
                assert!(e.is_fatal(), "{e:?}");
                break;
            }
        }
    }
});
