//! A `doveconf -n`-like dump of the effective non-default director settings.
//!
//! Real `doveconf -n` (2.3.19.1) prints `# <version> (<hash>): <config
//! path>` and a few more `#` header lines, then every non-default top-level
//! setting sorted by key as `key = value`, then sections. Time and size
//! values are normalised (`5s` → `5 secs`, `10M` → `10 M`), and a value with
//! `#` (or leading/trailing blanks) is printed in double quotes. We print
//! our own header line and only the settings the director reads, in the same
//! format.

use crate::catalog::{setting, Kind, SETTINGS};
use crate::config::Config;
use crate::settings::director_default;
use crate::units::{format_size_bytes, format_time_secs, parse_size_bytes, parse_time_secs};

/// Normalises a value the way doveconf prints it.
fn normalise(key: &str, value: &str) -> String {
    match setting(key).map(|s| s.kind) {
        Some(Kind::Time) => {
            if let Ok(secs) = parse_time_secs(value) {
                return format_time_secs(secs);
            }
        }
        Some(Kind::Size) => {
            if let Ok(bytes) = parse_size_bytes(value) {
                return format_size_bytes(bytes);
            }
        }
        _ => {}
    }
    value.to_owned()
}

/// doveconf quotes values containing `#` or with leading/trailing blanks.
fn quote_if_needed(value: &str) -> String {
    let needs =
        value.contains('#') || value.starts_with([' ', '\t']) || value.ends_with([' ', '\t']);
    if needs {
        format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        value.to_owned()
    }
}

/// Renders the non-default director settings of `config`.
/// `origin` goes into the header (`# director <version>: <origin>`).
pub fn print_non_default(config: &Config, origin: &str) -> String {
    let mut out = format!("# director {}: {origin}\n", env!("CARGO_PKG_VERSION"));
    // Secrets are never printed (doveconf hides them too).
    let mut keys: Vec<&str> = SETTINGS
        .iter()
        .filter(|s| s.kind != Kind::Secret)
        .map(|s| s.key)
        .collect();
    keys.sort_unstable();
    for key in keys {
        let Some(value) = config.get(key) else {
            continue;
        };
        let shown = normalise(key, value);
        let default = director_default(key).map(|d| normalise(key, d));
        if default.as_deref() == Some(shown.as_str()) {
            continue;
        }
        out.push_str(&format!("{key} = {}\n", quote_if_needed(&shown)));
    }
    for service in config.root().sections_named("service", Some("director")) {
        out.push_str("service director {\n");
        render_section_body(&mut out, service, 1);
        out.push_str("}\n");
    }
    out
}

fn render_section_body(out: &mut String, sec: &crate::tree::Section, depth: usize) {
    let indent = "  ".repeat(depth);
    // Later settings override earlier ones; print each key once, sorted.
    let mut last = std::collections::BTreeMap::new();
    for s in sec.settings() {
        last.insert(s.key.as_str(), s);
    }
    let settings: Vec<_> = last.into_values().collect();
    let mut subs: Vec<_> = sec.sections().collect();
    subs.sort_by(|a, b| (&a.kind, &a.name).cmp(&(&b.kind, &b.name)));
    // doveconf interleaves settings and sections sorted by key/kind.
    let mut si = settings.into_iter().peekable();
    let mut ss = subs.into_iter().peekable();
    loop {
        let take_setting = match (si.peek(), ss.peek()) {
            (Some(s), Some(sec)) => s.key <= sec.kind,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        if take_setting {
            if let Some(s) = si.next() {
                out.push_str(&format!(
                    "{indent}{} = {}\n",
                    s.key,
                    quote_if_needed(&s.value)
                ));
            }
        } else if let Some(sub) = ss.next() {
            match &sub.name {
                Some(n) => out.push_str(&format!("{indent}{} {n} {{\n", sub.kind)),
                None => out.push_str(&format!("{indent}{} {{\n", sub.kind)),
            }
            render_section_body(out, sub, depth + 1);
            out.push_str(&format!("{indent}}}\n"));
        }
    }
}
