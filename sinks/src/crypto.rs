//! Secrets at rest: AES-256-GCM under a 32-byte master key, stored as
//! `base64(nonce || ciphertext)`. The master key comes from `TIDEMARK_MASTER_KEY`
//! (base64 of 32 bytes) or from a key file the first start generates with mode 0600.

use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::{Error, Result};

const KEY_BYTES: usize = 32;
const NONCE_BYTES: usize = 12;

/// The key that encrypts stored secrets. `Debug` never shows it.
#[derive(Clone)]
pub struct MasterKey {
    cipher: Aes256Gcm,
    /// HMAC-SHA256(master key, "tidemark-derive"): the root of [`MasterKey::derive`]d keys.
    derive_root: [u8; 32],
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

impl MasterKey {
    /// Parses base64 of exactly 32 bytes; `field` names where the value came from.
    pub fn parse(text: &str, field: &str) -> Result<MasterKey> {
        let bytes = STANDARD.decode(text.trim()).map_err(|e| {
            Error::invalid(
                field,
                format!("must be base64 of 32 bytes (`openssl rand -base64 32`): {e}"),
            )
        })?;
        if bytes.len() != KEY_BYTES {
            return Err(Error::invalid(
                field,
                format!("must be base64 of 32 bytes, got {} bytes", bytes.len()),
            ));
        }
        let cipher =
            Aes256Gcm::new_from_slice(&bytes).map_err(|e| Error::invalid(field, e.to_string()))?;
        Ok(MasterKey {
            cipher,
            derive_root: hmac_sha256(&bytes, b"tidemark-derive"),
        })
    }

    /// Reads the key file at `path`, or creates it with a random key and mode 0600.
    pub fn load_or_create(path: &Path) -> std::io::Result<MasterKey> {
        let field = path.display().to_string();
        let bad = |e: Error| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string());
        match std::fs::read_to_string(path) {
            Ok(text) => return MasterKey::parse(&text, &field).map_err(bad),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut key = [0u8; KEY_BYTES];
        rand::fill(&mut key[..]);
        let text = STANDARD.encode(key);
        write_private(path, &text)?;
        // Another process may have won the race to create it: read what is there.
        let text = std::fs::read_to_string(path)?;
        MasterKey::parse(&text, &field).map_err(bad)
    }

    /// A 32-byte key for `purpose` (e.g. signing download tokens), the same on every node
    /// sharing the master key, and independent of the encryption key.
    pub fn derive(&self, purpose: &str) -> [u8; 32] {
        hmac_sha256(&self.derive_root, purpose.as_bytes())
    }

    /// `base64(nonce || ciphertext)` of `plain`.
    pub fn encrypt(&self, plain: &[u8]) -> String {
        let mut nonce = [0u8; NONCE_BYTES];
        rand::fill(&mut nonce[..]);
        let Ok(sealed) = self.cipher.encrypt(Nonce::from_slice(&nonce), plain) else {
            unreachable!("AES-GCM encrypts any message shorter than 64 GiB")
        };
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        STANDARD.encode(out)
    }

    /// Reverses [`MasterKey::encrypt`]; fails on a different key or damaged data.
    pub fn decrypt(&self, stored: &str) -> Result<Vec<u8>> {
        let bytes = STANDARD
            .decode(stored)
            .map_err(|e| Error::Crypto(format!("not base64: {e}")))?;
        if bytes.len() <= NONCE_BYTES {
            return Err(Error::Crypto("too short".into()));
        }
        let (nonce, sealed) = bytes.split_at(NONCE_BYTES);
        self.cipher
            .decrypt(Nonce::from_slice(nonce), sealed)
            .map_err(|_| Error::Crypto("authentication failed (a different master key?)".into()))
    }
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    use hmac::{Hmac, Mac};
    let Ok(mut mac) = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key) else {
        unreachable!("HMAC takes keys of any length")
    };
    mac.update(message);
    mac.finalize().into_bytes().into()
}

#[cfg(unix)]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(mut f) => {
            f.write_all(text.as_bytes())?;
            f.sync_all()
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(not(unix))]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::write(path, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_wrong_key() {
        let dir = std::env::temp_dir().join(format!("tm-key-{}", std::process::id()));
        let path = dir.join("master.key");
        let _ = std::fs::remove_file(&path);
        let key = MasterKey::load_or_create(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let sealed = key.encrypt(b"whsec_abc");
        assert!(!sealed.contains("whsec"));
        // The same file gives the same key.
        let again = MasterKey::load_or_create(&path).unwrap();
        assert_eq!(again.decrypt(&sealed).unwrap(), b"whsec_abc");
        let other = MasterKey::parse(&STANDARD.encode([7u8; 32]), "k").unwrap();
        assert!(
            other
                .decrypt(&sealed)
                .unwrap_err()
                .to_string()
                .contains("authentication failed")
        );
        let e = MasterKey::parse("c2hvcnQ=", "TIDEMARK_MASTER_KEY")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "TIDEMARK_MASTER_KEY: must be base64 of 32 bytes, got 5 bytes"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
