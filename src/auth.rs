//! Authentication (JWT, `jsonwebtoken`) and authorization by persona and role.
//!
//! A token is a JWT signed with the configured algorithm only (HS256 with a
//! secret, RS256/ES256 with a PEM public key or a JWKS file); `exp` is
//! required, `nbf`/`iss`/`aud` are checked when present or configured.
//! Claims: `sub`, `personas` (a list, or `"*"`), `role` (`viewer`,
//! `publisher`, `admin`; each includes the ones before it).
//! `docs/security.md` describes the model.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

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
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.mode == AuthMode::Off {
            return Ok(());
        }
        Authenticator::from_config(self).map(|_| ())
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Publisher,
    Admin,
}

/// `personas`: `"*"` or a list of ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Personas {
    List(Vec<String>),
    Any(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    #[serde(default = "no_personas")]
    pub personas: Personas,
    pub role: Role,
    pub exp: u64,
}

fn no_personas() -> Personas {
    Personas::List(Vec::new())
}

impl Claims {
    pub fn allows_persona(&self, persona: &str) -> bool {
        match &self.personas {
            Personas::Any(s) => s == "*",
            Personas::List(l) => l.iter().any(|p| p == persona),
        }
    }

    /// At least `role` and, when given, granted `persona`.
    pub fn allows(&self, role: Role, persona: Option<&str>) -> bool {
        self.role >= role && persona.is_none_or(|p| self.allows_persona(p))
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("a bearer token is required")]
    Missing,
    #[error("token expired")]
    Expired,
    #[error("invalid token: {0}")]
    Invalid(String),
}

impl AuthError {
    /// The `error.code` sent and the metrics reason.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Missing => "missing_token",
            Self::Expired => "token_expired",
            Self::Invalid(_) => "invalid_token",
        }
    }
}

enum Keys {
    One(DecodingKey),
    ByKid(HashMap<String, DecodingKey>),
}

/// Verifies tokens with the configured key and rules.
pub struct Authenticator {
    keys: Keys,
    validation: Validation,
    leeway: u64,
}

impl Authenticator {
    pub fn from_config(c: &AuthConfig) -> Result<Self, ConfigError> {
        let alg = match c.algorithm.as_str() {
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
        let keys = match (alg, &c.secret, &c.public_key_file, &c.jwks_file) {
            (Algorithm::HS256, Some(secret), None, None) => {
                if secret.len() < 32 {
                    return Err(ConfigError::new("auth.secret", "must be at least 32 bytes"));
                }
                Keys::One(DecodingKey::from_secret(secret.as_bytes()))
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
                Keys::One(key)
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
                Keys::ByKid(by_kid)
            }
            _ => {
                return Err(ConfigError::new(
                    "auth.public_key_file",
                    "RS256/ES256 need exactly one of auth.public_key_file or auth.jwks_file",
                ))
            }
        };
        let mut validation = Validation::new(alg);
        validation.algorithms = vec![alg];
        validation.set_required_spec_claims(&["exp"]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.leeway = c.leeway.as_secs();
        match &c.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &c.issuer {
            validation.set_issuer(&[iss]);
        }
        Ok(Self {
            keys,
            validation,
            leeway: c.leeway.as_secs(),
        })
    }

    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        use jsonwebtoken::errors::ErrorKind;
        let key = match &self.keys {
            Keys::One(k) => k,
            Keys::ByKid(map) => {
                let header = decode_header(token).map_err(|e| AuthError::Invalid(e.to_string()))?;
                let kid = header
                    .kid
                    .ok_or_else(|| AuthError::Invalid("no kid".into()))?;
                map.get(&kid)
                    .ok_or_else(|| AuthError::Invalid("unknown kid".into()))?
            }
        };
        decode::<Claims>(token, key, &self.validation)
            .map(|d| d.claims)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                _ => AuthError::Invalid(e.to_string()),
            })
    }

    /// When a connection holding `claims` must close (exp plus the leeway).
    pub fn expires_in(&self, claims: &Claims) -> Duration {
        let now = jsonwebtoken::get_current_timestamp();
        Duration::from_secs((claims.exp + self.leeway).saturating_sub(now))
    }
}

/// The bearer token of a request: `Authorization: Bearer <t>`, else `?token=`.
pub fn bearer_token(headers: &hyper::HeaderMap, query: Option<&str>) -> Option<String> {
    let from_header = headers
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| token.trim().to_owned())
        });
    from_header.or_else(|| crate::http::query_param(query, "token"))
}
