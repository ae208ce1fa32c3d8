//! How a setting is declared: the `settings!` macro turns the one table of src/config/settings.rs
//! into [`Config`](super::Config) and its defaults, the rankd.toml keys, the `RANKD_*` variables,
//! the parsing and checking of every value, and the [`Setting`] list that flags and the README's
//! table are made from.

/// The commands whose flags may set a setting; each setting names its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagIn {
    /// `rankd serve`.
    Serve,
    /// `rankd admin` and its subcommands.
    Admin,
}

impl FlagIn {
    /// The subcommand's name on the command line.
    pub fn command(self) -> &'static str {
        match self {
            FlagIn::Serve => "serve",
            FlagIn::Admin => "admin",
        }
    }

    /// The command named `command`, if its flags may set settings.
    pub fn of(command: &str) -> Option<Self> {
        [FlagIn::Serve, FlagIn::Admin]
            .into_iter()
            .find(|f| f.command() == command)
    }
}

/// One setting, as declared: what the environment, rankd.toml, flags and docs need to know of it.
#[derive(Debug)]
pub struct Setting {
    /// Its name: the rankd.toml key, and in upper case after `RANKD_` its environment variable.
    pub name: &'static str,
    /// Its default, in the string form a variable or flag gives; empty for none.
    pub default: &'static str,
    /// What it does, in Markdown: the lines of its doc comment, an empty line between paragraphs.
    pub doc: &'static [&'static str],
    /// The commands that take a flag for it.
    pub flags: &'static [FlagIn],
    /// A true-or-false switch: its flag alone means true, and an empty value means its default.
    pub switch: bool,
    /// The smallest and largest value, for a number.
    pub range: Option<(u64, u64)>,
    /// The values it takes, in Markdown.
    pub(super) values: fn() -> String,
}

impl Setting {
    /// Its environment variable: `RANKD_` and its name in upper case.
    pub fn env_var(&self) -> String {
        format!("RANKD_{}", self.name.to_ascii_uppercase())
    }

    /// Its long flag, without the leading `--`: its name with dashes.
    pub fn flag(&self) -> String {
        self.name.replace('_', "-")
    }

    /// The values it takes, in Markdown (for example `1–3600`, `` `text` or `json` ``).
    pub fn values(&self) -> String {
        (self.values)()
    }

    /// What it does, in Markdown: each paragraph of its doc comment on one line.
    pub fn paragraphs(&self) -> Vec<String> {
        let mut paragraphs = vec![String::new()];
        for line in self.doc.iter().map(|l| l.trim()) {
            let last = paragraphs.last_mut().expect("never empty");
            if line.is_empty() {
                if !last.is_empty() {
                    paragraphs.push(String::new());
                }
            } else {
                if !last.is_empty() {
                    last.push(' ');
                }
                last.push_str(line);
            }
        }
        paragraphs.retain(|p| !p.is_empty());
        paragraphs
    }

    /// What it does, in Markdown, on one line.
    pub fn help(&self) -> String {
        self.paragraphs().join(" ")
    }
}

/// Declares the settings: each one a doc comment (what it does, in Markdown: the README's and
/// `--help`'s words), then
///
/// ```text
/// name => field: Type = "default", Kind, flag(Serve, Admin);
/// ```
///
/// `name` is the rankd.toml key and, upper-cased after `RANKD_`, the environment variable; `field`
/// its [`Config`](super::Config) field, left out when it is `name` too (`name: Type = …`); the
/// default is the string form a variable would give (empty for none); the kind
/// ([`kinds`](super::kinds)) reads and checks the value; `flag(…)` lists the commands with a flag
/// for it, and is left out when none has one.
///
/// It generates `Config`, its `Default` and `set`, `SETTINGS`, and the rankd.toml `FileConfig`.
/// Each setting is one step of the macro's recursion: past about 120 settings, raise
/// `recursion_limit`.
macro_rules! settings {
    // Every setting read: generate.
    (@rows [$(
        [[$($doc:literal)*] $name:ident $field:ident [$ty:ty] $default:literal [$kind:ty]
         [$($flag:ident)*]]
    )*]) => {
        /// Everything `rankd serve` and `rankd admin` need: a field per setting of [`SETTINGS`].
        #[derive(Debug, Clone)]
        pub struct Config {
            $(
                $(#[doc = $doc])*
                #[doc = ""]
                #[doc = concat!("The setting `", stringify!($name), "` (see [`SETTINGS`]).")]
                pub $field: $ty,
            )*
        }

        impl Default for Config {
            /// Every setting's declared default.
            fn default() -> Self {
                Self {
                    $($field: $crate::config::kinds::read::<$kind, $ty>(
                        stringify!($name),
                        $default,
                        $default,
                    )
                    .unwrap_or_else(|e| panic!("the default of {e}")),)*
                }
            }
        }

        impl Config {
            /// Sets one setting from its string form.
            ///
            /// # Errors
            /// [`Invalid`](crate::error::Invalid) naming the setting and the limit its value
            /// breaks, or that no setting has this name.
            pub fn set(&mut self, name: &str, value: &str) -> Result<(), $crate::error::Invalid> {
                match name {
                    $(stringify!($name) => {
                        self.$field = $crate::config::kinds::read::<$kind, $ty>(
                            stringify!($name),
                            value,
                            $default,
                        )?;
                    })*
                    _ => {
                        return Err($crate::error::Invalid::new(name, "is not a rankd setting"))
                    }
                }
                Ok(())
            }
        }

        /// Every setting, in the order of their declaration.
        pub static SETTINGS: &[$crate::config::Setting] = &[$(
            $crate::config::Setting {
                name: stringify!($name),
                default: $default,
                doc: &[$($doc),*],
                flags: &[$($crate::config::FlagIn::$flag),*],
                switch: <$kind as $crate::config::kinds::Kind<$ty>>::SWITCH,
                range: <$kind as $crate::config::kinds::Kind<$ty>>::RANGE,
                values: <$kind as $crate::config::kinds::Kind<$ty>>::values,
            },
        )*];

        /// The settings a rankd.toml file may hold, each of its kind's TOML type.
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        pub(super) struct FileConfig {
            $($name: Option<<$kind as $crate::config::kinds::Kind<$ty>>::Toml>,)*
        }

        impl FileConfig {
            /// The settings the file holds, in their string form.
            pub(super) fn layer(self) -> $crate::config::Layer {
                let mut layer = $crate::config::Layer::new();
                $(if let Some(v) = self.$name {
                    layer.push((stringify!($name), v.to_string()));
                })*
                layer
            }
        }
    };
    // `name => field: …`: a setting with a field of another name.
    (@rows [$($rows:tt)*]
        $(#[doc = $doc:literal])*
        $name:ident => $field:ident : $ty:ty = $default:literal, $kind:ty
            $(, flag($($flag:ident),+))?;
        $($rest:tt)*
    ) => {
        settings!(@rows [$($rows)*
            [[$($doc)*] $name $field [$ty] $default [$kind] [$($($flag)+)?]]
        ] $($rest)*);
    };
    // `name: …`: a setting whose field has its name.
    (@rows [$($rows:tt)*]
        $(#[doc = $doc:literal])*
        $name:ident : $ty:ty = $default:literal, $kind:ty $(, flag($($flag:ident),+))?;
        $($rest:tt)*
    ) => {
        settings!(@rows [$($rows)*
            [[$($doc)*] $name $name [$ty] $default [$kind] [$($($flag)+)?]]
        ] $($rest)*);
    };
    (@rows $($bad:tt)*) => {
        compile_error!(
            "a setting reads: /// doc, then `name => field: Type = \"default\", Kind, flag(Serve);`"
        );
    };
    ($($settings:tt)*) => {
        settings!(@rows [] $($settings)*);
    };
}
