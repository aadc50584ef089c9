//! Key strings: `{prefix}_{secret}` with a 32-character base62 secret from the OS CSPRNG.
//! Only the SHA-256 of the full string is ever stored.

use sha2::{Digest, Sha256};

pub const SECRET_LEN: usize = 32;
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

pub type KeyHash = [u8; 32];

#[derive(Debug, Clone)]
pub struct GeneratedKey {
    pub full: String,
    pub hash: KeyHash,
    pub hint: String,
}

pub fn is_valid_prefix(prefix: &str) -> bool {
    (1..=16).contains(&prefix.len()) && prefix.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Random base62 string of `len` characters, unbiased (rejection sampling over bytes).
pub fn random_base62(len: usize) -> Result<String, getrandom::Error> {
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        getrandom::fill(&mut buf)?;
        for &b in &buf {
            // 248 = 62 * 4: bytes at or above it would favour the first characters.
            if b < 248 {
                out.push(BASE62[(b % 62) as usize] as char);
                if out.len() == len {
                    break;
                }
            }
        }
    }
    Ok(out)
}

pub fn generate_key(prefix: &str) -> Result<GeneratedKey, getrandom::Error> {
    let secret = random_base62(SECRET_LEN)?;
    let full = format!("{prefix}_{secret}");
    Ok(GeneratedKey {
        hash: hash_key(&full),
        hint: hint_for(prefix, &secret),
        full,
    })
}

pub fn hash_key(full: &str) -> KeyHash {
    Sha256::digest(full.as_bytes()).into()
}

/// Display form `roc_abc1…f456`: enough to recognise a key, far too little to use it.
pub fn hint_for(prefix: &str, secret: &str) -> String {
    let head: String = secret.chars().take(4).collect();
    let tail: String = secret
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("{prefix}_{head}…{tail}")
}

/// Whether a presented string looks like a full key (as opposed to a numeric id).
pub fn looks_like_full_key(s: &str) -> bool {
    match s.split_once('_') {
        Some((prefix, secret)) => is_valid_prefix(prefix) && !secret.is_empty(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_have_the_documented_shape() {
        let k = generate_key("roc").unwrap();
        let (prefix, secret) = k.full.split_once('_').unwrap();
        assert_eq!(prefix, "roc");
        assert_eq!(secret.len(), SECRET_LEN);
        assert!(secret.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_eq!(k.hash, hash_key(&k.full));
        assert!(k.hint.starts_with("roc_") && k.hint.contains('…'));
        assert!(!k.hint.contains(&secret[4..28]));
    }

    #[test]
    fn secrets_differ() {
        let a = generate_key("qp").unwrap();
        let b = generate_key("qp").unwrap();
        assert_ne!(a.full, b.full);
    }

    #[test]
    fn prefix_rules() {
        assert!(is_valid_prefix("roc"));
        assert!(is_valid_prefix("A1234567890bcdef"));
        assert!(!is_valid_prefix(""));
        assert!(!is_valid_prefix("a_b"));
        assert!(!is_valid_prefix("abcdefghijklmnopq"));
        assert!(looks_like_full_key("roc_abc"));
        assert!(!looks_like_full_key("123"));
    }
}
