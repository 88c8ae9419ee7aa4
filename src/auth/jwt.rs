//! User tokens: HS256 JWTs with `iss`, `aud`, `exp`, `iat`, `jti` and the user id as `sub`.
//! The role and organization are deliberately not trusted from the token: they are read
//! from the store on every request.

use foldhash::HashMap;
use std::sync::{Arc, RwLock};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

pub const ISSUER: &str = "orgd";
pub const AUDIENCE: &str = "orgd-api";

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub iss: String,
    pub aud: String,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
}

pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl_secs: i64,
    /// Tokens whose signature and claims were verified, so a token seen again costs a map
    /// lookup instead of base64, HMAC and JSON. Only what the token itself proves is kept:
    /// expiry is checked on every use, and revocation (logout) and the user's current role
    /// are read from the store (the identity cache) on every request.
    verified: RwLock<HashMap<String, Arc<Claims>>>,
}

/// Verified tokens kept at most; the map starts over beyond it.
const MAX_VERIFIED: usize = 10_000;

#[derive(Debug, PartialEq, Eq)]
pub enum TokenError {
    Invalid,
    Expired,
}

impl JwtKeys {
    pub fn new(secret: &[u8], ttl_secs: i64) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        // Expiry is checked against the service's clock (see `verify`), which tests control.
        validation.validate_exp = false;
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            ttl_secs,
            verified: RwLock::new(HashMap::default()),
        }
    }

    /// Issues a token for `user_id`; returns it with its claims.
    pub fn issue(&self, user_id: &str, now_ms: i64) -> anyhow::Result<(String, Claims)> {
        let iat = now_ms / 1000;
        let claims = Claims {
            sub: user_id.to_string(),
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            iat,
            exp: iat + self.ttl_secs,
            jti: orgd_core::ids::random_hex(16),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)?;
        Ok((token, claims))
    }

    pub fn verify(&self, token: &str, now_ms: i64) -> Result<Arc<Claims>, TokenError> {
        let known = self
            .verified
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(token)
            .cloned();
        let claims = match known {
            Some(claims) => claims,
            None => {
                let claims = Arc::new(self.verify_signed(token)?);
                let mut verified = self.verified.write().unwrap_or_else(|p| p.into_inner());
                if verified.len() >= MAX_VERIFIED {
                    verified.clear();
                }
                verified.insert(token.to_string(), claims.clone());
                claims
            }
        };
        if claims.exp.saturating_mul(1000) <= now_ms {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }

    /// Signature, algorithm and claims (everything but expiry, which depends on the time).
    fn verify_signed(&self, token: &str) -> Result<Claims, TokenError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|_| TokenError::Invalid)?;
        if data.claims.jti.is_empty() || data.claims.jti.len() > 64 {
            return Err(TokenError::Invalid);
        }
        Ok(data.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_expiry_and_tampering() {
        let keys = JwtKeys::new(b"0123456789abcdef0123456789abcdef", 60);
        let (token, claims) = keys.issue("507f191e810c19729de860ea", 1_000_000).unwrap();
        let back = keys.verify(&token, 1_000_000).unwrap();
        assert_eq!(back.sub, claims.sub);
        assert_eq!(back.jti, claims.jti);
        // Verified once, the token still expires on time.
        assert_eq!(
            keys.verify(&token, 1_000_000 + 60_000).err(),
            Some(TokenError::Expired)
        );
        assert!(keys.verify(&token, 1_000_000 + 59_000).is_ok());
        // A token differing in one character of its signature is not the verified one.
        let at = token.rfind('.').unwrap() + 1;
        let first = if token.as_bytes()[at] == b'A' {
            "B"
        } else {
            "A"
        };
        let forged = format!("{}{first}{}", &token[..at], &token[at + 1..]);
        assert_eq!(
            keys.verify(&forged, 1_000_000).err(),
            Some(TokenError::Invalid)
        );
        let other = JwtKeys::new(b"another-secret-another-secret-xx", 60);
        assert_eq!(
            other.verify(&token, 1_000_000).err(),
            Some(TokenError::Invalid)
        );
        // alg "none": header {"alg":"none","typ":"JWT"} with the same payload and no signature.
        let payload = token.split('.').nth(1).unwrap();
        let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");
        assert_eq!(
            keys.verify(&none, 1_000_000).err(),
            Some(TokenError::Invalid)
        );
    }
}
