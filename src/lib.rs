//! ChatMaster 3000: a chat server (and the pieces a client needs) speaking
//! length-prefixed, zlib-compressed JSON packages over TCP.
//!
//! One folder per layer, data flowing one way through them: [`wire`]
//! (length prefix, zlib, JSON, typed packages) is spoken by [`server`]
//! (accept loop, connections, command table, chat state, limits) and by
//! [`client`] (the typed transport and the terminal client); [`cluster`]
//! (several nodes as one chat); [`store`]
//! keeps what must survive a restart, behind a trait the server calls;
//! [`bench`](mod@bench) is the load generator; [`runtime`] builds the binaries'
//! tokio runtime; [`ops`] is what running the server as a service needs
//! (configuration file and environment, reload, log format, systemd).
//! `protocol.md` at the crate root is the normative description.

#![forbid(unsafe_code)]
#![warn(missing_docs, rust_2018_idioms, unreachable_pub)]

pub mod bench;
pub mod client;
pub mod cluster;
pub mod metrics;
pub mod ops;
pub mod runtime;
pub mod server;
pub mod store;
pub mod web;
pub mod wire;

pub use server::config::{Config, ServerArgs};
pub use server::{run, Server};
pub use wire::codec::{DecodeError, EncodeError, PackageCodec};
pub use wire::protocol::{ClientPackage, Command, Notification, ServerPackage};
