//! The wire: everything between a socket's bytes and typed packages.
//!
//! Data flows one way through the layers: [`frame`] (the 4-byte length
//! prefix) → [`compress`] (zlib, with the inflate cap) → [`codec`] (JSON,
//! composing the three) → [`protocol`] (the typed packages of both
//! directions and the name and text rules). Nothing here knows about users,
//! channels or sockets, so every transport and both ends (server, client,
//! bench) share it.

pub mod codec;
pub mod compress;
pub mod frame;
pub mod protocol;
