//! TLS for the examples and tests: a self-signed certificate made on the spot, the rustls
//! server configuration that presents it, and a client configuration that trusts it.
//!
//! In production the server's certificate comes from your CA (or TLS ends at a proxy in front
//! of the server), and clients trust the usual roots.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use wse_server::Server;

/// Serves `server` over TLS on `listener`: each socket completes the TLS handshake with
/// `config`, then goes to [`Server::serve_io`]. A failed TLS handshake is that socket's
/// problem only.
pub fn serve(
    server: Server,
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
) -> JoinHandle<()> {
    let acceptor = TlsAcceptor::from(config);
    tokio::spawn(async move {
        while let Ok((tcp, remote_addr)) = listener.accept().await {
            let (acceptor, server) = (acceptor.clone(), server.clone());
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(tcp).await {
                    server.serve_io(tls, remote_addr).await;
                }
            });
        }
    })
}

/// A server and a client configuration for `host`, sharing one fresh self-signed certificate.
///
/// # Errors
/// When the certificate cannot be made or rustls refuses it.
pub fn self_signed(
    host: &str,
) -> Result<(Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>), Box<dyn std::error::Error>> {
    let certified = rcgen::generate_simple_self_signed(vec![host.to_owned()])?;
    let certificate: CertificateDer<'static> = certified.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));

    let server = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![certificate.clone()], key)?;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(certificate)?;
    let client = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok((Arc::new(server), Arc::new(client)))
}
