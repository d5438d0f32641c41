//! The repository's man pages (`man/`), rendered the way `man` does, for tests that check
//! they say what the programs' `--help` says.

use std::path::{Path, PathBuf};
use std::process::Command;

/// `man/<section dir>/<page>` of this repository.
pub fn man_page_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../man")
        .join(rel)
}

/// Renders a man page as plain text with groff, after checking that groff has no warning
/// about it (a warning panics, with the warning). Hyphens come back as ASCII `-`.
pub fn render_man_page(rel: &str) -> String {
    let path = man_page_path(rel);
    let check = Command::new("groff")
        .args(["-man", "-ww", "-z"])
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("groff: {e}; install it with `apt-get install -y groff-base`"));
    let warnings = String::from_utf8_lossy(&check.stderr);
    assert!(
        check.status.success() && warnings.is_empty(),
        "{}: {warnings}",
        path.display()
    );
    let out = Command::new("groff")
        .args(["-man", "-Tutf8", "-P", "-cbou"])
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("groff: {e}"));
    String::from_utf8_lossy(&out.stdout).replace(['\u{2010}', '\u{2212}'], "-")
}

/// The text of a rendered page between the headings `from` and `to`.
pub fn man_section<'a>(page: &'a str, from: &str, to: &str) -> &'a str {
    let start = page
        .lines()
        .position(|l| l.trim() == from)
        .unwrap_or_else(|| panic!("no {from} section"));
    let begin: usize = page.lines().take(start + 1).map(|l| l.len() + 1).sum();
    let rest = &page[begin.min(page.len())..];
    let end = rest
        .lines()
        .position(|l| l.trim() == to)
        .map_or(rest.len(), |n| {
            rest.lines().take(n).map(|l| l.len() + 1).sum()
        });
    &rest[..end.min(rest.len())]
}
