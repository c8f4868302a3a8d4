//! ChatMaster 3000: a chat server (and the pieces a client needs) speaking
//! length-prefixed, zlib-compressed JSON packages over TCP.
//!
//! The layers, each in its own module, data flowing one way through them:
//! [`frame`] (length prefix) → [`compress`] (zlib) → [`codec`] (JSON,
//! composing the three) → [`protocol`] (typed packages) → [`chat`] (users
//! and channels) driven by [`commands`] (the command table) and
//! [`connection`] (one task per socket) under [`server`] (accept loop and
//! shutdown). [`ui`] is the terminal client built on [`client`]; [`bench`]
//! is the load generator; [`runtime`] builds the binaries' tokio runtime.
//! `protocol.md` at the crate root is the normative description.

#![forbid(unsafe_code)]
#![warn(missing_docs, rust_2018_idioms, unreachable_pub)]

pub mod bench;
pub mod chat;
pub mod client;
pub mod codec;
pub mod commands;
pub mod compress;
pub mod config;
pub mod connection;
pub mod frame;
pub mod protocol;
pub mod rate;
pub mod runtime;
pub mod server;
pub mod ui;

pub use codec::{DecodeError, EncodeError, PackageCodec};
pub use config::{Config, ServerArgs};
pub use protocol::{ClientPackage, Command, Notification, ServerPackage};
pub use server::{run, Server};
