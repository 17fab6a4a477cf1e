//! The `logger` destination (filled in below).
crate::destination_config! {
    /// `destination: {name: logger, config: ...}`
    pub struct LoggerConfig {}
}
