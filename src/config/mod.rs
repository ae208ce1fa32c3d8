//! Configuration: defaults, then a rankd.toml file, then `RANKD_*` environment variables, then flags;
//! validated once, so that a bad setting fails the start with a message naming it and its limit.
//!
//! Every setting is declared once, in src/config/settings.rs: [`Config`], the rankd.toml keys, the
//! variables, the flags ([`crate::cli::SettingFlags`]) and the README's table come from there.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::Invalid;

#[macro_use]
mod declare;
mod kinds;
mod settings;

pub use declare::{FlagIn, Setting};
use settings::FileConfig;
pub use settings::{Config, SETTINGS};

/// What an API key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Read ranks and statistics.
    Read,
    /// Submit scores, remove members, set display data.
    Write,
    /// Define and delete boards (implies read and write).
    Admin,
}

impl Role {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "read" => Some(Role::Read),
            "write" => Some(Role::Write),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// One API key and its roles.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// The secret clients send as `Authorization: Bearer <key>`.
    pub key: String,
    /// What it may do.
    pub roles: Vec<Role>,
}

impl std::fmt::Debug for ApiKey {
    // Keys are secrets: never printed, not even in debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKey")
            .field("key", &"<redacted>")
            .field("roles", &self.roles)
            .finish()
    }
}

impl ApiKey {
    /// Whether this key grants `role` (admin grants everything).
    pub fn grants(&self, role: Role) -> bool {
        self.roles.contains(&role) || self.roles.contains(&Role::Admin)
    }

    /// Parses `KEY:ROLES,KEY:ROLES`, roles joined by `+` from read, write, admin.
    ///
    /// # Errors
    /// [`Invalid`] naming `api_keys` and the entry at fault (by position, never by its secret).
    pub fn parse_list(s: &str) -> Result<Vec<ApiKey>, Invalid> {
        let mut out: Vec<ApiKey> = Vec::new();
        for (i, entry) in s
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .enumerate()
        {
            let field = format!("api_keys[{i}]");
            let Some((key, roles)) = entry.rsplit_once(':') else {
                return Err(Invalid::new(field, "must be KEY:ROLES, e.g. k1:read+write"));
            };
            // A key travels in an HTTP header: outside visible ASCII it could never be sent, and
            // would fail every request with 401 rather than the start with this message.
            if key.is_empty() || !key.chars().all(|c| c.is_ascii_graphic()) {
                return Err(Invalid::new(
                    field,
                    "the key must be non-empty, of visible ASCII characters (no white space)",
                ));
            }
            let roles = roles
                .split('+')
                .map(|r| {
                    Role::parse(r.trim()).ok_or_else(|| {
                        Invalid::new(
                            field.clone(),
                            format!(
                                "unknown role {r:?} (expected read, write or admin, joined by +)"
                            ),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            if out.iter().any(|k| k.key == key) {
                return Err(Invalid::new(field, "the same key is listed twice"));
            }
            out.push(ApiKey {
                key: key.to_owned(),
                roles,
            });
        }
        Ok(out)
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Raw settings from one layer, all strings, before parsing.
pub type Layer = Vec<(&'static str, String)>;

impl Config {
    /// Loads defaults, then `file` (or ./rankd.toml when it exists), then `RANKD_*` variables from
    /// `env`, then `overrides` (command-line flags).
    ///
    /// # Errors
    /// [`Invalid`] naming the setting at fault.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: Layer,
    ) -> Result<Self, Invalid> {
        let mut layers: Vec<Layer> = Vec::new();
        let default_file = PathBuf::from("rankd.toml");
        let path = file.or_else(|| default_file.exists().then_some(default_file.as_path()));
        if let Some(path) = path {
            layers.push(Self::file_layer(path)?);
        }
        let env: Vec<(String, String)> = env.into_iter().collect();
        let mut env_layer = Layer::new();
        for setting in SETTINGS {
            let var = setting.env_var();
            if let Some((_, v)) = env.iter().find(|(k, _)| *k == var) {
                env_layer.push((setting.name, v.clone()));
            }
        }
        layers.push(env_layer);
        layers.push(overrides);
        let mut c = Config::default();
        for layer in layers {
            for (name, value) in layer {
                c.set(name, &value)?;
            }
        }
        c.validate()?;
        Ok(c)
    }

    fn file_layer(path: &Path) -> Result<Layer, Invalid> {
        let field = || format!("config file {}", path.display());
        let text =
            std::fs::read_to_string(path).map_err(|e| Invalid::new(field(), e.to_string()))?;
        let f: FileConfig =
            toml::from_str(&text).map_err(|e| Invalid::new(field(), e.to_string()))?;
        Ok(f.layer())
    }

    /// Checks settings that depend on each other.
    ///
    /// # Errors
    /// [`Invalid`] naming `listen` when no API key is configured and the address is not loopback;
    /// naming `redis_ca_file` when it is set and `redis_url` is not a TLS URL (that CA would
    /// protect nothing).
    pub fn validate(&self) -> Result<(), Invalid> {
        if let Some(path) = &self.redis_ca_file {
            if !self
                .redis_url
                .as_deref()
                .is_some_and(crate::backend::redis::is_tls_url)
            {
                return Err(Invalid::new(
                    "redis_ca_file",
                    format!(
                        "is set ({}) but redis_url does not connect over TLS: use rediss:// or \
                         rediss-cluster://",
                        path.display()
                    ),
                ));
            }
        }
        if self.api_keys.is_empty() && !self.listen.ip().is_loopback() {
            return Err(Invalid::new(
                "listen",
                format!(
                    "{} is not a loopback address and no API key is configured: set RANKD_API_KEYS \
                     (e.g. RANKD_API_KEYS=\"$(openssl rand -hex 16):admin\") or api_keys in rankd.toml, \
                     or listen on 127.0.0.1",
                    self.listen
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn api_keys_parse_roles_and_admin_implies_the_others() {
        let keys = ApiKey::parse_list("k1:read,k2:read+write,k3:admin").unwrap();
        assert_eq!(keys.len(), 3);
        assert!(keys[0].grants(Role::Read) && !keys[0].grants(Role::Write));
        assert!(keys[1].grants(Role::Write) && !keys[1].grants(Role::Admin));
        assert!(keys[2].grants(Role::Read) && keys[2].grants(Role::Write));
        assert_eq!(
            ApiKey::parse_list("k1:root").unwrap_err().field,
            "api_keys[0]"
        );
        assert!(ApiKey::parse_list("k1").is_err());
        let e = ApiKey::parse_list("ok:read,clé:read").unwrap_err();
        assert_eq!(e.field, "api_keys[1]");
        assert!(e.message.contains("ASCII"), "{e}");
        assert!(
            !e.message.contains("clé"),
            "the key stays out of the message"
        );
        assert!(
            !format!("{:?}", keys[0]).contains("k1"),
            "keys never reach debug output"
        );
    }

    #[test]
    fn environment_overrides_the_file_and_flags_override_the_environment() {
        let dir = std::env::temp_dir().join(format!("rankd-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("rankd.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9000\"\nkey_prefix = \"file:\"\npublic_reads = true\n",
        )
        .unwrap();
        let c = Config::load(Some(&file), env(&[("RANKD_KEY_PREFIX", "env:")]), vec![]).unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.key_prefix, "env:");
        assert!(c.public_reads);
        let c = Config::load(
            Some(&file),
            env(&[]),
            vec![("listen", "127.0.0.1:0".into())],
        )
        .unwrap();
        assert_eq!(c.listen.port(), 0);
        std::fs::write(&file, "colour = \"red\"\n").unwrap();
        assert!(Config::load(Some(&file), env(&[]), vec![]).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn without_keys_only_loopback_is_allowed_and_the_error_says_how_to_add_keys() {
        let e = Config::load(None, env(&[("RANKD_LISTEN", "0.0.0.0:8080")]), vec![]).unwrap_err();
        assert_eq!(e.field, "listen");
        assert!(e.message.contains("RANKD_API_KEYS"), "{e}");
        let ok = Config::load(
            None,
            env(&[
                ("RANKD_LISTEN", "0.0.0.0:8080"),
                ("RANKD_API_KEYS", "secret:admin"),
            ]),
            vec![],
        );
        assert!(ok.is_ok());
    }

    #[test]
    fn bad_values_name_the_setting_and_the_limit() {
        let e = Config::load(None, env(&[("RANKD_MAX_BODY_BYTES", "10")]), vec![]).unwrap_err();
        assert_eq!(e.field, "max_body_bytes");
        assert!(e.message.contains("1024"), "{e}");
        assert_eq!(
            Config::load(None, env(&[("RANKD_LOG_FORMAT", "xml")]), vec![])
                .unwrap_err()
                .field,
            "log_format"
        );
        assert_eq!(
            Config::load(None, env(&[("RANKD_REDIS_URL", "http://x")]), vec![])
                .unwrap_err()
                .field,
            "redis_url"
        );
        let e = Config::load(None, env(&[("RANKD_REDIS_TIMEOUT_MS", "10")]), vec![]).unwrap_err();
        assert_eq!(e.field, "redis_timeout_ms");
        assert!(e.message.contains("from 50 to 600000"), "{e}");
        let c = Config::load(None, env(&[("RANKD_REDIS_TIMEOUT_MS", "250")]), vec![]).unwrap();
        assert_eq!(c.redis_timeout, Duration::from_millis(250));
    }

    #[test]
    fn redis_urls_take_tls_and_a_ca_file_only_with_tls() {
        for url in [
            "redis://127.0.0.1:6379/0",
            "rediss://redis.internal:6380",
            "redis-cluster://10.0.0.1:7000?node=10.0.0.2:7000",
            "rediss-cluster://u:p@10.0.0.1:7000?node=10.0.0.2:7000",
        ] {
            let c = Config::load(None, env(&[("RANKD_REDIS_URL", url)]), vec![]).unwrap();
            assert_eq!(c.redis_url.as_deref(), Some(url));
        }
        let e =
            Config::load(None, env(&[("RANKD_REDIS_URL", "redis+tls://x")]), vec![]).unwrap_err();
        assert_eq!(e.field, "redis_url");
        assert!(e.message.contains("rediss://"), "{e}");
        let ca = ("RANKD_REDIS_CA_FILE", "/etc/rankd/redis-ca.pem");
        let c = Config::load(
            None,
            env(&[("RANKD_REDIS_URL", "rediss://redis.internal:6380"), ca]),
            vec![],
        )
        .unwrap();
        assert_eq!(
            c.redis_ca_file.as_deref(),
            Some(Path::new("/etc/rankd/redis-ca.pem"))
        );
        // A CA file beside a plain URL (or none) would protect nothing: refused, not ignored.
        for url in [
            "redis://redis.internal:6379",
            "redis-cluster://10.0.0.1:7000",
            "",
        ] {
            let e = Config::load(None, env(&[("RANKD_REDIS_URL", url), ca]), vec![]).unwrap_err();
            assert_eq!(e.field, "redis_ca_file", "{url}");
            assert!(e.message.contains("rediss://"), "{e}");
        }
    }

    #[test]
    fn database_urls_take_every_form_libpq_takes() {
        for url in [
            "postgres://rankd:secret@db.internal:5432/rankd",
            "postgresql://db.internal/rankd?sslmode=require",
            "postgres:///rankd?host=/var/run/postgresql&user=root",
            "postgres://%2Fvar%2Frun%2Fpostgresql/rankd",
            "postgres://127.0.0.1:5432/rankd",
            "postgres:///rankd?host=db.internal&port=6432&user=rankd&password=secret&sslmode=verify-full",
        ] {
            let c = Config::load(None, env(&[("RANKD_DATABASE_URL", url)]), vec![]);
            assert_eq!(
                c.map(|c| c.database_url).unwrap(),
                Some(url.to_owned()),
                "{url}"
            );
        }
        for url in [
            "mysql://x/y",
            "postgres://x/y?sslmode=sometimes",
            "postgres://x:notaport/y",
        ] {
            let e = Config::load(None, env(&[("RANKD_DATABASE_URL", url)]), vec![]).unwrap_err();
            assert_eq!(e.field, "database_url", "{url}");
        }
    }

    #[test]
    fn every_setting_takes_its_default_and_its_limits_and_names_both_when_broken() {
        let mut c = Config::default();
        for s in SETTINGS {
            c.set(s.name, s.default)
                .unwrap_or_else(|e| panic!("the default of {e}"));
            let Some((lo, hi)) = s.range else { continue };
            for n in [lo, hi] {
                c.set(s.name, &n.to_string())
                    .unwrap_or_else(|e| panic!("the limit of {e}"));
            }
            for n in [lo.checked_sub(1), hi.checked_add(1)].into_iter().flatten() {
                let e = c.set(s.name, &n.to_string()).unwrap_err();
                assert_eq!(e.field, s.name);
                assert!(e.message.contains(&format!("from {lo} to {hi}")), "{e}");
            }
        }
        let e = c.set("colour", "red").unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.message.as_str()),
            ("colour", "is not a rankd setting")
        );
    }

    #[test]
    fn an_empty_switch_is_its_default() {
        let mut c = Config::default();
        c.set("metrics_boards", "false").unwrap();
        c.set("metrics_boards", "").unwrap();
        assert!(c.metrics_boards);
        c.set("public_reads", "yes").unwrap();
        c.set("public_reads", " ").unwrap();
        assert!(!c.public_reads);
    }

    #[test]
    fn every_default_written_in_the_environment_or_in_rankd_toml_loads_as_the_defaults() {
        let defaults = format!("{:?}", Config::default());
        let env: Vec<(String, String)> = SETTINGS
            .iter()
            .map(|s| (s.env_var(), s.default.to_owned()))
            .collect();
        let from_env = Config::load(None, env, vec![]).unwrap();
        assert_eq!(format!("{from_env:?}"), defaults);
        // A number is a TOML integer, a switch a boolean, everything else a string.
        let toml: String = SETTINGS
            .iter()
            .map(|s| match (s.range, s.switch) {
                (Some(_), _) | (_, true) => format!("{} = {}\n", s.name, s.default),
                _ => format!("{} = {:?}\n", s.name, s.default),
            })
            .collect();
        let file: FileConfig = toml::from_str(&toml).unwrap_or_else(|e| panic!("{e}\n{toml}"));
        let mut from_file = Config::default();
        for (name, value) in file.layer() {
            from_file.set(name, &value).unwrap();
        }
        assert_eq!(format!("{from_file:?}"), defaults);
    }
}
