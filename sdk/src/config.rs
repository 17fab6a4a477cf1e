use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::Error;

/// The pipeline's `plugin_config`, as the JSON object the host passed to `open`.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    value: Value,
}

impl Config {
    /// An empty string counts as `{}`, so a plugin never has to special-case
    /// "no config".
    pub fn from_json(json: &str) -> Result<Self, Error> {
        let value = if json.trim().is_empty() {
            Value::Object(Default::default())
        } else {
            serde_json::from_str(json).map_err(|e| Error::msg(format!("plugin_config: {e}")))?
        };
        Ok(Self { value })
    }

    /// Deserialize into the plugin's own config type; use `#[serde(default)]`
    /// for optional fields and `#[serde(deny_unknown_fields)]` to catch typos.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, Error> {
        T::deserialize(&self.value).map_err(|e| Error::msg(format!("plugin_config: {e}")))
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.value.get(key)
    }

    /// A string field, or `default` when absent; a field of another type is an
    /// error rather than silently ignored.
    pub fn str_or<'a>(&'a self, key: &str, default: &'a str) -> Result<&'a str, Error> {
        match self.value.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::String(s)) => Ok(s),
            Some(other) => Err(Error::msg(format!(
                "plugin_config: `{key}` must be a string, got {other}"
            ))),
        }
    }

    pub fn value(&self) -> &Value {
        &self.value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Typed {
        dir: String,
        #[serde(default)]
        limit: u32,
    }

    #[test]
    fn empty_config_is_an_empty_object() {
        let config = Config::from_json("").unwrap();
        assert_eq!(config.str_or("dir", "/out").unwrap(), "/out");
    }

    #[test]
    fn parses_into_a_typed_struct_and_reports_typos() {
        let config = Config::from_json(r#"{"dir": "/x"}"#).unwrap();
        let typed: Typed = config.parse().unwrap();
        assert_eq!(
            typed,
            Typed {
                dir: "/x".into(),
                limit: 0
            }
        );

        let typo = Config::from_json(r#"{"dri": "/x"}"#).unwrap();
        let err = typo.parse::<Typed>().unwrap_err();
        assert!(err.message().contains("unknown field `dri`"), "{err}");
    }

    #[test]
    fn wrong_type_and_bad_json_are_errors() {
        let config = Config::from_json(r#"{"dir": 3}"#).unwrap();
        assert!(config.str_or("dir", "/out").is_err());
        assert!(Config::from_json("{").is_err());
    }
}
