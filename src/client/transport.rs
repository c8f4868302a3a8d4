//! Client-side transport: a TCP connection (plain, or TLS with the
//! server's name checked) speaking packages, used by the terminal client,
//! the load generator and the tests.
//!
//! It is a thin wrapper over `Framed<ClientStream, PackageCodec>` with
//! `send` / `recv` / `recv_timeout`, plus the login handshake.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio_rustls::client::TlsStream;
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
    /// The certificate authority file could not be used.
    #[error("cannot use the CA file {0}")]
    Ca(String),
    /// The host is not a name or address a certificate can be checked for.
    #[error("{0} is not a host name or address")]
    BadHost(String),
}

/// The socket under a connection: plain TCP or TLS over TCP.
#[derive(Debug)]
pub enum ClientStream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_flush(cx),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A TLS client configuration trusting the certificates in `ca` (PEM), or
/// the system's roots without one.
pub fn tls_config(ca: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, ClientError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(path) => {
            let what = |e: String| ClientError::Ca(format!("{}: {e}", path.display()));
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| what(format!("{e:?}")))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| what(format!("{e:?}")))?;
            if certs.is_empty() {
                return Err(what("no certificate in it".into()));
            }
            for c in certs {
                roots.add(c).map_err(|e| what(e.to_string()))?;
            }
        }
        None => {
            // Unreadable system certificates are skipped, as browsers do;
            // with none at all every handshake fails and says so.
            for c in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(c);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Ca(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A package connection to a ChatMaster server.
#[derive(Debug)]
pub struct ClientConnection {
    /// The framed socket.
    framed: Framed<ClientStream, PackageCodec<ServerPackage>>,
}

impl ClientConnection {
    /// Connects with the default limits.
    pub async fn connect(addr: impl ToSocketAddrs) -> Result<Self, ClientError> {
        let stream = TcpStream::connect(addr).await?;
        let _ = stream.set_nodelay(true);
        Ok(Self::from_stream(stream))
    }

    /// Connects over TLS to `host:port`, checking that the server's
    /// certificate is valid for `host` under `config`'s roots.
    pub async fn connect_tls(
        host: &str,
        port: u16,
        config: Arc<rustls::ClientConfig>,
    ) -> Result<Self, ClientError> {
        let name = ServerName::try_from(host.to_owned())
            .map_err(|_| ClientError::BadHost(host.to_owned()))?;
        let stream = TcpStream::connect((host, port)).await?;
        let _ = stream.set_nodelay(true);
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, stream)
            .await?;
        Ok(ClientConnection {
            framed: Framed::new(ClientStream::Tls(Box::new(tls)), PackageCodec::default()),
        })
    }

    /// Wraps an already connected socket.
    pub fn from_stream(stream: TcpStream) -> Self {
        ClientConnection {
            framed: Framed::new(ClientStream::Plain(stream), PackageCodec::default()),
        }
    }

    /// The underlying TCP socket, e.g. to write raw bytes in tests (under
    /// TLS, bytes written there bypass the encryption).
    pub fn stream_mut(&mut self) -> &mut TcpStream {
        match self.framed.get_mut() {
            ClientStream::Plain(s) => s,
            ClientStream::Tls(s) => s.get_mut().0,
        }
    }

    /// Gives up the package layer: the socket plus any bytes already read
    /// from it but not yet decoded, for callers (the load generator) that
    /// take over the raw stream after the handshake. `None` for a TLS
    /// connection, whose socket cannot be used raw.
    pub fn into_parts(self) -> Option<(TcpStream, bytes::BytesMut)> {
        let parts = self.framed.into_parts();
        match parts.io {
            ClientStream::Plain(s) => Some((s, parts.read_buf)),
            ClientStream::Tls(_) => None,
        }
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
        self.send(&ClientPackage::Message(OutgoingMessage {
            message: text.to_owned(),
        }))
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
