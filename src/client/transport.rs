//! Client-side transport: a TCP connection speaking packages, used by the
//! terminal client, the load generator and the tests.
//!
//! It is a thin wrapper over `Framed<TcpStream, PackageCodec>` with
//! `send` / `recv` / `recv_timeout`, plus the login handshake.

use std::io;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio_util::codec::Framed;

use crate::wire::codec::{DecodeError, EncodeError, PackageCodec};
use crate::wire::protocol::{ClientPackage, Command, OutgoingMessage, ServerPackage, Session};

/// Why a client-side operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Connecting or the socket failed.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    /// The server sent something that is not a valid package.
    #[error("bad package from server: {0}")]
    Decode(#[from] DecodeError),
    /// A package could not be encoded.
    #[error("cannot encode package: {0}")]
    Encode(#[from] EncodeError),
    /// The server closed the connection.
    #[error("connection closed by the server")]
    Closed,
    /// Nothing arrived in time.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The server answered something other than what the protocol says.
    #[error("unexpected package: {0:?}")]
    Unexpected(Box<ServerPackage>),
}

/// A package connection to a ChatMaster server.
#[derive(Debug)]
pub struct ClientConnection {
    /// The framed socket.
    framed: Framed<TcpStream, PackageCodec<ServerPackage>>,
}

impl ClientConnection {
    /// Connects with the default limits.
    pub async fn connect(addr: impl ToSocketAddrs) -> Result<Self, ClientError> {
        let stream = TcpStream::connect(addr).await?;
        let _ = stream.set_nodelay(true);
        Ok(Self::from_stream(stream))
    }

    /// Wraps an already connected socket.
    pub fn from_stream(stream: TcpStream) -> Self {
        ClientConnection {
            framed: Framed::new(stream, PackageCodec::default()),
        }
    }

    /// The underlying socket, e.g. to write raw bytes in tests.
    pub fn stream_mut(&mut self) -> &mut TcpStream {
        self.framed.get_mut()
    }

    /// Gives up the package layer: the socket plus any bytes already read
    /// from it but not yet decoded, for callers (the load generator) that
    /// take over the raw stream after the handshake.
    pub fn into_parts(self) -> (TcpStream, bytes::BytesMut) {
        let parts = self.framed.into_parts();
        (parts.io, parts.read_buf)
    }

    /// Sends one package.
    pub async fn send(&mut self, package: &ClientPackage) -> Result<(), ClientError> {
        Ok(self.framed.send(package).await?)
    }

    /// Queues one package without flushing; call [`Self::flush`] after a batch.
    pub async fn feed(&mut self, package: &ClientPackage) -> Result<(), ClientError> {
        Ok(self.framed.feed(package).await?)
    }

    /// Flushes packages queued by [`Self::feed`].
    pub async fn flush(&mut self) -> Result<(), ClientError> {
        Ok(SinkExt::<&ClientPackage>::flush(&mut self.framed).await?)
    }

    /// Sends a command.
    pub async fn command(
        &mut self,
        command: &str,
        parameters: Option<serde_json::Value>,
    ) -> Result<(), ClientError> {
        self.send(&ClientPackage::Command(Command::new(command, parameters)))
            .await
    }

    /// Sends chat text.
    pub async fn message(&mut self, text: &str) -> Result<(), ClientError> {
        self.send(&ClientPackage::Message(OutgoingMessage::text(
            text.to_owned(),
        )))
        .await
    }

    /// Waits for the next package.
    pub async fn recv(&mut self) -> Result<ServerPackage, ClientError> {
        match self.framed.next().await {
            Some(Ok(Ok(p))) => Ok(p),
            Some(Ok(Err(e))) | Some(Err(e)) => Err(e.into()),
            None => Err(ClientError::Closed),
        }
    }

    /// Waits for the next package, at most `limit`.
    pub async fn recv_timeout(&mut self, limit: Duration) -> Result<ServerPackage, ClientError> {
        tokio::time::timeout(limit, self.recv())
            .await
            .map_err(|_| ClientError::Timeout(limit))?
    }

    /// Performs the handshake: waits for `request login`, sends `login`,
    /// returns the `session` (which may be a refusal).
    pub async fn login(&mut self, username: &str, limit: Duration) -> Result<Session, ClientError> {
        match self.recv_timeout(limit).await? {
            ServerPackage::Request(r) if r.request == "login" => {}
            other => return Err(ClientError::Unexpected(Box::new(other))),
        }
        self.command("login", Some(serde_json::json!({ "username": username })))
            .await?;
        match self.recv_timeout(limit).await? {
            ServerPackage::Session(s) => Ok(s),
            other => Err(ClientError::Unexpected(Box::new(other))),
        }
    }
}
