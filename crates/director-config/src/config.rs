//! [`Config`]: a parsed config file plus `-o` overrides.

use std::path::Path;
use std::sync::Arc;

use crate::defaults::{default_standalone_base_dir, DEFAULT_CONFIG};
use crate::error::{ConfigError, Location};
use crate::parser::{Parser, UnresolvedVariable};
use crate::tree::{Item, Section, Setting};

/// A parsed Dovecot-syntax configuration.
#[derive(Debug, Clone)]
pub struct Config {
    root: Section,
    warnings: Vec<String>,
    unresolved: Vec<UnresolvedVariable>,
}

impl Config {
    /// Reads and parses `path` (with its `!include`s).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let origin: Arc<str> = Arc::from(path.display().to_string());
        let mut parser = Parser::new(&origin);
        parser.parse_file(path, None)?;
        Ok(Self::from_parser(parser))
    }

    /// Parses config text. `origin_name` names it in errors; relative
    /// `!include` and `<file` paths resolve against its directory when it
    /// looks like a path, else against the current directory.
    pub fn parse_str(text: &str, origin_name: &str) -> Result<Config, ConfigError> {
        let origin: Arc<str> = Arc::from(origin_name);
        let base = Path::new(origin_name)
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        let mut parser = Parser::new(&origin);
        parser.parse_text(text, origin, &base)?;
        Ok(Self::from_parser(parser))
    }

    /// The embedded [`DEFAULT_CONFIG`] with `base_dir` and `state_dir` set to
    /// [`default_standalone_base_dir`].
    pub fn default_standalone() -> Result<Config, ConfigError> {
        let mut config = Self::parse_str(DEFAULT_CONFIG, "<builtin>")?;
        let base_dir = default_standalone_base_dir();
        config.apply_override(&format!("base_dir={}", base_dir.display()))?;
        config.apply_override(&format!("state_dir={}", base_dir.display()))?;
        Ok(config)
    }

    fn from_parser(parser: Parser) -> Self {
        let (root, notes) = parser.finish();
        Self {
            root,
            warnings: notes.warnings,
            unresolved: notes.unresolved,
        }
    }

    /// Applies one `-o key=value` override (as `doveadm -o` / `directord -o`
    /// take them), after parsing. The value is taken literally (no quotes,
    /// no `$` expansion). `key` may be a path into sections:
    /// `service/director/unix_listener/director-admin/mode=0666` (each
    /// `kind/name` pair selects the last matching section, creating it if
    /// missing).
    pub fn apply_override(&mut self, kv: &str) -> Result<(), ConfigError> {
        let Some((key, value)) = kv.split_once('=') else {
            return Err(ConfigError::general(format!(
                "-o parameter not in key=value format: {kv}"
            )));
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(ConfigError::general(format!(
                "-o parameter has an empty key: {kv}"
            )));
        }
        let location = Location::override_origin();
        let parts: Vec<&str> = key.split('/').collect();
        let (setting, path) = parts.split_last().unwrap_or((&key, &[]));
        if path.len() % 2 != 0 {
            return Err(ConfigError::general(format!(
                "-o key must be kind/name/.../setting: {key}"
            )));
        }
        let mut section = &mut self.root;
        for pair in path.chunks(2) {
            let (kind, name) = (pair[0], pair[1]);
            let pos = section
                .items
                .iter()
                .rposition(|i| matches!(i, Item::Section(s) if s.kind == kind && s.name.as_deref() == Some(name)));
            let idx = match pos {
                Some(idx) => idx,
                None => {
                    section.items.push(Item::Section(Section::new(
                        kind,
                        Some(name.to_owned()),
                        location.clone(),
                    )));
                    section.items.len() - 1
                }
            };
            // idx points at a Section (found or just pushed); the else arm
            // cannot happen but is handled without panicking.
            let Item::Section(next) = &mut section.items[idx] else {
                return Err(ConfigError::general(format!("-o {key}: not a section")));
            };
            section = next;
        }
        section.push_setting(Setting {
            key: (*setting).to_owned(),
            value: value.to_owned(),
            location,
        });
        Ok(())
    }

    /// The raw value of a top-level setting (last one wins), if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.root.get(key)
    }

    /// The top-level [`Setting`] (with its location), if set.
    pub fn get_setting(&self, key: &str) -> Option<&Setting> {
        self.root.get_setting(key)
    }

    /// The whole tree (root section has an empty kind).
    pub fn root(&self) -> &Section {
        &self.root
    }

    /// Non-fatal parse warnings (Dovecot's wording), for logging.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// `$name` words that could not be resolved (kept literally).
    pub fn unresolved_variables(&self) -> &[UnresolvedVariable] {
        &self.unresolved
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn override_paths() {
        let mut c = Config::parse_str("a = 1\nservice director {\n  x = 1\n}\n", "t.conf").unwrap();
        c.apply_override("a=2").unwrap();
        c.apply_override("service/director/x=3").unwrap();
        c.apply_override("service/imap/y=4").unwrap();
        assert_eq!(c.get("a"), Some("2"));
        let dir = c
            .root()
            .sections_named("service", Some("director"))
            .last()
            .unwrap();
        assert_eq!(dir.get("x"), Some("3"));
        assert!(c.apply_override("novalue").is_err());
        assert!(c.apply_override("service/x=1").is_err());
    }
}
