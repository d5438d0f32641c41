//! doveadm's output formatters (`-f table|tab|flow|json|pager`, plus the
//! "formatted" template printer `dump` uses by default).
//!
//! A command declares its columns ([`Header`]) and adds rows of raw bytes;
//! [`render`] turns them into exactly the bytes doveadm prints. Values are
//! bytes, not `String`: usernames and tags need not be UTF-8.

pub mod flow;
pub mod formatted;
pub mod json;
pub mod pager;
pub mod tab;
pub mod table;

/// One output column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Key (used by `json` and `formatted`).
    pub key: &'static str,
    /// Title (used by `table`, `tab`, `flow`, `pager`).
    pub title: &'static str,
    /// Title not shown by `table`, `flow`, `pager` (`map -u`, `map -h`).
    pub hide_title: bool,
    /// `table` gives this column the spare width.
    pub expand: bool,
}

impl Header {
    /// A column whose key equals its title.
    pub const fn new(title: &'static str) -> Self {
        Self {
            key: title,
            title,
            hide_title: false,
            expand: false,
        }
    }
    /// A column with a key different from its title.
    pub const fn keyed(key: &'static str, title: &'static str) -> Self {
        Self {
            key,
            title,
            hide_title: false,
            expand: false,
        }
    }
    /// Marks the column as the one that expands.
    pub const fn expand(mut self) -> Self {
        self.expand = true;
        self
    }
    /// Hides the title.
    pub const fn hidden(mut self) -> Self {
        self.hide_title = true;
        self
    }
}

/// Which formatter prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Formatter {
    /// Aligned columns (the default).
    Table,
    /// Tab-separated with a title line.
    Tab,
    /// `title=value` pairs, one record per line.
    Flow,
    /// One JSON array of objects, no trailing newline.
    Json,
    /// `title: value` lines, records separated by a form feed line.
    Pager,
    /// A `%{key}` template per row.
    Formatted(String),
}

impl Formatter {
    /// Parses a `-f` name; `None` for names doveadm does not know.
    pub fn from_name(name: &[u8]) -> Option<Self> {
        Some(match name {
            b"table" => Self::Table,
            b"tab" => Self::Tab,
            b"flow" => Self::Flow,
            b"json" => Self::Json,
            b"pager" => Self::Pager,
            // Valid, but only commands that set a template can print with it.
            b"formatted" => Self::Formatted(String::new()),
            _ => return None,
        })
    }
}

/// A finished result: columns and rows.
#[derive(Debug, Clone, Default)]
pub struct Output {
    /// Columns.
    pub headers: Vec<Header>,
    /// Rows; each has one value per column.
    pub rows: Vec<Vec<Vec<u8>>>,
}

impl Output {
    /// An empty result with these columns.
    pub fn new(headers: &[Header]) -> Self {
        Self {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (missing trailing values print as empty).
    pub fn row(&mut self, mut values: Vec<Vec<u8>>) {
        values.resize(self.headers.len(), Vec::new());
        self.rows.push(values);
    }
}

/// Renders `out` with `fmt`; `width` is the table width (see
/// [`table::terminal_width`]).
pub fn render(fmt: &Formatter, out: &Output, width: usize) -> Vec<u8> {
    match fmt {
        Formatter::Table => table::render(out, width),
        Formatter::Tab => tab::render(out),
        Formatter::Flow => flow::render(out),
        Formatter::Json => json::render(out),
        Formatter::Pager => pager::render(out),
        Formatter::Formatted(t) => formatted::render(out, t),
    }
}
