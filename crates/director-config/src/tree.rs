//! The parsed config as a tree of settings and sections, in file order.
//!
//! Kept close to what the operator wrote (order, repeated sections, where
//! each item came from) so that the daemon can read settings of other
//! services later (e.g. `service imap-login { inet_listener imap { port } }`)
//! and so errors can point at the right line.

use crate::error::Location;

/// `key = value`, after `$variable`, quote and `<file` processing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// Setting name.
    pub key: String,
    /// Effective value.
    pub value: String,
    /// Where it was set.
    pub location: Location,
}

/// `kind [name] { ... }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// Section type (`service`, `unix_listener`, `passdb`, `protocol`, ...).
    pub kind: String,
    /// Section name; `None` for `passdb {`, `inet_listener {`.
    pub name: Option<String>,
    /// Contents in file order.
    pub items: Vec<Item>,
    /// Where the section was opened.
    pub location: Location,
}

/// One entry of a section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A setting.
    Setting(Setting),
    /// A nested section.
    Section(Section),
}

impl Section {
    /// An empty section.
    pub fn new(kind: impl Into<String>, name: Option<String>, location: Location) -> Self {
        Self {
            kind: kind.into(),
            name,
            items: Vec::new(),
            location,
        }
    }

    /// The last value set for `key` directly in this section (later
    /// settings override earlier ones, as in Dovecot).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.get_setting(key).map(|s| s.value.as_str())
    }

    /// Like [`get`](Self::get) but returns the whole [`Setting`] (with its location).
    pub fn get_setting(&self, key: &str) -> Option<&Setting> {
        self.settings().filter(|s| s.key == key).last()
    }

    /// Settings directly in this section, in order (repeats included).
    pub fn settings(&self) -> impl Iterator<Item = &Setting> {
        self.items.iter().filter_map(|i| match i {
            Item::Setting(s) => Some(s),
            Item::Section(_) => None,
        })
    }

    /// Direct subsections, in order.
    pub fn sections(&self) -> impl Iterator<Item = &Section> {
        self.items.iter().filter_map(|i| match i {
            Item::Section(s) => Some(s),
            Item::Setting(_) => None,
        })
    }

    /// Direct subsections of a kind (and name, if given), in order. Dovecot
    /// merges repeated `service foo { }` blocks; callers that want that
    /// iterate over all of them.
    pub fn sections_named<'a>(
        &'a self,
        kind: &'a str,
        name: Option<&'a str>,
    ) -> impl Iterator<Item = &'a Section> + 'a {
        self.sections()
            .filter(move |s| s.kind == kind && (name.is_none() || s.name.as_deref() == name))
    }

    /// Sets (appends) a setting; later ones win.
    pub fn push_setting(&mut self, setting: Setting) {
        self.items.push(Item::Setting(setting));
    }
}
