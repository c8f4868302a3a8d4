//! Allocation bound of the decoder, measured by a capping global allocator:
//! while a hostile frame is decoded the process may allocate at most the
//! package cap plus a small slack, or the allocation fails and the test
//! binary aborts. One test only, so nothing else allocates meanwhile.

use std::alloc::System;

use bytes::BytesMut;
use cap::Cap;
use chatmaster::wire::codec::{self, DecodeError, PackageCodec};
use chatmaster::wire::compress::{self, InflateError};
use chatmaster::wire::frame::{FrameCodec, FrameError};
use chatmaster::wire::protocol::ClientPackage;
use tokio_util::codec::Decoder;

#[global_allocator]
static ALLOCATOR: Cap<System> = Cap::new(System, usize::MAX);

const MAX_FRAME: usize = 64 * 1024;
const MAX_PACKAGE: usize = 256 * 1024;
/// Room for error values and serde_json's scratch beyond the cap (the
/// measured need is zero: the zlib state is per thread and already warm).
const SLACK: usize = 16 * 1024;

/// Runs `f` with at most `budget` bytes of new allocation allowed and
/// returns its result and the number of bytes still held afterwards.
fn within<T>(budget: usize, f: impl FnOnce() -> T) -> T {
    let before = ALLOCATOR.allocated();
    ALLOCATOR.set_limit(before + budget).unwrap();
    let result = f();
    ALLOCATOR.set_limit(usize::MAX).unwrap();
    result
}

#[test]
fn hostile_frames_allocate_no_more_than_the_caps() {
    // Warm the thread-local zlib state and scratch buffer first: they are
    // allocated once per thread, not per package.
    let hello = codec::encode(
        &ClientPackage::Message(chatmaster::wire::protocol::OutgoingMessage::text("hello")),
        MAX_PACKAGE,
        1,
    )
    .unwrap();
    let _ = codec::decode_body::<ClientPackage>(&hello[4..], MAX_PACKAGE).unwrap();
    let mut warm = Vec::new();
    let _ = compress::inflate_into(&hello[4..], MAX_PACKAGE, &mut warm);
    drop(warm);

    // A bomb: 8 MiB of one byte inflates from well under one frame.
    let bomb = compress::deflate(&vec![b'a'; 8 << 20], 9);
    assert!(bomb.len() <= MAX_FRAME, "bomb is {} bytes", bomb.len());
    let e = within(MAX_PACKAGE + 1 + SLACK, || {
        codec::decode_body::<ClientPackage>(&bomb, MAX_PACKAGE).unwrap_err()
    });
    assert!(matches!(e, DecodeError::Inflate(InflateError::TooLarge { .. })) && e.is_fatal());

    // The same bomb as a framed stream through the client codec.
    let mut stream = BytesMut::from(&FrameCodec::frame(bomb.clone().into())[..]);
    let mut packages: PackageCodec<ClientPackage> = PackageCodec::new(MAX_FRAME, MAX_PACKAGE);
    let r = within(MAX_PACKAGE + 1 + SLACK, || packages.decode(&mut stream));
    assert!(matches!(r, Err(e) if e.is_fatal()));

    // A JSON text just under the cap that is all nesting: refused by the
    // recursion limit long before it could build a deep value.
    let deep = format!(
        r#"{{"type":"command","data":{{"command":"x","parameters":{}}}}}"#,
        "[".repeat(MAX_PACKAGE - 100)
    );
    let body = compress::deflate(deep.as_bytes(), 9);
    let e = within(MAX_PACKAGE + 1 + SLACK, || {
        codec::decode_body::<ClientPackage>(&body, MAX_PACKAGE).unwrap_err()
    });
    assert!(e.to_string().contains("recursion limit"), "{e}");

    // A 4 GiB length prefix is refused on the header alone.
    let mut frames = FrameCodec::new(MAX_FRAME);
    let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3][..]);
    let r = within(4096, || frames.decode(&mut buf));
    assert!(matches!(r, Err(FrameError::TooLarge { len, .. }) if len == u64::from(u32::MAX)));

    // A frame exactly at the frame cap is buffered, but nothing beyond it.
    let mut frames = FrameCodec::new(MAX_FRAME);
    let mut buf = BytesMut::with_capacity(MAX_FRAME + 8);
    buf.extend_from_slice(&(MAX_FRAME as u32).to_be_bytes());
    buf.resize(MAX_FRAME + 4, 0x78);
    let body = within(4096, || frames.decode(&mut buf)).unwrap().unwrap();
    assert_eq!(body.len(), MAX_FRAME);
    let e = within(MAX_PACKAGE + 1 + SLACK, || {
        codec::decode_body::<ClientPackage>(&body, MAX_PACKAGE).unwrap_err()
    });
    assert!(!e.is_fatal(), "junk in a frame is not fatal: {e:?}");
}
