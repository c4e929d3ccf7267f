//! Loading the layered config: defaults → file → `REDIS_URL`/`DATABASE_URL`
//! → `PULSEGATE_*` environment → command-line flags; and printing it safely.

use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::Serialize;

use super::{Config, ConfigError};

/// The default config file, read when it exists and no `--config` is given.
pub const DEFAULT_CONFIG_PATH: &str = "config/pulsegate.toml";

/// Sections of the config; `PULSEGATE_<SECTION>_<KEY>` maps to `<section>.<key>`.
const SECTIONS: &[&str] = &[
    "redis",
    "database",
    "log",
    "ws",
    "sse",
    "http",
    "shutdown",
    "ingest",
    "optimization",
    "audit",
    "limits",
    "auth",
    "runtime",
];

/// Values given on the command line; only those present override.
#[derive(Debug, Default, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<String>,
}

impl Overrides {
    fn into_figment(self, figment: Figment) -> Figment {
        let mut f = figment;
        if let Some(v) = self.listen {
            f = f.merge(Serialized::default("listen", v));
        }
        if let Some(v) = self.redis_url {
            f = f.merge(Serialized::default("redis.url", v));
        }
        if let Some(v) = self.database_url {
            f = f.merge(Serialized::default("database.url", v));
        }
        if let Some(v) = self.log_level {
            f = f.merge(Serialized::default("log.level", v));
        }
        if let Some(v) = self.log_format {
            f = f.merge(Serialized::default("log.format", v));
        }
        f
    }
}

/// Maps `PULSEGATE_REDIS_URL` → `redis.url`, `PULSEGATE_LISTEN` → `listen`.
fn pulsegate_env() -> Env {
    Env::prefixed("PULSEGATE_")
        .ignore(&[
            "CONFIG",
            "REDIS_SERVER",
            "PG_BIN",
            "HAPROXY",
            "PYTHON",
            "BIN",
        ])
        .map(|key| {
            let k = key.as_str().to_ascii_lowercase();
            for section in SECTIONS {
                if let Some(rest) = k.strip_prefix(section).and_then(|r| r.strip_prefix('_')) {
                    return format!("{section}.{rest}").into();
                }
            }
            k.into()
        })
}

impl Config {
    /// Loads the layered config. `path` is an explicit `--config`; without it
    /// the default file is read only if present.
    pub fn load(path: Option<&Path>, overrides: Overrides) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        match path {
            Some(p) if !p.exists() => {
                return Err(ConfigError::new(
                    "config",
                    format!("file {} does not exist", p.display()),
                ))
            }
            Some(p) => figment = figment.merge(Toml::file(p)),
            None => {
                let default = PathBuf::from(DEFAULT_CONFIG_PATH);
                if default.exists() {
                    figment = figment.merge(Toml::file(default));
                }
            }
        }
        figment = figment
            .merge(Env::raw().only(&["REDIS_URL"]).map(|_| "redis.url".into()))
            .merge(
                Env::raw()
                    .only(&["DATABASE_URL"])
                    .map(|_| "database.url".into()),
            )
            .merge(pulsegate_env());
        figment = overrides.into_figment(figment);
        let config: Config = figment.extract().map_err(from_figment)?;
        config.validate()?;
        Ok(config)
    }

    /// A copy safe to print: passwords in URLs replaced by `***`.
    pub fn redacted(&self) -> Self {
        let mut c = self.clone();
        c.redis.url = redact_url(&c.redis.url);
        c.database.url = c.database.url.as_deref().map(redact_url);
        c.auth.secret = c.auth.secret.as_ref().map(|_| "***".into());
        c
    }
}

pub(super) fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => raw.to_owned(),
    }
}

fn from_figment(e: figment::Error) -> ConfigError {
    let key = if e.path.is_empty() {
        "config".to_owned()
    } else {
        e.path.join(".")
    };
    ConfigError {
        key,
        message: e.kind.to_string(),
    }
}
