//! The client side: [`transport`] is the typed connection to a server
//! (shared by the terminal client, the bench and the tests) and [`ui`] is
//! the terminal client built on it.

pub mod transport;
pub mod ui;

pub use transport::{ClientConnection, ClientError};
