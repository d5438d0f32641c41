//! Dovecot 2.3 config syntax → [`Section`] tree.
//!
//! Rules (checked against the real `doveconf` 2.3.19.1; see the tests):
//! * leading/trailing blanks (space, TAB) are ignored; a line starting with
//!   `#` is a comment; elsewhere `#` starts a comment unless inside quotes
//!   (a `#` not preceded by a blank also does, with Dovecot's "Ambiguous '#'"
//!   warning);
//! * a line ending in `\` continues on the next line; the parts are joined
//!   with one space;
//! * `key = value`, `key=value`; a value wholly in `"..."` or `'...'` is
//!   unquoted and backslash-unescaped (`\x` → `x`), and not `$`-expanded;
//! * an unquoted value containing `$` is split on spaces, each word starting
//!   with `$` is replaced by that setting's current value (earlier top-level
//!   setting, else Dovecot's default), and the words are re-joined with one
//!   space (so `a  $x` becomes `a X`), exactly like `doveconf -x`;
//! * `key = <path` is replaced by the contents of the file, verbatim
//!   (Dovecot keeps a trailing newline), the path relative to the including
//!   file's directory;
//! * `kind [name] {` opens a section (name may be quoted), `}` closes it;
//!   Dovecot's errors `Expecting '{'`, `Garbage after '{'`, `Unexpected '}'`,
//!   `Missing '}'`;
//! * `!include PATH` / `!include_try PATH` (globs, relative to the including
//!   file's directory, sorted; `!include` with nothing matching is the error
//!   `No matches`).
//!
//! Hard limits: [`MAX_INCLUDE_DEPTH`], [`MAX_FILE_SIZE`], [`MAX_LINE_LEN`],
//! [`MAX_SECTION_DEPTH`], [`MAX_INCLUDED_FILES`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::defaults::dovecot_default;
use crate::error::{ConfigError, Location};
use crate::tree::{Item, Section, Setting};

/// Deepest `!include` nesting accepted (Dovecot has no documented limit; a
/// loop is also reported as recursive).
pub const MAX_INCLUDE_DEPTH: usize = 16;
/// Largest config file (or `<file` value) read, in bytes.
pub const MAX_FILE_SIZE: u64 = 16 * 1024 * 1024;
/// Longest logical line (continuations joined), in bytes.
pub const MAX_LINE_LEN: usize = 64 * 1024;
/// Deepest section nesting.
pub const MAX_SECTION_DEPTH: usize = 32;
/// Most files read by one parse (globs can match many).
pub const MAX_INCLUDED_FILES: usize = 4096;

/// A `$name` that matched neither an earlier setting nor a Dovecot default.
/// Dovecot refuses such a config (`Unknown variable: $name`); we keep the
/// literal text and report it, and [`crate::DirectorSettings`] turns it into
/// an error when the value is one we interpret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnresolvedVariable {
    /// The line with the variable.
    pub location: Location,
    /// The setting whose value contains it.
    pub key: String,
    /// The word as written, e.g. `$foo`.
    pub word: String,
}

/// What a parse produced besides the tree.
#[derive(Debug, Default)]
pub(crate) struct ParseNotes {
    pub warnings: Vec<String>,
    pub unresolved: Vec<UnresolvedVariable>,
}

/// A line after comment/continuation handling, classified.
#[derive(Debug, PartialEq, Eq)]
enum LineKind<'a> {
    KeyValue {
        key: &'a str,
        value: String,
        expand: bool,
    },
    KeyFile {
        key: &'a str,
        path: &'a str,
    },
    Include {
        path: &'a str,
        must_exist: bool,
    },
    SectionBegin {
        kind: &'a str,
        name: Option<&'a str>,
    },
    SectionEnd,
}

fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// Removes a trailing comment (quotes respected). Returns the line and
/// whether an "ambiguous #" was seen.
fn strip_comment(line: &str) -> (&str, bool) {
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'"' || b == b'\'' {
            i += 1;
            while i < bytes.len() && bytes[i] != b {
                if bytes[i] == b'\\' && i + 1 < bytes.len() {
                    i += 1;
                }
                i += 1;
            }
            if i >= bytes.len() {
                break;
            }
        } else if b == b'#' {
            let ambiguous = i > 0 && !matches!(bytes[i - 1], b' ' | b'\t');
            return (&line[..i], ambiguous);
        }
        i += 1;
    }
    (line, false)
}

/// Dovecot's `str_unescape`: a backslash makes the next character literal.
fn unescape_backslashes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Classifies one complete logical line (trimmed, comment removed, not empty).
fn classify(line: &str) -> Result<LineKind<'_>, &'static str> {
    let key_end = line
        .find(|c: char| is_blank(c) || c == '=')
        .unwrap_or(line.len());
    let key = &line[..key_end];
    let rest = line[key_end..].trim_start_matches(is_blank);

    if key == "!include" || key == "!include_try" {
        return Ok(LineKind::Include {
            path: rest,
            must_exist: key == "!include",
        });
    }
    if let Some(value) = rest.strip_prefix('=') {
        let value = value.trim_start_matches(is_blank);
        if key.is_empty() {
            return Err("Missing setting name before '='");
        }
        if let Some(path) = value.strip_prefix('<') {
            return Ok(LineKind::KeyFile {
                key,
                path: path.trim_start_matches(is_blank),
            });
        }
        let quoted = matches!(value.chars().next(), Some(q @ ('"' | '\'')) if value.ends_with(q));
        if quoted {
            let inner = if value.len() >= 2 {
                &value[1..value.len() - 1]
            } else {
                ""
            };
            return Ok(LineKind::KeyValue {
                key,
                value: unescape_backslashes(inner),
                expand: false,
            });
        }
        return Ok(LineKind::KeyValue {
            key,
            value: value.to_owned(),
            expand: true,
        });
    }
    if key == "}" && rest.is_empty() {
        return Ok(LineKind::SectionEnd);
    }
    let (name, after) = if rest.starts_with('{') {
        (None, rest)
    } else if let Some(q) = rest.chars().next().filter(|&c| c == '"' || c == '\'') {
        let body = &rest[1..];
        let end = body.find(q).unwrap_or(body.len());
        let after = body
            .get(end + 1..)
            .unwrap_or("")
            .trim_start_matches(is_blank);
        (Some(&body[..end]), after)
    } else {
        let end = rest.find(is_blank).unwrap_or(rest.len());
        (Some(&rest[..end]), rest[end..].trim_start_matches(is_blank))
    };
    let Some(after_brace) = after.strip_prefix('{') else {
        return Err("Expecting '{'");
    };
    if !after_brace.is_empty() {
        return Err("Garbage after '{'");
    }
    Ok(LineKind::SectionBegin { kind: key, name })
}

/// Reads a file with the size limit. Reads at most `MAX_FILE_SIZE + 1`
/// bytes, so special files (`/dev/zero`) cannot hang or exhaust memory.
fn read_limited(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    let mut data = Vec::new();
    file.take(MAX_FILE_SIZE + 1).read_to_end(&mut data)?;
    if data.len() as u64 > MAX_FILE_SIZE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("file larger than {MAX_FILE_SIZE} bytes"),
        ));
    }
    Ok(data)
}

pub(crate) struct Parser {
    /// Open sections; `stack[0]` is the root.
    stack: Vec<Section>,
    /// Current top-level values, for `$name`.
    top_values: HashMap<String, String>,
    /// Files being included (for loop detection).
    include_chain: Vec<PathBuf>,
    files_read: usize,
    notes: ParseNotes,
}

impl Parser {
    pub(crate) fn new(origin: &Arc<str>) -> Self {
        Self {
            stack: vec![Section::new(
                "",
                None,
                Location {
                    file: origin.clone(),
                    line: 0,
                },
            )],
            top_values: HashMap::new(),
            include_chain: Vec::new(),
            files_read: 0,
            notes: ParseNotes::default(),
        }
    }

    pub(crate) fn finish(mut self) -> (Section, ParseNotes) {
        let root = self.stack.swap_remove(0);
        (root, self.notes)
    }

    /// Parses a file from disk (the top-level file or an include).
    pub(crate) fn parse_file(
        &mut self,
        path: &Path,
        origin: Option<&Location>,
    ) -> Result<(), ConfigError> {
        let err_loc = origin.cloned().unwrap_or_else(|| Location {
            file: Arc::from(path.display().to_string()),
            line: 0,
        });
        if self.include_chain.len() >= MAX_INCLUDE_DEPTH {
            return Err(ConfigError::at(
                &err_loc,
                format!("Includes nested deeper than {MAX_INCLUDE_DEPTH}"),
            ));
        }
        let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        if self.include_chain.contains(&canonical) {
            return Err(ConfigError::at(
                &err_loc,
                format!("Recursive include file: {}", path.display()),
            ));
        }
        self.files_read += 1;
        if self.files_read > MAX_INCLUDED_FILES {
            return Err(ConfigError::at(
                &err_loc,
                format!("More than {MAX_INCLUDED_FILES} config files included"),
            ));
        }
        let data = read_limited(path).map_err(|e| {
            ConfigError::at(&err_loc, format!("Can't open file {}: {e}", path.display()))
        })?;
        let text = String::from_utf8_lossy(&data);
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        self.include_chain.push(canonical);
        let result = self.parse_text(&text, Arc::from(path.display().to_string()), &base);
        self.include_chain.pop();
        result
    }

    /// Parses text whose relative paths resolve against `base`.
    pub(crate) fn parse_text(
        &mut self,
        text: &str,
        file: Arc<str>,
        base: &Path,
    ) -> Result<(), ConfigError> {
        let start_depth = self.stack.len();
        let mut pending = String::new();
        let mut line_no: u32 = 0;
        for raw in text.split('\n') {
            line_no = line_no.saturating_add(1);
            let loc = Location {
                file: file.clone(),
                line: line_no,
            };
            if raw.len() > MAX_LINE_LEN || pending.len() + raw.len() > MAX_LINE_LEN {
                return Err(ConfigError::at(
                    &loc,
                    format!("Line longer than {MAX_LINE_LEN} bytes"),
                ));
            }
            let raw = raw.strip_suffix('\r').unwrap_or(raw);
            let line = raw.trim_start_matches(is_blank);
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (line, ambiguous) = strip_comment(line);
            if ambiguous {
                self.notes.warnings.push(format!(
                    "{loc}: Ambiguous '#' character in line, treating it as comment. Add a space before it to remove this warning."
                ));
            }
            let line = line.trim_end_matches(is_blank);
            if let Some(cont) = line.strip_suffix('\\') {
                let cont = cont.trim_end_matches(is_blank);
                if !cont.is_empty() {
                    pending.push_str(cont);
                    pending.push(' ');
                }
                continue;
            }
            let full;
            let line = if pending.is_empty() {
                line
            } else {
                pending.push_str(line);
                full = std::mem::take(&mut pending);
                full.as_str()
            };
            if line.is_empty() {
                continue;
            }
            let kind = classify(line).map_err(|m| ConfigError::at(&loc, m))?;
            self.apply(kind, &loc, base, start_depth)?;
        }
        if self.stack.len() > start_depth {
            let open = self
                .stack
                .last()
                .map(|s| s.location.to_string())
                .unwrap_or_default();
            return Err(ConfigError::at(
                &Location { file, line: 0 },
                format!("Missing '}}' (section started at {open})"),
            ));
        }
        Ok(())
    }

    fn current(&mut self) -> &mut Section {
        // Invariant: the root is never popped (SectionEnd checks the depth).
        let last = self.stack.len() - 1;
        &mut self.stack[last]
    }

    fn set(&mut self, key: &str, value: String, loc: &Location) {
        if self.stack.len() == 1 {
            self.top_values.insert(key.to_owned(), value.clone());
        }
        self.current().push_setting(Setting {
            key: key.to_owned(),
            value,
            location: loc.clone(),
        });
    }

    fn lookup_var(&self, name: &str) -> Option<String> {
        self.top_values
            .get(name)
            .cloned()
            .or_else(|| dovecot_default(name).map(str::to_owned))
    }

    /// `doveconf -x` expansion of `$name` words.
    fn expand(&mut self, key: &str, value: &str, loc: &Location) -> String {
        if !value.contains('$') {
            return value.to_owned();
        }
        let mut words = Vec::new();
        for word in value.split(' ').filter(|w| !w.is_empty()) {
            match word.strip_prefix('$') {
                Some(name) => match self.lookup_var(name) {
                    Some(v) => words.push(v),
                    None => {
                        self.notes.unresolved.push(UnresolvedVariable {
                            location: loc.clone(),
                            key: key.to_owned(),
                            word: word.to_owned(),
                        });
                        words.push(word.to_owned());
                    }
                },
                None => words.push(word.to_owned()),
            }
        }
        words.join(" ")
    }

    fn apply(
        &mut self,
        kind: LineKind<'_>,
        loc: &Location,
        base: &Path,
        start_depth: usize,
    ) -> Result<(), ConfigError> {
        match kind {
            LineKind::KeyValue { key, value, expand } => {
                let value = if expand {
                    self.expand(key, &value, loc)
                } else {
                    value
                };
                self.set(key, value, loc);
            }
            LineKind::KeyFile { key, path } => {
                let full = base.join(path);
                let data = read_limited(&full).map_err(|e| {
                    ConfigError::at(loc, format!("{key}: Can't open file {path}: {e}"))
                })?;
                self.set(key, String::from_utf8_lossy(&data).into_owned(), loc);
            }
            LineKind::Include { path, must_exist } => self.include(path, must_exist, loc, base)?,
            LineKind::SectionBegin { kind, name } => {
                if self.stack.len() > MAX_SECTION_DEPTH {
                    return Err(ConfigError::at(
                        loc,
                        format!("Sections nested deeper than {MAX_SECTION_DEPTH}"),
                    ));
                }
                self.stack
                    .push(Section::new(kind, name.map(str::to_owned), loc.clone()));
            }
            LineKind::SectionEnd => {
                if self.stack.len() <= start_depth {
                    return Err(ConfigError::at(loc, "Unexpected '}'"));
                }
                if let Some(done) = self.stack.pop() {
                    self.current().items.push(Item::Section(done));
                }
            }
        }
        Ok(())
    }

    fn include(
        &mut self,
        pattern: &str,
        must_exist: bool,
        loc: &Location,
        base: &Path,
    ) -> Result<(), ConfigError> {
        let full = base.join(pattern);
        let full_text = full.to_string_lossy().into_owned();
        let mut matches: Vec<PathBuf> = Vec::new();
        if pattern.contains(['*', '?', '[']) {
            let paths = glob::glob(&full_text)
                .map_err(|e| ConfigError::at(loc, format!("glob({pattern}) failed: {e}")))?;
            for p in paths.flatten() {
                if matches.len() >= MAX_INCLUDED_FILES {
                    return Err(ConfigError::at(
                        loc,
                        format!("More than {MAX_INCLUDED_FILES} config files included"),
                    ));
                }
                matches.push(p);
            }
            matches.sort();
        } else if full.exists() {
            matches.push(full);
        }
        if matches.is_empty() {
            return if must_exist {
                Err(ConfigError::at(loc, "No matches"))
            } else {
                Ok(())
            };
        }
        for path in matches {
            self.parse_file(&path, Some(loc))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_forms() {
        assert_eq!(
            classify("a=b"),
            Ok(LineKind::KeyValue {
                key: "a",
                value: "b".into(),
                expand: true
            })
        );
        assert_eq!(
            classify("a = \"x \\\"y\\\" \\\\z\""),
            Ok(LineKind::KeyValue {
                key: "a",
                value: "x \"y\" \\z".into(),
                expand: false
            })
        );
        assert_eq!(
            classify("a = < f.txt"),
            Ok(LineKind::KeyFile {
                key: "a",
                path: "f.txt"
            })
        );
        assert_eq!(classify("}"), Ok(LineKind::SectionEnd));
        assert_eq!(
            classify("passdb {"),
            Ok(LineKind::SectionBegin {
                kind: "passdb",
                name: None
            })
        );
        assert_eq!(
            classify("service \"a b\" {"),
            Ok(LineKind::SectionBegin {
                kind: "service",
                name: Some("a b")
            })
        );
        assert_eq!(classify("foo"), Err("Expecting '{'"));
        assert_eq!(classify("foo bar"), Err("Expecting '{'"));
        assert_eq!(classify("service director { x"), Err("Garbage after '{'"));
        assert_eq!(
            classify("!include_try  x/*.conf"),
            Ok(LineKind::Include {
                path: "x/*.conf",
                must_exist: false
            })
        );
    }

    #[test]
    fn comments() {
        assert_eq!(
            strip_comment("a = \"x # y\" # c"),
            ("a = \"x # y\" ", false)
        );
        assert_eq!(strip_comment("a = b#c"), ("a = b", true));
    }
}
