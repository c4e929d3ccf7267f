//! `[auth]`: whether tokens are required, which algorithm and keys verify
//! them, and which browser origins may open WebSockets. The verifying itself
//! is `crate::auth`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::{Deserialize, Serialize};

use super::ConfigError;

/// The keys tokens are verified with.
pub enum DecodingKeys {
    /// The secret or the one public key.
    One(DecodingKey),
    /// A JWKS: the token's `kid` picks the key.
    ByKid(HashMap<String, DecodingKey>),
}

/// A token's `role`: each includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Publisher,
    Admin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// No credentials asked (the demo on loopback).
    Off,
    /// A JWT on every WebSocket and `/api/*` request.
    Jwt,
}

/// `[auth]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// `off` or `jwt`. Default: `off`.
    pub mode: AuthMode,
    /// `HS256`, `RS256` or `ES256`; tokens signed otherwise are refused. Default: `HS256`.
    pub algorithm: String,
    /// HS256 shared secret. Default: none.
    pub secret: Option<String>,
    /// RS256/ES256 public key, PEM. Default: none.
    pub public_key_file: Option<PathBuf>,
    /// RS256/ES256 keys as a JWKS file; the token's `kid` picks the key. Default: none.
    pub jwks_file: Option<PathBuf>,
    /// Required `iss`, when set. Default: none.
    pub issuer: Option<String>,
    /// Required `aud`, when set. Default: none.
    pub audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`. Default: 30s.
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    /// Browser origins allowed to open WebSockets (exact `scheme://host[:port]`).
    /// Empty: any. Requests without `Origin` (non-browser clients) pass. Default: empty.
    pub allowed_origins: Vec<String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            mode: AuthMode::Off,
            algorithm: "HS256".into(),
            secret: None,
            public_key_file: None,
            jwks_file: None,
            issuer: None,
            audience: None,
            leeway: Duration::from_secs(30),
            allowed_origins: Vec::new(),
        }
    }
}

impl AuthConfig {
    /// With `mode = "jwt"`, the key material must load: a bad key file is a
    /// configuration error found before anything binds.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.mode == AuthMode::Off {
            return Ok(());
        }
        self.decoding_keys().map(|_| ())
    }

    /// The one accepted algorithm and its keys, read from the configured
    /// secret or files.
    pub fn decoding_keys(&self) -> Result<(Algorithm, DecodingKeys), ConfigError> {
        let alg = match self.algorithm.as_str() {
            "HS256" => Algorithm::HS256,
            "RS256" => Algorithm::RS256,
            "ES256" => Algorithm::ES256,
            _ => {
                return Err(ConfigError::new(
                    "auth.algorithm",
                    "must be HS256, RS256 or ES256",
                ))
            }
        };
        let keys = match (alg, &self.secret, &self.public_key_file, &self.jwks_file) {
            (Algorithm::HS256, Some(secret), None, None) => {
                if secret.len() < 32 {
                    return Err(ConfigError::new("auth.secret", "must be at least 32 bytes"));
                }
                DecodingKeys::One(DecodingKey::from_secret(secret.as_bytes()))
            }
            (Algorithm::HS256, ..) => {
                return Err(ConfigError::new(
                    "auth.secret",
                    "HS256 needs auth.secret (and no key file)",
                ))
            }
            (_, None, Some(path), None) => {
                let pem = std::fs::read(path).map_err(|e| {
                    ConfigError::new("auth.public_key_file", format!("{}: {e}", path.display()))
                })?;
                let key = if alg == Algorithm::RS256 {
                    DecodingKey::from_rsa_pem(&pem)
                } else {
                    DecodingKey::from_ec_pem(&pem)
                }
                .map_err(|e| ConfigError::new("auth.public_key_file", e.to_string()))?;
                DecodingKeys::One(key)
            }
            (_, None, None, Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    ConfigError::new("auth.jwks_file", format!("{}: {e}", path.display()))
                })?;
                let set: JwkSet = serde_json::from_str(&text)
                    .map_err(|e| ConfigError::new("auth.jwks_file", e.to_string()))?;
                let mut by_kid = HashMap::new();
                for jwk in &set.keys {
                    let Some(kid) = jwk.common.key_id.clone() else {
                        return Err(ConfigError::new("auth.jwks_file", "every key needs a kid"));
                    };
                    let key = DecodingKey::from_jwk(jwk)
                        .map_err(|e| ConfigError::new("auth.jwks_file", e.to_string()))?;
                    by_kid.insert(kid, key);
                }
                DecodingKeys::ByKid(by_kid)
            }
            _ => {
                return Err(ConfigError::new(
                    "auth.public_key_file",
                    "RS256/ES256 need exactly one of auth.public_key_file or auth.jwks_file",
                ))
            }
        };
        Ok((alg, keys))
    }

    pub fn origin_allowed(&self, origin: Option<&str>) -> bool {
        match origin {
            None => true,
            Some(_) if self.allowed_origins.is_empty() => true,
            Some(o) => self
                .allowed_origins
                .iter()
                .any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(o)),
        }
    }
}
