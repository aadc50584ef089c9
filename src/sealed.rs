//! Secrets at rest: upstream keys and header values are sealed with AES-256-GCM under a key
//! derived from `SECRETS_KEY` when one is set, and kept as they are (marked `plain:`)
//! otherwise. A sealed value reads back only with the same key; a plain one always reads
//! back, so setting the key later seals each value at its next write.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use sha2::{Digest, Sha256};

const SEALED: &str = "v1:";
const PLAIN: &str = "plain:";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("sealed with SECRETS_KEY, which is not set")]
    NoKey,
    #[error("cannot be opened with this SECRETS_KEY")]
    WrongKey,
    #[error("not a stored secret")]
    Malformed,
}

/// Seals and opens stored secrets.
pub struct Sealer {
    key: Option<LessSafeKey>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("sealing", &self.key.is_some())
            .finish()
    }
}

impl Sealer {
    /// Any passphrase: the AES key is its SHA-256, so its length and alphabet are free.
    pub fn new(passphrase: Option<&str>) -> Self {
        let key = passphrase.filter(|p| !p.is_empty()).and_then(|p| {
            let digest = Sha256::digest(p.as_bytes());
            // A 32-byte key always fits AES-256; `ok()` only guards the impossible.
            UnboundKey::new(&AES_256_GCM, &digest)
                .ok()
                .map(LessSafeKey::new)
        });
        Self { key }
    }

    pub fn sealing(&self) -> bool {
        self.key.is_some()
    }

    pub fn seal(&self, plain: &str) -> String {
        let Some(key) = &self.key else {
            return format!("{PLAIN}{plain}");
        };
        let mut nonce = [0u8; NONCE_LEN];
        // Without randomness no nonce can be trusted; keep the value unsealed rather
        // than reuse one (the platform's source does not fail in practice).
        if getrandom::fill(&mut nonce).is_err() {
            return format!("{PLAIN}{plain}");
        }
        let mut buf = plain.as_bytes().to_vec();
        if key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut buf)
            .is_err()
        {
            return format!("{PLAIN}{plain}");
        }
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        format!("{SEALED}{}", STANDARD.encode(out))
    }

    pub fn open(&self, stored: &str) -> Result<String, SealError> {
        if let Some(p) = stored.strip_prefix(PLAIN) {
            return Ok(p.to_owned());
        }
        let b64 = stored.strip_prefix(SEALED).ok_or(SealError::Malformed)?;
        let key = self.key.as_ref().ok_or(SealError::NoKey)?;
        let mut raw = STANDARD.decode(b64).map_err(|_| SealError::Malformed)?;
        if raw.len() < NONCE_LEN {
            return Err(SealError::Malformed);
        }
        let mut body = raw.split_off(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(&raw).map_err(|_| SealError::Malformed)?;
        let plain = key
            .open_in_place(nonce, Aad::empty(), &mut body)
            .map_err(|_| SealError::WrongKey)?;
        String::from_utf8(plain.to_vec()).map_err(|_| SealError::Malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_reads_back_only_with_its_key() {
        let s = Sealer::new(Some("correct horse"));
        let sealed = s.seal("sk-upstream-secret");
        assert!(sealed.starts_with("v1:"));
        assert!(!sealed.contains("sk-upstream"));
        assert_ne!(
            sealed,
            s.seal("sk-upstream-secret"),
            "fresh nonce each time"
        );
        assert_eq!(s.open(&sealed).unwrap(), "sk-upstream-secret");
        assert_eq!(
            Sealer::new(Some("other")).open(&sealed),
            Err(SealError::WrongKey)
        );
        assert_eq!(Sealer::new(None).open(&sealed), Err(SealError::NoKey));
        let plain = Sealer::new(None).seal("x");
        assert_eq!(plain, "plain:x");
        assert_eq!(s.open(&plain).unwrap(), "x");
        assert_eq!(s.open("v1:@@"), Err(SealError::Malformed));
        assert_eq!(s.open("v1:AAAA"), Err(SealError::Malformed));
    }
}
