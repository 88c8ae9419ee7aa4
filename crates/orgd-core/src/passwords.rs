//! Passwords: the original's policy, Argon2id hashing on the blocking pool behind a semaphore
//! sized to the cores (a burst of logins cannot exhaust memory or starve the runtime).

use std::sync::Arc;

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use tokio::sync::{OnceCell, Semaphore};

const SPECIALS: &str = "!@#$%^&*(),.?\":{}|<>";

/// The original's rules (reference §7.6), messages in its order. Empty means acceptable.
pub fn policy_violations(password: &str) -> Vec<&'static str> {
    if password.is_empty() {
        return vec!["Password is required"];
    }
    let len = password.chars().count();
    let mut problems = Vec::new();
    if len < 8 {
        problems.push("Password must be at least 8 characters long");
    }
    if len > 128 {
        problems.push("Password cannot exceed 128 characters");
    }
    if !password.chars().any(|c| c.is_ascii_lowercase()) {
        problems.push("Password must contain at least one lowercase letter (a-z)");
    }
    if !password.chars().any(|c| c.is_ascii_uppercase()) {
        problems.push("Password must contain at least one uppercase letter (A-Z)");
    }
    if !password.chars().any(|c| c.is_ascii_digit()) {
        problems.push("Password must contain at least one number (0-9)");
    }
    if !password.chars().any(|c| SPECIALS.contains(c)) {
        problems
            .push("Password must contain at least one special character (!@#$%^&*(),.?\":{}|<>)");
    }
    problems
}

pub struct PasswordHasherPool {
    permits: Arc<Semaphore>,
    /// Hash verified against when the email is unknown, so timing does not reveal accounts.
    decoy: OnceCell<String>,
}

impl Default for PasswordHasherPool {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            permits: Arc::new(Semaphore::new(cores)),
            decoy: OnceCell::new(),
        }
    }
}

impl PasswordHasherPool {
    pub async fn hash(&self, password: String) -> anyhow::Result<String> {
        self.run(move || {
            Argon2::default()
                .hash_password(password.as_bytes())
                .map(|h| h.to_string())
                .map_err(|e| anyhow::anyhow!("argon2 hash failed: {e}"))
        })
        .await?
    }

    pub async fn verify(&self, password: String, hash: String) -> anyhow::Result<bool> {
        self.run(move || {
            let parsed = PasswordHash::new(&hash)
                .map_err(|e| anyhow::anyhow!("stored password hash unreadable: {e}"))?;
            Ok(Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok())
        })
        .await?
    }

    /// Spends the same work as a real verification and always fails.
    pub async fn verify_decoy(&self, password: String) -> anyhow::Result<bool> {
        let decoy = self
            .decoy
            .get_or_try_init(|| self.hash(crate::ids::random_hex(16)))
            .await?
            .clone();
        self.verify(password, decoy).await.map(|_| false)
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> anyhow::Result<T> {
        let _permit = self.permits.acquire().await?;
        Ok(tokio::task::spawn_blocking(work).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_matches_the_original() {
        assert!(policy_violations("Str0ng!pass").is_empty());
        assert_eq!(policy_violations(""), vec!["Password is required"]);
        assert_eq!(
            policy_violations("short"),
            vec![
                "Password must be at least 8 characters long",
                "Password must contain at least one uppercase letter (A-Z)",
                "Password must contain at least one number (0-9)",
                "Password must contain at least one special character (!@#$%^&*(),.?\":{}|<>)",
            ]
        );
        assert_eq!(
            policy_violations(&format!("Aa1!{}", "x".repeat(125))),
            vec!["Password cannot exceed 128 characters"]
        );
    }

    #[tokio::test]
    async fn hashes_verify() {
        let pool = PasswordHasherPool::default();
        let hash = pool.hash("Str0ng!pass".into()).await.unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(
            pool.verify("Str0ng!pass".into(), hash.clone())
                .await
                .unwrap()
        );
        assert!(!pool.verify("wrong".into(), hash).await.unwrap());
        assert!(!pool.verify_decoy("anything".into()).await.unwrap());
    }
}
