//! Authentication (JWT, `jsonwebtoken`) and authorization by persona and role.
//!
//! A token is a JWT signed with the configured algorithm only (HS256 with a
//! secret, RS256/ES256 with a PEM public key or a JWKS file); `exp` is
//! required, `nbf`/`iss`/`aud` are checked when present or configured.
//! Claims: `sub`, `personas` (a list, or `"*"`), `role` (`viewer`,
//! `publisher`, `admin`; each includes the ones before it).
//! `docs/security.md` describes the model.

use std::time::Duration;

use jsonwebtoken::{decode, decode_header, Validation};
use serde::{Deserialize, Serialize};

use crate::channel_name::ChannelId;
use crate::config::{AuthConfig, ConfigError, DecodingKeys, Grant, NamespaceConfig};

/// Defined with the config, which names roles too (`[[channels]].role`).
pub use crate::config::Role;

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
    /// `[[channels]]` channels granted (namespaces whose `grant` is
    /// `claim`): `<ns>:<id>`, `<ns>:*` or `*`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<String>,
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

    /// Whether the token grants `channel` of namespace `ns` for `role`
    /// (subscribing: the namespace's role; publishing: at least publisher).
    pub fn allows_channel(&self, ns: &NamespaceConfig, channel: &ChannelId, role: Role) -> bool {
        if self.role < role.max(ns.role) {
            return false;
        }
        match ns.grant {
            Grant::Role => true,
            Grant::Claim => self.channels.iter().any(|g| {
                g == "*"
                    || g == channel.as_str()
                    || g.strip_suffix(":*") == Some(channel.namespace())
            }),
        }
    }

    /// Whether the token may read the whole namespace `ns` (its analytics
    /// count every channel of it): the namespace's role and, for a `claim`
    /// namespace, a grant of `<ns>:*` or `*` (one channel is not enough).
    pub fn allows_namespace(&self, ns: &NamespaceConfig) -> bool {
        if self.role < ns.role {
            return false;
        }
        match ns.grant {
            Grant::Role => true,
            Grant::Claim => self
                .channels
                .iter()
                .any(|g| g == "*" || g.strip_suffix(":*") == Some(ns.name.as_str())),
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

/// Verifies tokens with the configured key and rules.
pub struct Authenticator {
    keys: DecodingKeys,
    validation: Validation,
    leeway: u64,
}

impl Authenticator {
    pub fn from_config(c: &AuthConfig) -> Result<Self, ConfigError> {
        let (alg, keys) = c.decoding_keys()?;
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
            DecodingKeys::One(k) => k,
            DecodingKeys::ByKid(map) => {
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
    from_header.or_else(|| crate::query::query_param(query, "token"))
}
