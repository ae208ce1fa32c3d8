//! Configuration: defaults, then rankd.toml, then `RANKD_*` environment variables; validated once.
