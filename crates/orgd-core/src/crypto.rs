//! The vault: AES-256-GCM with key ids (API.md, Secrets).
//!
//! A sealed value is self-describing text, `v1.<key id>.<nonce hex>.<ciphertext+tag hex>`:
//! the key id (8 hex characters derived from the key) says which key made it, so
//! `ENCRYPTION_KEY` can change while `ENCRYPTION_KEYS_OLD` still opens older values. Every
//! value is bound (as AEAD associated data) to the organization and purpose it was sealed
//! for, so a ciphertext copied to another organization or provider does not open.

use aes_gcm::aead::{Aead, Nonce, Payload};
use aes_gcm::{Aes256Gcm, KeyInit};
use sha2::{Digest, Sha256};

use crate::secret::Secret;

const FORMAT: &str = "v1";
const NONCE_BYTES: usize = 12;
const TAG_BYTES: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VaultError {
    #[error("sealed value is malformed")]
    Malformed,
    #[error("sealed value was made with key {0}, which is not configured")]
    UnknownKey(String),
    /// Wrong key, wrong organization/purpose, or tampered ciphertext.
    #[error("sealed value failed authentication")]
    Inauthentic,
}

/// What a sealed value belongs to; both parts are authenticated with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub organization_id: String,
    /// e.g. `integration:linear` or `byok:openai`.
    pub purpose: String,
}

impl Binding {
    pub fn new(organization_id: &str, purpose: impl Into<String>) -> Self {
        Self {
            organization_id: organization_id.to_string(),
            purpose: purpose.into(),
        }
    }

    fn aad(&self) -> Vec<u8> {
        // Length-prefixed so no two different bindings produce the same bytes.
        let mut aad = Vec::new();
        for part in [FORMAT, &self.organization_id, &self.purpose] {
            aad.extend_from_slice(&(part.len() as u32).to_be_bytes());
            aad.extend_from_slice(part.as_bytes());
        }
        aad
    }
}

struct VaultKey {
    id: String,
    cipher: Aes256Gcm,
}

impl VaultKey {
    fn new(bytes: &[u8; 32]) -> Self {
        Self {
            id: key_id(bytes),
            cipher: Aes256Gcm::new(&(*bytes).into()),
        }
    }
}

/// The id recorded with every sealed value: 8 hex characters of a domain-separated
/// SHA-256 of the key (reveals nothing usable about a random 256-bit key).
pub fn key_id(key: &[u8; 32]) -> String {
    let digest = Sha256::new()
        .chain_update(b"orgd vault key id\0")
        .chain_update(key)
        .finalize();
    hex::encode(&digest[..4])
}

/// Seals with the current key; opens with the current key or any old one.
pub struct Vault {
    current: VaultKey,
    old: Vec<VaultKey>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let old: Vec<&str> = self.old.iter().map(|k| k.id.as_str()).collect();
        f.debug_struct("Vault")
            .field("current", &self.current.id)
            .field("old", &old)
            .finish()
    }
}

impl Vault {
    pub fn new(current: &[u8; 32], old: &[Secret<[u8; 32]>]) -> Self {
        Self {
            current: VaultKey::new(current),
            old: old.iter().map(|k| VaultKey::new(&k.0)).collect(),
        }
    }

    pub fn current_key_id(&self) -> &str {
        &self.current.id
    }

    /// Encrypts `plaintext` for `binding` under the current key with a fresh random nonce.
    pub fn seal(&self, plaintext: &str, binding: &Binding) -> String {
        let nonce_bytes: [u8; NONCE_BYTES] = rand::random();
        let aad = binding.aad();
        let payload = Payload {
            msg: plaintext.as_bytes(),
            aad: &aad,
        };
        // AES-GCM only fails for inputs beyond 64 GiB; secrets are capped far below that.
        let ciphertext = self
            .current
            .cipher
            .encrypt(&Nonce::<Aes256Gcm>::from(nonce_bytes), payload)
            .unwrap_or_default();
        format!(
            "{FORMAT}.{}.{}.{}",
            self.current.id,
            hex::encode(nonce_bytes),
            hex::encode(ciphertext)
        )
    }

    /// Decrypts a value made by `seal` for the same `binding`.
    pub fn open(&self, sealed: &str, binding: &Binding) -> Result<Secret<String>, VaultError> {
        let parsed = Parsed::parse(sealed)?;
        let key = std::iter::once(&self.current)
            .chain(&self.old)
            .find(|k| k.id == parsed.key_id)
            .ok_or_else(|| VaultError::UnknownKey(parsed.key_id.to_string()))?;
        let aad = binding.aad();
        let plaintext = key
            .cipher
            .decrypt(
                &Nonce::<Aes256Gcm>::from(parsed.nonce),
                Payload {
                    msg: &parsed.ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| VaultError::Inauthentic)?;
        String::from_utf8(plaintext)
            .map(Secret)
            .map_err(|_| VaultError::Inauthentic)
    }

    /// True when `sealed` was made with the current key (rotation skips it).
    pub fn is_current(&self, sealed: &str) -> bool {
        Parsed::parse(sealed).is_ok_and(|p| p.key_id == self.current.id)
    }
}

struct Parsed<'a> {
    key_id: &'a str,
    nonce: [u8; NONCE_BYTES],
    ciphertext: Vec<u8>,
}

impl<'a> Parsed<'a> {
    fn parse(sealed: &'a str) -> Result<Self, VaultError> {
        let mut parts = sealed.split('.');
        let (Some(FORMAT), Some(key_id), Some(nonce), Some(ciphertext), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(VaultError::Malformed);
        };
        let nonce = hex::decode(nonce)
            .ok()
            .and_then(|n| <[u8; NONCE_BYTES]>::try_from(n).ok())
            .ok_or(VaultError::Malformed)?;
        let ciphertext = hex::decode(ciphertext)
            .ok()
            .filter(|c| c.len() >= TAG_BYTES)
            .ok_or(VaultError::Malformed)?;
        if key_id.len() != 8 {
            return Err(VaultError::Malformed);
        }
        Ok(Self {
            key_id,
            nonce,
            ciphertext,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn vault(current: u8, old: &[u8]) -> Vault {
        let old: Vec<Secret<[u8; 32]>> = old.iter().map(|b| Secret([*b; 32])).collect();
        Vault::new(&[current; 32], &old)
    }

    fn binding() -> Binding {
        Binding::new("507f191e810c19729de860ea", "integration:linear")
    }

    #[test]
    fn seals_with_fresh_nonces_and_key_id() {
        let v = vault(1, &[]);
        let a = v.seal("lin_api_secret", &binding());
        let b = v.seal("lin_api_secret", &binding());
        assert_ne!(a, b, "nonces must differ");
        assert!(a.starts_with(&format!("v1.{}.", key_id(&[1; 32]))));
        assert!(!a.contains("lin_api_secret"));
        assert_eq!(v.open(&a, &binding()).unwrap().0, "lin_api_secret");
        assert!(v.is_current(&a));
    }

    #[test]
    fn wrong_key_binding_or_tampering_is_an_error() {
        let sealed = vault(1, &[]).seal("token", &binding());
        assert_eq!(
            vault(2, &[]).open(&sealed, &binding()).unwrap_err(),
            VaultError::UnknownKey(key_id(&[1; 32]))
        );
        let v = vault(1, &[]);
        let other_org = Binding::new("507f191e810c19729de860eb", "integration:linear");
        assert_eq!(
            v.open(&sealed, &other_org).unwrap_err(),
            VaultError::Inauthentic
        );
        let other_purpose = Binding::new("507f191e810c19729de860ea", "integration:monday");
        assert_eq!(
            v.open(&sealed, &other_purpose).unwrap_err(),
            VaultError::Inauthentic
        );
        // Flip one hex digit of the ciphertext.
        let mut tampered = sealed.clone().into_bytes();
        let last = tampered.len() - 1;
        tampered[last] = if tampered[last] == b'0' { b'1' } else { b'0' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert_eq!(
            v.open(&tampered, &binding()).unwrap_err(),
            VaultError::Inauthentic
        );
        for garbage in [
            "",
            "v1",
            "v2.abcdabcd.00.00",
            "v1.abcdabcd.zz.00",
            "v1.ab.000000000000000000000000.00",
        ] {
            assert!(v.open(garbage, &binding()).is_err(), "{garbage}");
        }
    }

    #[test]
    fn old_keys_still_open() {
        let sealed = vault(1, &[]).seal("token", &binding());
        let rotated = vault(2, &[1]);
        assert_eq!(rotated.open(&sealed, &binding()).unwrap().0, "token");
        assert!(!rotated.is_current(&sealed));
        let resealed = rotated.seal("token", &binding());
        assert_eq!(
            vault(2, &[]).open(&resealed, &binding()).unwrap().0,
            "token"
        );
    }

    #[test]
    fn debug_never_shows_keys() {
        let shown = format!("{:?}", vault(7, &[8]));
        assert!(!shown.contains("07070707"), "{shown}");
        assert!(shown.contains(&key_id(&[7; 32])));
    }

    proptest! {
        #[test]
        fn round_trips(plaintext in ".{0,300}", org in "[a-f0-9]{24}", key in any::<[u8; 32]>()) {
            let v = Vault::new(&key, &[]);
            let b = Binding::new(&org, "byok:openai");
            let sealed = v.seal(&plaintext, &b);
            prop_assert_eq!(v.open(&sealed, &b).unwrap().0, plaintext);
        }
    }
}
