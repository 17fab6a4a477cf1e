//! What can go wrong loading or calling a plugin, as users should read it.

/// Why a plugin call ended in a trap, as users should read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrapCause {
    Memory { limit_mb: u64 },
    Timeout { limit_ms: u64 },
    StackOverflow,
    Panic { message: String },
    Exit { code: i32 },
    Other { message: String },
}

impl std::fmt::Display for TrapCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TrapCause::Memory { limit_mb } => write!(f, "exceeded its memory limit of {limit_mb} MiB"),
            TrapCause::Timeout { limit_ms } => write!(f, "exceeded its call timeout of {limit_ms} ms"),
            TrapCause::StackOverflow => f.write_str("overflowed its stack"),
            TrapCause::Panic { message } => write!(f, "panicked: {message}"),
            TrapCause::Exit { code } => write!(f, "called exit({code})"),
            TrapCause::Other { message } => write!(f, "trapped: {message}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("cannot read plugin {plugin}: {source}")]
    Read { plugin: String, source: std::io::Error },
    #[error(
        "plugin {plugin} is {size_mib:.1} MiB, over the {limit_mib} MiB limit for a component \
         (--max-component-mb or BIZON_HOST_MAX_COMPONENT_MB)"
    )]
    TooLarge {
        plugin: String,
        size_mib: f64,
        limit_mib: u64,
    },
    #[error("plugin {plugin} is not a valid WebAssembly component: {message}")]
    Compile { plugin: String, message: String },
    #[error("plugin {plugin} is not a bizon {kind}: it exports {exports}, not {wanted}")]
    NotAPlugin {
        plugin: String,
        kind: &'static str,
        exports: String,
        wanted: &'static str,
    },
    #[error(
        "plugin {plugin} was built for bizon:destination@{found}, which this host does not support: \
         it implements bizon:destination@{supported} (a plugin needs the same major version, and the same minor before 1.0)"
    )]
    Version {
        plugin: String,
        found: String,
        supported: String,
    },
    #[error(
        "plugin {plugin} imports interfaces a plugin cannot have: {}; plugins get only the WASI interfaces for \
         files, environment, clocks, randomness, sockets and HTTP",
        refused.join(", ")
    )]
    Imports { plugin: String, refused: Vec<String> },
    #[error("plugin {plugin} cannot be linked: {message}")]
    Link { plugin: String, message: String },
    #[error("plugin {plugin}: {message}")]
    Grant { plugin: String, message: String },
    #[error("plugin {plugin} refused its configuration (open): {message}")]
    Open { plugin: String, message: String },
    #[error("plugin {plugin} {cause} (in {function})")]
    Trap {
        plugin: String,
        function: &'static str,
        cause: TrapCause,
    },
    #[error("plugin {plugin}: {message}")]
    Budget { plugin: String, message: String },
    #[error("plugin {plugin}: {function} called on an instance that trapped before")]
    Poisoned { plugin: String, function: &'static str },
}
