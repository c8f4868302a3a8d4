//! Property tests of the wire codec: whatever bytes arrive, decoding never
//! panics, fails with the documented error class (and says correctly
//! whether the connection survives it), and never grows its output past
//! the caps. Every package type also survives an encode/decode round trip.
//!
//! Seeds are fixed so CI failures reproduce; set `PROPTEST_RNG_SEED` to
//! explore others. A failure message names the seed it ran with.

use bytes::BytesMut;
use chatmaster::wire::codec::{self, DecodeError, PackageCodec};
use chatmaster::wire::compress::{self, InflateError};
use chatmaster::wire::frame::{FrameCodec, FrameError, HEADER_LEN};
use chatmaster::wire::protocol::{
    validate_attachments, Attachment, ChatMessage, ClientPackage, Command, ErrorData,
    HistoryMessage, Notification, OutgoingMessage, Request, ServerPackage, Session,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestRunner};
use serde_json::{json, Value};
use tokio_util::codec::{Decoder, Encoder};

/// Seed used unless `PROPTEST_RNG_SEED` is set.
const SEED: u64 = 0x000C_4A77_3000;

/// Runs `test` on `cases` values of `strategy` from a fixed seed and
/// panics with the seed and the minimal failing input on failure.
fn check<S: Strategy>(
    name: &str,
    cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) where
    S::Value: std::fmt::Debug,
{
    let mut config = Config::with_cases(cases);
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        config.rng_seed = RngSeed::Fixed(SEED);
    }
    config.failure_persistence = None;
    let seed = config.rng_seed;
    let mut runner = TestRunner::new(config);
    if let Err(e) = runner.run(&strategy, test) {
        panic!("{name} failed with PROPTEST_RNG_SEED={seed}: {e}");
    }
}

/// Asserts the class of a body-level decode error and its fatality.
fn check_body_error(e: &DecodeError) -> Result<(), TestCaseError> {
    match e {
        DecodeError::Frame(_) => {
            return Err(TestCaseError::fail(format!(
                "decode_body returned a frame error: {e:?}"
            )))
        }
        DecodeError::Inflate(InflateError::TooLarge { .. }) => {
            prop_assert!(e.is_fatal(), "a bomb must be fatal: {e:?}")
        }
        DecodeError::Inflate(_) | DecodeError::Utf8(_) | DecodeError::Json(_) => {
            prop_assert!(
                !e.is_fatal(),
                "a bad package in a good frame is not fatal: {e:?}"
            )
        }
    }
    Ok(())
}

/// Splits `bytes` into frames fed in chunks of `chunk` bytes, decoding
/// each body both ways; checks every error on the way.
fn feed_frames(
    bytes: &[u8],
    chunk: usize,
    max_frame: usize,
    max_package: usize,
) -> Result<(), TestCaseError> {
    let mut frames = FrameCodec::new(max_frame);
    let mut buf = BytesMut::new();
    for piece in bytes.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            match frames.decode(&mut buf) {
                Ok(Some(body)) => {
                    prop_assert!(!body.is_empty() && body.len() <= max_frame);
                    for result in [
                        codec::decode_body::<ClientPackage>(&body, max_package).map(|_| ()),
                        codec::decode_body::<ServerPackage>(&body, max_package).map(|_| ()),
                    ] {
                        if let Err(e) = result {
                            check_body_error(&e)?;
                        }
                    }
                }
                Ok(None) => break,
                Err(FrameError::Empty) => return Ok(()),
                Err(FrameError::TooLarge { len, max }) => {
                    prop_assert!(len > max as u64 && max == max_frame);
                    return Ok(());
                }
                Err(FrameError::Io(e)) => {
                    return Err(TestCaseError::fail(format!("i/o error from memory: {e}")))
                }
            }
        }
    }
    // The same bytes through the `Framed` codec: soft errors are items,
    // hard errors end the stream.
    let mut codec: PackageCodec<ClientPackage> = PackageCodec::new(max_frame, max_package);
    let mut buf = BytesMut::from(bytes);
    loop {
        match codec.decode(&mut buf) {
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => prop_assert!(!e.is_fatal(), "fatal error as an item: {e:?}"),
            Ok(None) => break,
            Err(e) => {
                prop_assert!(e.is_fatal(), "non-fatal error ended the stream: {e:?}");
                break;
            }
        }
    }
    Ok(())
}

/// JSON values without floats (which serde_json does not round-trip exactly).
fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            vec(("[a-z_]{0,8}", inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn arb_params() -> impl Strategy<Value = Option<Value>> {
    // `null` parameters read back as absent, so they are not generated here.
    prop::option::of(arb_json().prop_filter("null reads back as None", |v| !v.is_null()))
}

/// Attachments as the server sends them.
fn arb_attachment() -> impl Strategy<Value = Attachment> {
    let url = "https?://[a-z0-9./?=&%-]{1,40}";
    prop_oneof![
        (
            url,
            prop::option::of(1u32..=100_000),
            prop::option::of(1u32..=100_000)
        )
            .prop_map(|(url, width, height)| Attachment::Image { url, width, height }),
        (
            url,
            prop::option::of(".{0,20}"),
            prop::option::of(1u32..=100_000)
        )
            .prop_map(|(url, source, length)| Attachment::Video {
                url,
                source,
                length
            }),
    ]
}

fn opt_attachments() -> impl Strategy<Value = Option<Vec<Attachment>>> {
    prop::option::of(vec(arb_attachment(), 0..5))
}

fn arb_client_package() -> impl Strategy<Value = ClientPackage> {
    prop_oneof![
        any::<String>().prop_map(|message| ClientPackage::Message(OutgoingMessage::text(message))),
        (any::<String>(), vec(arb_attachment(), 0..5)).prop_map(|(message, a)| {
            ClientPackage::Message(OutgoingMessage {
                message,
                attachments: Some(serde_json::to_value(a).unwrap()),
            })
        }),
        (any::<String>(), arb_json()).prop_map(|(message, a)| {
            ClientPackage::Message(OutgoingMessage {
                message,
                attachments: (!a.is_null()).then_some(a),
            })
        }),
        (any::<String>(), arb_params()).prop_map(|(command, parameters)| {
            ClientPackage::Command(Command {
                command,
                parameters,
            })
        }),
    ]
}

fn opt_names() -> impl Strategy<Value = Option<Vec<String>>> {
    prop::option::of(vec(any::<String>(), 0..5))
}

fn arb_notification() -> impl Strategy<Value = Notification> {
    let s = any::<String>;
    prop_oneof![
        (
            s(),
            s(),
            opt_names(),
            prop::option::of(any::<usize>()),
            prop::option::of(s()),
            prop::option::of(any::<bool>()),
            prop::option::of(s())
        )
            .prop_map(
                |(username, channel, users, users_total, owner, private, topic)| {
                    Notification::UserJoined {
                        username,
                        channel,
                        users,
                        users_total,
                        owner,
                        private,
                        topic,
                    }
                }
            ),
        (s(), s(), prop::option::of(any::<bool>())).prop_map(|(username, channel, kicked)| {
            Notification::UserLeft {
                username,
                channel,
                kicked,
            }
        }),
        (s(), s()).prop_map(|(old_username, new_username)| Notification::UserRename {
            old_username,
            new_username
        }),
        (vec(s(), 0..5), any::<usize>()).prop_map(|(channels, channels_total)| {
            Notification::ChannelList {
                channels,
                channels_total,
            }
        }),
        (
            s(),
            any::<bool>(),
            prop::option::of(s()),
            prop::option::of(s())
        )
            .prop_map(|(channel, private, owner, topic)| {
                Notification::ChannelUpdate {
                    channel,
                    private,
                    owner,
                    topic,
                }
            }),
        (s(), vec(s(), 0..3), vec(s(), 0..3)).prop_map(|(channel, invited, not_found)| {
            Notification::GroupCreated {
                channel,
                invited,
                not_found,
            }
        }),
        (
            s(),
            s(),
            prop::option::of(s()),
            prop::option::of(any::<bool>())
        )
            .prop_map(|(channel, by, reason, banned)| Notification::Kicked {
                channel,
                by,
                reason,
                banned,
            }),
        (s(), s()).prop_map(|(channel, username)| Notification::Banned { channel, username }),
        (s(), s()).prop_map(|(channel, username)| Notification::Unbanned { channel, username }),
        (s(), vec(s(), 0..3), any::<usize>()).prop_map(|(channel, usernames, usernames_total)| {
            Notification::BanList {
                channel,
                usernames,
                usernames_total,
            }
        }),
        (s(), s()).prop_map(|(channel, by)| Notification::ChannelDeleted { channel, by }),
        (s(), s()).prop_map(|(message, by)| Notification::ServerNotice { message, by }),
        (s(), s()).prop_map(|(channel, by)| Notification::Invited { channel, by }),
        (s(), s()).prop_map(|(channel, username)| Notification::InviteSent { channel, username }),
        prop::option::of(s()).prop_map(|token| Notification::Pong { token }),
        Just(Notification::ServerShutdown {}),
        s().prop_map(|username| Notification::Registered { username }),
        Just(Notification::PasswordChanged {}),
        (
            s(),
            any::<bool>(),
            vec(arb_history_message(), 0..4),
            any::<bool>()
        )
            .prop_map(|(place, direct, messages, more)| {
                // A channel's history names it; a conversation's its other party.
                let (channel, with) = if direct {
                    (None, Some(place))
                } else {
                    (Some(place), None)
                };
                Notification::History {
                    channel,
                    with,
                    messages,
                    more,
                }
            }),
        (s(), any::<usize>(), vec(arb_history_message(), 0..4)).prop_map(
            |(query, total, messages)| Notification::SearchResults {
                query,
                page: 1,
                rows: 20,
                total,
                messages,
                truncated: None,
            }
        ),
        (any::<i64>(), prop::option::of(s()), s(), s()).prop_map(
            |(id, channel, message, edited)| Notification::MessageEdited {
                id,
                to: channel.is_none().then(|| "bob".to_owned()),
                channel,
                message,
                edited,
            }
        ),
        (any::<i64>(), prop::option::of(s()), s()).prop_map(|(id, channel, by)| {
            Notification::MessageDeleted {
                id,
                to: channel.is_none().then(|| "bob".to_owned()),
                channel,
                by,
            }
        }),
    ]
}

fn arb_history_message() -> impl Strategy<Value = HistoryMessage> {
    let s = any::<String>;
    (
        any::<i64>(),
        s(),
        s(),
        s(),
        prop::option::of(s()),
        opt_attachments(),
        prop::option::of(s()),
        prop::option::of(s()),
    )
        .prop_map(
            |(id, username, message, timestamp, edited, attachments, channel, to)| HistoryMessage {
                id,
                username,
                message,
                timestamp,
                edited,
                attachments,
                channel,
                to,
            },
        )
}

fn arb_server_package() -> impl Strategy<Value = ServerPackage> {
    let s = any::<String>;
    prop_oneof![
        s().prop_map(|request| ServerPackage::Request(Request { request })),
        (
            any::<bool>(),
            prop::option::of(s()),
            prop::option::of(s()),
            opt_names(),
            prop::option::of(any::<usize>()),
            prop::option::of(s())
        )
            .prop_map(
                |(status, username, channel, channels, channels_total, reason)| {
                    ServerPackage::Session(Session {
                        status,
                        account: status.then_some(channels_total.is_some_and(|n| n % 2 == 0)),
                        password_required: (!status && reason.is_some()).then_some(true),
                        username,
                        channel,
                        channels,
                        channels_total,
                        reason,
                        unread: None,
                    })
                }
            ),
        arb_notification().prop_map(ServerPackage::Notification),
        (s(), s()).prop_map(|(error_type, message)| ServerPackage::Error(ErrorData {
            error_type,
            message
        })),
        (
            s(),
            s(),
            s(),
            s(),
            any::<i64>(),
            any::<bool>(),
            opt_attachments()
        )
            .prop_map(
                |(message, username, place, timestamp, id, direct, attachments)| {
                    // A channel message names its channel; a direct one its
                    // recipient, and may have been kept while they were offline.
                    let (channel, to, offline) = if direct {
                        (None, Some(place), Some(id % 2 == 0))
                    } else {
                        (Some(place), None, None)
                    };
                    ServerPackage::Message(ChatMessage {
                        message,
                        username,
                        channel,
                        to,
                        timestamp,
                        id,
                        attachments,
                        offline,
                    })
                }
            ),
    ]
}

/// Encodes, frames, unframes and decodes `package` three ways.
fn round_trip<T>(package: &T) -> Result<(), TestCaseError>
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    const MAX: usize = 1 << 20;
    let frame = codec::encode(package, MAX, 1).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let mut frames = FrameCodec::new(MAX);
    let mut buf = BytesMut::from(&frame[..]);
    let body = frames
        .decode(&mut buf)
        .map_err(|e| TestCaseError::fail(e.to_string()))?
        .ok_or_else(|| TestCaseError::fail("no frame"))?;
    prop_assert!(buf.is_empty());
    prop_assert_eq!(body.len() + HEADER_LEN, frame.len());
    let back: T = codec::decode_body(&body, MAX).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&back, package);

    // Through PackageCodec, split at an arbitrary point to exercise partial reads.
    let mut codec: PackageCodec<T> = PackageCodec::new(MAX, MAX);
    let mut out = BytesMut::new();
    codec
        .encode(package, &mut out)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let second_half = out.split_off(out.len() / 2);
    let first = codec
        .decode(&mut out)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert!(first.is_none(), "half a frame decoded");
    out.unsplit(second_half);
    match codec.decode(&mut out) {
        Ok(Some(Ok(back))) => prop_assert_eq!(&back, package),
        other => return Err(TestCaseError::fail(format!("{other:?}"))),
    }
    Ok(())
}

#[test]
fn random_bytes_never_panic_and_fail_in_class() {
    let strategy = (
        vec(any::<u8>(), 0..2048),
        1usize..300,
        16usize..1024,
        16usize..4096,
    );
    check(
        "random_bytes",
        512,
        strategy,
        |(bytes, chunk, max_frame, max_package)| feed_frames(&bytes, chunk, max_frame, max_package),
    );
}

#[test]
fn random_length_prefixes_with_random_bodies() {
    // A plausible header (often matching, often lying) in front of junk.
    let strategy = (
        prop_oneof![
            Just(0u32),
            1u32..64,
            Just(u32::MAX),
            Just(1u32 << 31),
            any::<u32>()
        ],
        vec(any::<u8>(), 0..256),
        1usize..64,
    );
    check("length_prefixes", 512, strategy, |(len, body, chunk)| {
        let mut bytes = len.to_be_bytes().to_vec();
        bytes.extend_from_slice(&body);
        feed_frames(&bytes, chunk, 1024, 4096)
    });
}

/// A byte-level change to an encoded frame.
#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, bit: u8 },
    Set { at: usize, value: u8 },
    Truncate { keep: usize },
    Insert { at: usize, bytes: Vec<u8> },
    Remove { at: usize, n: usize },
    Duplicate,
}

fn arb_mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, value)| Mutation::Set { at, value }),
        any::<usize>().prop_map(|keep| Mutation::Truncate { keep }),
        (any::<usize>(), vec(any::<u8>(), 1..8))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (any::<usize>(), 1usize..8).prop_map(|(at, n)| Mutation::Remove { at, n }),
        Just(Mutation::Duplicate),
    ]
}

fn apply(frame: &mut Vec<u8>, m: &Mutation) {
    let len = frame.len().max(1);
    match m {
        Mutation::Flip { at, bit } => {
            if let Some(b) = frame.get_mut(at % len) {
                *b ^= 1 << bit
            }
        }
        Mutation::Set { at, value } => {
            if let Some(b) = frame.get_mut(at % len) {
                *b = *value
            }
        }
        Mutation::Truncate { keep } => frame.truncate(keep % len),
        Mutation::Insert { at, bytes } => {
            let at = at % (frame.len() + 1);
            frame.splice(at..at, bytes.iter().copied());
        }
        Mutation::Remove { at, n } => {
            let at = at % len;
            let end = (at + n).min(frame.len());
            if at < end {
                frame.drain(at..end);
            }
        }
        Mutation::Duplicate => frame.extend_from_within(..),
    }
}

#[test]
fn mutated_valid_frames_fail_in_class() {
    let strategy = (arb_client_package(), vec(arb_mutation(), 0..4), 1usize..64);
    check(
        "mutated_frames",
        512,
        strategy,
        |(package, mutations, chunk)| {
            let mut frame = codec::encode(&package, 1 << 20, 6)
                .map_err(|e| TestCaseError::fail(e.to_string()))?
                .to_vec();
            for m in &mutations {
                apply(&mut frame, m);
            }
            feed_frames(&frame, chunk, 64 * 1024, 256 * 1024)
        },
    );
}

#[test]
fn valid_zlib_of_random_json_is_ok_or_a_json_error() {
    check("random_json", 512, arb_json(), |value| {
        let text = serde_json::to_vec(&value).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let body = compress::deflate(&text, 1);
        for result in [
            codec::decode_body::<ClientPackage>(&body, 1 << 20).map(|_| ()),
            codec::decode_body::<ServerPackage>(&body, 1 << 20).map(|_| ()),
        ] {
            if let Err(e) = result {
                prop_assert!(matches!(e, DecodeError::Json(_)), "{e:?}");
                prop_assert!(!e.is_fatal());
            }
        }
        Ok(())
    });
}

/// A change to a valid client package's JSON that makes it invalid.
#[derive(Debug, Clone)]
enum Shape {
    DropType,
    DropData,
    UnknownDataField(String, Value),
    WrongType(Value),
    DataNotObject(Value),
    FieldWrongType(Value),
}

fn arb_shape() -> impl Strategy<Value = Shape> {
    let not_string = arb_json().prop_filter("not a string", |v| !v.is_string());
    // Arrays included: `data` must be an object, never a positional array.
    let not_object = arb_json().prop_filter("not an object", |v| !v.is_object());
    prop_oneof![
        Just(Shape::DropType),
        Just(Shape::DropData),
        ("x[a-z]{0,6}", arb_json()).prop_map(|(k, v)| Shape::UnknownDataField(k, v)),
        prop_oneof![
            arb_json().prop_filter("not a client type", |v| {
                !matches!(v.as_str(), Some("message" | "command"))
            }),
            Just(json!("session")),
            Just(json!("Message")),
        ]
        .prop_map(Shape::WrongType),
        not_object.prop_map(Shape::DataNotObject),
        not_string.prop_map(Shape::FieldWrongType),
    ]
}

#[test]
fn valid_json_of_wrong_shape_is_a_json_error() {
    check(
        "wrong_shapes",
        512,
        (arb_client_package(), arb_shape()),
        |(package, shape)| {
            let mut v =
                serde_json::to_value(&package).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let is_message = matches!(package, ClientPackage::Message(_));
            match &shape {
                Shape::DropType => drop(v.as_object_mut().and_then(|o| o.remove("type"))),
                Shape::DropData => drop(v.as_object_mut().and_then(|o| o.remove("data"))),
                Shape::UnknownDataField(k, x) => {
                    v["data"][k.as_str()] = x.clone();
                }
                Shape::WrongType(t) => v["type"] = t.clone(),
                Shape::DataNotObject(d) => v["data"] = d.clone(),
                Shape::FieldWrongType(x) => {
                    let field = if is_message { "message" } else { "command" };
                    v["data"][field] = x.clone();
                }
            }
            let body = compress::deflate(v.to_string().as_bytes(), 1);
            match codec::decode_body::<ClientPackage>(&body, 1 << 20) {
                Ok(p) => Err(TestCaseError::fail(format!("{shape:?} accepted as {p:?}"))),
                Err(e) => {
                    prop_assert!(matches!(e, DecodeError::Json(_)), "{e:?}");
                    prop_assert!(!e.is_fatal());
                    Ok(())
                }
            }
        },
    );
}

#[test]
fn deep_nesting_is_refused_without_overflowing_the_stack() {
    let strategy = (1usize..120_000, any::<bool>(), any::<bool>());
    check(
        "deep_nesting",
        64,
        strategy,
        |(depth, arrays, in_params)| {
            let (open, close) = if arrays { ("[", "]") } else { ("{\"a\":", "}") };
            let nested = format!("{}1{}", open.repeat(depth), close.repeat(depth));
            let text = if in_params {
                format!(r#"{{"type":"command","data":{{"command":"join","parameters":{nested}}}}}"#)
            } else {
                nested
            };
            let body = compress::deflate(text.as_bytes(), 1);
            match codec::decode_body::<ClientPackage>(&body, 1 << 20) {
                // serde_json's recursion limit is 128; shallow nesting parses.
                Ok(_) => prop_assert!(in_params && depth < 128, "depth {depth} accepted"),
                Err(e) => {
                    prop_assert!(matches!(e, DecodeError::Json(_)), "{e:?}");
                    prop_assert!(!e.is_fatal());
                    if in_params && depth > 200 {
                        prop_assert!(e.to_string().contains("recursion limit"), "{e}");
                    }
                }
            }
            Ok(())
        },
    );
}

#[test]
fn huge_numbers_are_refused_or_kept_as_json() {
    let numbers = prop_oneof![
        Just("1e400".to_owned()),
        Just("-1e400".to_owned()),
        Just("1e-400".to_owned()),
        Just("18446744073709551616".to_owned()),
        Just("-9223372036854775809".to_owned()),
        "[1-9][0-9]{20,300}",
        "[1-9][0-9]{0,3}e[1-9][0-9]{2,6}",
    ];
    check("huge_numbers", 256, (numbers, 0usize..4), |(n, place)| {
        let text = match place {
            0 => format!(r#"{{"type":"message","data":{{"message":{n}}}}}"#),
            1 => format!(r#"{{"type":"command","data":{{"command":{n}}}}}"#),
            2 => format!(r#"{{"type":"command","data":{{"command":"x","parameters":[{n}]}}}}"#),
            _ => format!(r#"{{"type":{n},"data":{{}}}}"#),
        };
        let body = compress::deflate(text.as_bytes(), 1);
        let client = codec::decode_body::<ClientPackage>(&body, 1 << 20);
        match (place, client) {
            // Free-form parameters may hold any number serde_json can represent.
            (2, Ok(_)) => {}
            (_, Ok(p)) => return Err(TestCaseError::fail(format!("accepted {p:?}"))),
            (_, Err(e)) => {
                prop_assert!(matches!(e, DecodeError::Json(_)), "{e:?}");
                prop_assert!(!e.is_fatal());
            }
        }
        // The server's counters are usize: a huge one is an error, not a wrap.
        let server = format!(
            r#"{{"type":"notification","data":{{"event_type":"channel_list","channels":[],"channels_total":{n}}}}}"#
        );
        let body = compress::deflate(server.as_bytes(), 1);
        let e = codec::decode_body::<ServerPackage>(&body, 1 << 20)
            .err()
            .ok_or_else(|| TestCaseError::fail("huge count accepted"))?;
        prop_assert!(matches!(e, DecodeError::Json(_)), "{e:?}");
        Ok(())
    });
}

#[test]
fn duplicate_keys_are_refused() {
    check(
        "duplicate_keys",
        256,
        (".{0,8}", ".{0,8}", 0usize..3),
        |(a, b, which)| {
            let (a, b) = (json!(a), json!(b));
            let text = match which {
                0 => format!(r#"{{"type":"message","data":{{"message":{a},"message":{b}}}}}"#),
                1 => format!(r#"{{"type":"command","data":{{"command":{a},"command":{b}}}}}"#),
                _ => format!(
                    r#"{{"type":"command","data":{{"command":"join","parameters":{{"channel":{a}}}}},"data":{{"command":{b}}}}}"#
                ),
            };
            let body = compress::deflate(text.as_bytes(), 1);
            match codec::decode_body::<ClientPackage>(&body, 1 << 20) {
                Ok(p) => Err(TestCaseError::fail(format!("accepted {p:?}"))),
                Err(e) => {
                    prop_assert!(matches!(e, DecodeError::Json(_)), "{e:?}");
                    prop_assert!(e.to_string().contains("duplicate field"), "{e}");
                    Ok(())
                }
            }
        },
    );
}

#[test]
fn invalid_utf8_is_a_utf8_error() {
    let strategy = (
        vec(any::<u8>(), 0..64),
        vec(any::<u8>(), 0..64),
        prop_oneof![
            Just(vec![0xffu8]),
            Just(vec![0xc0, 0x80]),
            Just(vec![0xed, 0xa0, 0x80]),
            Just(vec![0xe2, 0x82]),
            Just(vec![0xf4, 0x90, 0x80, 0x80]),
        ],
    );
    check("invalid_utf8", 256, strategy, |(head, tail, bad)| {
        let mut text = br#"{"type":"message","data":{"message":""#.to_vec();
        text.extend(
            head.iter()
                .map(|b| b & 0x7f)
                .filter(|b| *b != b'"' && *b != b'\\'),
        );
        text.extend_from_slice(&bad);
        text.extend_from_slice(&tail);
        prop_assume!(std::str::from_utf8(&text).is_err());
        let body = compress::deflate(&text, 1);
        let e = codec::decode_body::<ClientPackage>(&body, 1 << 20)
            .err()
            .ok_or_else(|| TestCaseError::fail("invalid UTF-8 accepted"))?;
        prop_assert!(matches!(e, DecodeError::Utf8(_)), "{e:?}");
        prop_assert!(!e.is_fatal());
        Ok(())
    });
}

#[test]
fn inflate_output_never_exceeds_the_cap() {
    // Compressible payloads of every size around the cap, plus junk.
    let payload = prop_oneof![
        (0usize..(1 << 20), any::<u8>()).prop_map(|(n, b)| compress::deflate(&vec![b; n], 9)),
        vec(any::<u8>(), 0..4096).prop_map(|v| compress::deflate(&v, 1)),
        vec(any::<u8>(), 0..4096),
    ];
    check(
        "inflate_cap",
        96,
        (payload, 0usize..(300 * 1024)),
        |(input, cap)| {
            let mut out = Vec::new();
            let result = compress::inflate_into(&input, cap, &mut out);
            prop_assert!(
                out.capacity() <= cap + 1,
                "capacity {} over cap {cap}",
                out.capacity()
            );
            match result {
                Ok(()) => prop_assert!(out.len() <= cap),
                Err(InflateError::TooLarge { max }) => prop_assert_eq!(max, cap),
                Err(_) => {}
            }
            Ok(())
        },
    );
}

#[test]
fn data_as_array_is_refused() {
    // serde's derived structs would read `["hi"]` as their fields in order;
    // the protocol says `data` is an object, and the decoder holds to that.
    for text in [
        &br#"{"type":"message","data":["hi"]}"#[..],
        br#"{"type":"command","data":["join",{"channel":"x"}]}"#,
    ] {
        let body = compress::deflate(text, 1);
        let e = codec::decode_body::<ClientPackage>(&body, 1024).unwrap_err();
        assert!(matches!(e, DecodeError::Json(_)), "{e:?}");
        assert!(!e.is_fatal());
        assert!(e.to_string().contains("JSON object"), "{e}");
    }
}

#[test]
fn client_packages_round_trip() {
    check("client_round_trip", 256, arb_client_package(), |p| {
        round_trip(&p)
    });
}

#[test]
fn server_packages_round_trip() {
    check("server_round_trip", 256, arb_server_package(), |p| {
        round_trip(&p)
    });
}

#[test]
fn attachment_validation_never_panics_and_keeps_what_it_accepts() {
    // Valid attachments pass unchanged; anything else JSON can hold is
    // refused with a message naming the field, never a panic.
    check(
        "valid attachments",
        256,
        vec(arb_attachment(), 0..5),
        |attachments| {
            let value = serde_json::to_value(&attachments).unwrap();
            match validate_attachments(&value) {
                Ok(back) => prop_assert_eq!(back, attachments),
                Err(why) => {
                    // Only the count or a source with a control character
                    // may be refused among generated ones.
                    prop_assert!(
                        attachments.len() > 4 || why.contains("source"),
                        "refused {value}: {why}"
                    );
                }
            }
            Ok(())
        },
    );
    check("random attachments", 512, arb_json(), |value| {
        if let Err(why) = validate_attachments(&value) {
            prop_assert!(why.starts_with("attachments"), "{why}");
        }
        Ok(())
    });
}
