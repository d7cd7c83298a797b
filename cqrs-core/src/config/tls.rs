//! TLS material for `amqps://` brokers: extra trusted CA certificates and a client identity.

use std::fmt;
use std::path::{Path, PathBuf};

use super::{TLS_CA_FILE, TLS_CERT_FILE, TLS_KEY_FILE, config};
use crate::Result;

/// TLS settings used for `amqps://` URLs, loaded from PEM files when the configuration is
/// built, so that a missing or unreadable file is reported at start-up.
///
/// The system's root certificates are always trusted; `CQRS_AMQP_TLS_CA_FILE` adds the CA
/// certificates of a private PKI. A client certificate with its key (PKCS#8 PEM) enables
/// mutual TLS. `Debug` shows only the file names, never the key.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct TlsSettings {
    ca: Option<(PathBuf, String)>,
    identity: Option<ClientIdentity>,
}

#[derive(Clone, PartialEq, Eq)]
struct ClientIdentity {
    cert_file: PathBuf,
    cert_pem: Vec<u8>,
    key_file: PathBuf,
    key_pem: Vec<u8>,
}

impl TlsSettings {
    /// Loads and checks the files; `None` paths mean "not configured".
    pub(super) fn load(
        ca_file: Option<PathBuf>,
        cert_file: Option<PathBuf>,
        key_file: Option<PathBuf>,
    ) -> Result<TlsSettings> {
        let ca = match ca_file {
            Some(path) => {
                let pem = read_pem(TLS_CA_FILE, &path, "CERTIFICATE")?;
                Some((path, String::from_utf8_lossy(&pem).into_owned()))
            }
            None => None,
        };
        let identity = match (cert_file, key_file) {
            (None, None) => None,
            (Some(cert_file), Some(key_file)) => Some(ClientIdentity {
                cert_pem: read_pem(TLS_CERT_FILE, &cert_file, "CERTIFICATE")?,
                key_pem: read_pem(TLS_KEY_FILE, &key_file, "PRIVATE KEY")?,
                cert_file,
                key_file,
            }),
            (Some(_), None) => {
                return Err(config(
                    TLS_KEY_FILE,
                    "a client certificate is configured without its key; set both \
                     `CQRS_AMQP_TLS_CERT_FILE` and `CQRS_AMQP_TLS_KEY_FILE` or neither",
                ));
            }
            (None, Some(_)) => {
                return Err(config(
                    TLS_CERT_FILE,
                    "a client key is configured without its certificate; set both \
                     `CQRS_AMQP_TLS_CERT_FILE` and `CQRS_AMQP_TLS_KEY_FILE` or neither",
                ));
            }
        };
        Ok(TlsSettings { ca, identity })
    }

    /// The file of extra trusted CA certificates, if any.
    pub fn ca_file(&self) -> Option<&Path> {
        self.ca.as_ref().map(|(path, _)| path.as_path())
    }

    /// The client certificate and key files, if mutual TLS is configured.
    pub fn client_identity_files(&self) -> Option<(&Path, &Path)> {
        self.identity
            .as_ref()
            .map(|id| (id.cert_file.as_path(), id.key_file.as_path()))
    }

    /// The settings in the form lapin takes.
    #[cfg(feature = "rabbitmq")]
    pub(crate) fn to_lapin(&self) -> lapin::tcp::OwnedTLSConfig {
        lapin::tcp::OwnedTLSConfig {
            identity: self
                .identity
                .as_ref()
                .map(|id| lapin::tcp::OwnedIdentity::PKCS8 {
                    pem: id.cert_pem.clone(),
                    key: id.key_pem.clone(),
                }),
            cert_chain: self.ca.as_ref().map(|(_, pem)| pem.clone()),
        }
    }
}

impl fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSettings")
            .field("ca_file", &self.ca_file())
            .field("client_identity_files", &self.client_identity_files())
            .finish()
    }
}

/// Reads a PEM file that must hold at least one block of `label` (`CERTIFICATE`, or any
/// `... PRIVATE KEY`).
fn read_pem(setting: &'static str, path: &Path, label: &str) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(|error| {
        config(
            setting,
            format!("cannot read `{}`: {error}", path.display()),
        )
    })?;
    let text = String::from_utf8_lossy(&bytes);
    let has_block = text
        .lines()
        .any(|line| line.starts_with("-----BEGIN ") && line.contains(label));
    if !has_block {
        return Err(config(
            setting,
            format!(
                "`{}` holds no PEM `{label}` block; expected a PEM file (`-----BEGIN {label}-----`)",
                path.display()
            ),
        ));
    }
    Ok(bytes)
}
