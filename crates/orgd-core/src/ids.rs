//! Ids are 24 lowercase hex characters laid out like a MongoDB ObjectId: 4 bytes of Unix
//! seconds, 5 random bytes chosen once per process, 3 bytes of a counter. They sort by
//! creation time and never collide within a process.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

static PROCESS_RANDOM: OnceLock<[u8; 5]> = OnceLock::new();
static COUNTER: OnceLock<AtomicU32> = OnceLock::new();

pub fn new_id(now_ms: i64) -> String {
    let random = PROCESS_RANDOM.get_or_init(rand::random);
    let counter = COUNTER
        .get_or_init(|| AtomicU32::new(rand::random::<u32>() & 0x00ff_ffff))
        .fetch_add(1, Ordering::Relaxed)
        & 0x00ff_ffff;
    let secs = (now_ms.max(0) / 1000) as u32;
    let mut bytes = [0u8; 12];
    bytes[..4].copy_from_slice(&secs.to_be_bytes());
    bytes[4..9].copy_from_slice(random);
    bytes[9..].copy_from_slice(&counter.to_be_bytes()[1..]);
    hex::encode(bytes)
}

/// True for a well-formed id: exactly 24 lowercase hex characters.
pub fn is_valid(id: &str) -> bool {
    id.len() == 24
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Random bytes as lowercase hex, for tokens, secrets and request ids (one per request, so
/// the bytes are drawn in one call).
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::fill(buf.as_mut_slice());
    hex::encode(buf)
}

/// SHA-256 of `secret` as lowercase hex: how invitation tokens and API keys are stored.
/// A plain digest is enough: the secrets are 256 random bits, not guessable passwords.
pub fn sha256_hex(secret: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(secret.as_bytes()))
}

/// lower-case; runs of anything but `a-z0-9` become `-`; trimmed of `-`; `org` if empty.
pub fn slugify(name: &str) -> String {
    let mut slug = String::with_capacity(name.len());
    for c in name.to_lowercase().chars() {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            slug.push(c);
        } else if !slug.ends_with('-') {
            slug.push('-');
        }
    }
    let slug = slug.trim_matches('-');
    if slug.is_empty() {
        "org".into()
    } else {
        slug.to_string()
    }
}

/// Creates an organization with a unique slug and its first user, atomically.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        assert_eq!(slugify("Acme Corp!"), "acme-corp");
        assert_eq!(slugify("  --Hello__World--  "), "hello-world");
        assert_eq!(slugify("!!!"), "org");
        assert_eq!(slugify("Ünïcode Team 2"), "n-code-team-2");
    }

    #[test]
    fn ids_are_valid_unique_and_time_ordered() {
        let a = new_id(1_700_000_000_000);
        let b = new_id(1_700_000_000_000);
        let c = new_id(1_800_000_000_000);
        assert!(is_valid(&a) && is_valid(&b) && is_valid(&c));
        assert_ne!(a, b);
        assert!(c > a);
        assert!(!is_valid("507F191E810C19729DE860EA"));
        assert!(!is_valid("507f191e810c19729de860e"));
    }

    #[test]
    fn sha256_is_lowercase_hex() {
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
