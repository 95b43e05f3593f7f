//! The HTTP(S) accept loop both daemons use: a cap on open connections, a deadline for the TLS handshake and
//! for request headers (which also closes keep-alive connections left idle), and a bounded graceful drain.
//! Without these, a few hundred idle sockets exhaust the process's file descriptors.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;

/// The router, with the connection's peer address added to each request (what handlers read as
/// `ConnectInfo`). Not `Router::layer`, which would rebuild every route for each connection: tens of
/// kilobytes each, multiplied by thousands of long-polling followers.
#[derive(Clone)]
struct PeerRouter {
    app: Router,
    peer: SocketAddr,
}

impl tower::Service<hyper::Request<hyper::body::Incoming>> for PeerRouter {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = axum::routing::future::RouteFuture<std::convert::Infallible>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        tower::Service::<hyper::Request<hyper::body::Incoming>>::poll_ready(&mut self.app, cx)
    }

    fn call(&mut self, mut request: hyper::Request<hyper::body::Incoming>) -> Self::Future {
        request.extensions_mut().insert(ConnectInfo(self.peer));
        tower::Service::<hyper::Request<hyper::body::Incoming>>::call(&mut self.app, request)
    }
}
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// Longest wait for in-flight requests after shutdown is requested (both daemons, and the follower's running
/// restart command).
pub const DRAIN: Duration = Duration::from_secs(10);
/// Default deadline for a TLS handshake and for the headers of each request, idle time between requests
/// included.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default cap on simultaneously open connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// File descriptors kept for everything that is not a client connection (files, the database, watchers).
const RESERVED_FDS: usize = 64;

/// How a server accepts and keeps connections.
#[derive(Clone)]
pub struct ServeOptions {
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Deadline for a TLS handshake, for each request's headers, and for an idle keep-alive connection.
    pub header_timeout: Duration,
    /// Connections beyond this wait in the listen backlog until one closes.
    pub max_connections: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            tls: None,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// `wanted`, lowered so that open connections never take the descriptors the process needs for its own files
/// (read from the soft `RLIMIT_NOFILE` in `/proc/self/limits`; unchanged where that cannot be read).
// Called once before the accept loop starts; /proc is memory, not disk.
#[allow(clippy::disallowed_methods)]
pub fn connection_cap(wanted: usize) -> usize {
    let soft = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("Max open files"))?;
            line.split_whitespace().nth(3)?.parse::<usize>().ok()
        });
    match soft {
        Some(limit) => wanted.min(limit.saturating_sub(RESERVED_FDS).max(16)),
        None => wanted,
    }
}

/// Serves `app` on `listener` until `shutdown` is cancelled, then lets requests in progress finish within
/// [`DRAIN`]. The handlers see the peer address as `ConnectInfo<SocketAddr>`.
// Long on purpose: the accept loop and its drain must see the same slots and graceful-shutdown watcher.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    options: ServeOptions,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(connection_cap(options.max_connections)));
    let acceptor = options.tls.clone().map(TlsAcceptor::from);
    loop {
        // Take a slot before accepting: past the cap, clients wait in the backlog instead of exhausting fds.
        let slot = tokio::select! {
            _ = shutdown.cancelled() => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    // Out of file descriptors and similar: back off instead of spinning.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let service = TowerToHyperService::new(PeerRouter {
            app: app.clone(),
            peer,
        });
        let watcher = graceful.watcher();
        let acceptor = acceptor.clone();
        let header_timeout = options.header_timeout;
        tokio::spawn(async move {
            let _slot = slot;
            match acceptor {
                None => serve_connection(tcp, false, service, header_timeout, watcher, peer).await,
                Some(acceptor) => {
                    match tokio::time::timeout(header_timeout, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let http2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                            serve_connection(tls, http2, service, header_timeout, watcher, peer)
                                .await
                        }
                        Ok(Err(err)) => {
                            tracing::debug!(%peer, error = %err, "TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("in-flight requests did not finish in time; stopping anyway");
    }
    Ok(())
}

/// HTTP/2 only when TLS negotiated it by ALPN; plain connections speak HTTP/1.1 (no preface sniffing, so the
/// header deadline runs from the first byte awaited).
async fn serve_connection<IO>(
    io: IO,
    http2: bool,
    service: TowerToHyperService<PeerRouter>,
    header_timeout: Duration,
    watcher: hyper_util::server::graceful::Watcher,
    peer: SocketAddr,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(io);
    let outcome = if http2 {
        let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(Some(header_timeout))
            .keep_alive_timeout(header_timeout)
            .serve_connection(io, service);
        watcher.watch(connection).await
    } else {
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .serve_connection(io, service);
        watcher.watch(connection).await
    };
    if let Err(err) = outcome {
        tracing::debug!(%peer, error = %err, "connection ended with an error");
    }
}

/// Reads a PEM certificate chain and private key into a server configuration (HTTP/2 and HTTP/1.1 by ALPN).
/// Every failure names the file and what to fix.
pub fn server_tls(
    cert_file: &std::path::Path,
    key_file: &std::path::Path,
) -> Result<Arc<rustls::ServerConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .and_then(|iter| iter.collect::<Result<_, _>>())
        .map_err(|err| {
            format!(
                "{}: cannot read the certificate chain: {err}; give a PEM file with the certificate first",
                cert_file.display()
            )
        })?;
    if certs.is_empty() {
        return Err(format!(
            "{}: no certificate found; give a PEM file with \"BEGIN CERTIFICATE\" blocks",
            cert_file.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|err| {
        format!(
            "{}: cannot read the private key: {err}; give a PEM private key (PKCS#8, PKCS#1 or SEC1)",
            key_file.display()
        )
    })?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|err| err.to_string())?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|err| {
        format!(
            "{} and {} do not form a usable certificate: {err}",
            cert_file.display(),
            key_file.display()
        )
    })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn start(options: ServeOptions) -> (SocketAddr, CancellationToken) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let app = Router::new().route("/", axum::routing::get(|| async { "ok" }));
        tokio::spawn(serve(listener, app, options, shutdown.clone()));
        (addr, shutdown)
    }

    /// Reads until the peer closes; the number of bytes read.
    async fn read_to_close(stream: &mut tokio::net::TcpStream, within: Duration) -> Option<usize> {
        let mut buf = Vec::new();
        tokio::time::timeout(within, stream.read_to_end(&mut buf))
            .await
            .ok()
            .map(|r| r.unwrap_or(0))
    }

    #[tokio::test]
    async fn idle_and_half_sent_connections_are_closed_at_the_header_deadline() {
        let (addr, _stop) = start(ServeOptions {
            header_timeout: Duration::from_millis(300),
            ..ServeOptions::default()
        })
        .await;
        let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut half = tokio::net::TcpStream::connect(addr).await.unwrap();
        half.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        assert!(
            read_to_close(&mut idle, Duration::from_secs(5))
                .await
                .is_some()
        );
        assert!(
            read_to_close(&mut half, Duration::from_secs(5))
                .await
                .is_some()
        );

        // A kept-alive connection that goes quiet after a request is closed too.
        let mut kept = tokio::net::TcpStream::connect(addr).await.unwrap();
        kept.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let read = read_to_close(&mut kept, Duration::from_secs(5)).await;
        assert!(
            read.is_some_and(|n| n > 0),
            "answered, then closed when idle"
        );
    }

    #[tokio::test]
    async fn connections_past_the_cap_wait_and_are_served_once_a_slot_frees() {
        let (addr, _stop) = start(ServeOptions {
            header_timeout: Duration::from_millis(400),
            max_connections: 2,
            ..ServeOptions::default()
        })
        .await;
        let _a = tokio::net::TcpStream::connect(addr).await.unwrap();
        let _b = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut third = tokio::net::TcpStream::connect(addr).await.unwrap();
        third
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(5), third.read_to_string(&mut answer))
            .await
            .unwrap()
            .unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }

    #[test]
    fn cap_respects_the_descriptor_limit() {
        assert!(connection_cap(usize::MAX) < usize::MAX);
        assert_eq!(connection_cap(8), 8);
    }
}
