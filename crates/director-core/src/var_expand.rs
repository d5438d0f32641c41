//! The subset of Dovecot's `var_expand` template language that `director_username_hash`
//! needs (§1.2).
//!
//! Operators keep their existing `director_username_hash` values, and the hash must be the
//! same bytes Dovecot feeds to MD5, so this reproduces Dovecot's parsing rules (including its
//! lenient handling of odd input) rather than inventing a cleaner grammar. A template is
//! parsed once ([`Template::parse`]) and expanded per username ([`Template::expand`]).
//!
//! Supported per `%` item: `%[-][0][width][.[0][-]width2][modifiers…]<var>` with the
//! variables `u n d` / `{user} {username} {domain}`, the modifiers `L U E X R H N M D T`,
//! offsets (negative = from the end), widths (negative = drop from the end), zero padding and
//! `%%`. Anything else is an *unknown variable*: Dovecot inserts
//! `UNSUPPORTED_VARIABLE_<name>` and reports failure, and so do we.

use md5::{Digest, Md5};

/// Longest template accepted. Dovecot has no limit of its own; settings lines are bounded
/// anyway, so anything longer is certainly a mistake.
pub const MAX_TEMPLATE_LEN: usize = 1024;
/// Most modifiers on one `%` item (Dovecot's `MAX_MODIFIER_COUNT`).
pub const MAX_MODIFIER_COUNT: usize = 10;
/// Largest offset/width number we keep; larger values saturate (Dovecot overflows an int).
const MAX_NUMBER: i64 = 1 << 20;

/// Errors found while parsing a template.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// The template is longer than [`MAX_TEMPLATE_LEN`].
    #[error("template longer than {MAX_TEMPLATE_LEN} bytes")]
    TooLong,
}

/// The variables a username hash template can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variable {
    /// `%u` / `%{user}`: the full username.
    User,
    /// `%n` / `%{username}`: the part before the first `@`.
    Username,
    /// `%d` / `%{domain}`: the part after the first `@` (empty without `@`).
    Domain,
    /// `%%`: a literal percent sign.
    Percent,
}

/// A modifier letter, applied left to right to the variable's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Modifier {
    /// `L`: ASCII lowercase.
    Lower,
    /// `U`: ASCII uppercase.
    Upper,
    /// `E`: backslash-escape `\`, `"` and `'`.
    Escape,
    /// `X`: decimal number to lowercase hex (non-numbers become 0).
    Hex,
    /// `R`: reverse the bytes.
    Reverse,
    /// `H`: Dovecot `str_hash`, modulo width, hex.
    StrHash,
    /// `N`: MD5-based hash, modulo width, hex.
    NewHash,
    /// `M`: MD5 as lowercase hex.
    Md5,
    /// `D`: LDAP DN fragment (`a.b` → `a,dc=b`).
    LdapDn,
    /// `T`: trim trailing whitespace.
    TrimEnd,
}

impl Modifier {
    fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            b'L' => Self::Lower,
            b'U' => Self::Upper,
            b'E' => Self::Escape,
            b'X' => Self::Hex,
            b'R' => Self::Reverse,
            b'H' => Self::StrHash,
            b'N' => Self::NewHash,
            b'M' => Self::Md5,
            b'D' => Self::LdapDn,
            b'T' => Self::TrimEnd,
            _ => return None,
        })
    }
}

/// One `%` item of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// Offset into the value (negative = from the end). Reused as hex pad length by `H`/`N`.
    offset: i64,
    /// Maximum width (negative = drop that many bytes from the end), 0 = unlimited.
    width: i64,
    /// Pad with leading zeros up to `width` instead of truncating.
    zero_padding: bool,
    modifiers: Vec<Modifier>,
    /// `Ok(var)` or `Err(name)` for a variable we don't know.
    var: Result<Variable, Vec<u8>>,
}

/// A piece of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Copied verbatim.
    Literal(Vec<u8>),
    /// A `%` item.
    Item(Item),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pieces: Vec<Piece>,
}

/// Result of expanding a template: the bytes, and whether every variable was known
/// (Dovecot's return value 1 vs 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expansion {
    /// The expanded bytes (with `UNSUPPORTED_VARIABLE_<name>` for unknown variables).
    pub bytes: Vec<u8>,
    /// Names of unknown variables met, in order; empty means success.
    pub unknown: Vec<Vec<u8>>,
}

fn parse_number(s: &[u8], pos: &mut usize) -> i64 {
    let mut n: i64 = 0;
    while let Some(&c) = s.get(*pos) {
        if !c.is_ascii_digit() {
            break;
        }
        n = (n * 10 + i64::from(c - b'0')).min(MAX_NUMBER);
        *pos += 1;
    }
    n
}

impl Template {
    /// Parses a template the way Dovecot's `var_expand` reads it. Never fails on syntax
    /// (Dovecot has no syntax errors); only the length limit applies.
    pub fn parse(s: &str) -> Result<Self, TemplateError> {
        let s = s.as_bytes();
        if s.len() > MAX_TEMPLATE_LEN {
            return Err(TemplateError::TooLong);
        }
        let mut pieces = Vec::new();
        let mut lit = Vec::new();
        let mut pos = 0;
        while pos < s.len() {
            let c = s[pos];
            if c != b'%' {
                lit.push(c);
                pos += 1;
                continue;
            }
            if pos + 1 >= s.len() {
                // A lone trailing `%` expands to nothing (doveadm: "100%" hashes "100").
                break;
            }
            pos += 1;
            let mut sign = 1i64;
            let mut zero_padding = false;
            if s.get(pos) == Some(&b'-') {
                sign = -1;
                pos += 1;
            }
            if s.get(pos) == Some(&b'0') {
                zero_padding = true;
                pos += 1;
            }
            let mut width = parse_number(s, &mut pos);
            let mut offset = 0;
            // A `-` before the first number only signs an offset: `%-2u` is width 2
            // (checked against doveadm).
            if s.get(pos) == Some(&b'.') {
                offset = sign * width;
                sign = 1;
                pos += 1;
                // A zero-prefixed offset means nothing; zero padding comes with the width.
                zero_padding = false;
                if s.get(pos) == Some(&b'0') {
                    zero_padding = true;
                    pos += 1;
                }
                if s.get(pos) == Some(&b'-') {
                    sign = -1;
                    pos += 1;
                }
                width = sign * parse_number(s, &mut pos);
            }
            let mut modifiers = Vec::new();
            while modifiers.len() < MAX_MODIFIER_COUNT {
                match s.get(pos).copied().and_then(Modifier::from_byte) {
                    Some(m) => {
                        modifiers.push(m);
                        pos += 1;
                    }
                    None => break,
                }
            }
            let Some(&vc) = s.get(pos) else {
                // Template ended inside a `%` item: nothing more to expand.
                break;
            };
            let var = if vc == b'{' && s[pos..].contains(&b'}') {
                let start = pos + 1;
                let end = start + s[start..].iter().position(|&b| b == b'}').unwrap_or(0);
                pos = end + 1;
                match &s[start..end] {
                    b"user" => Ok(Variable::User),
                    b"username" => Ok(Variable::Username),
                    b"domain" => Ok(Variable::Domain),
                    other => Err(other.to_vec()),
                }
            } else {
                pos += 1;
                match vc {
                    b'u' => Ok(Variable::User),
                    b'n' => Ok(Variable::Username),
                    b'd' => Ok(Variable::Domain),
                    b'%' => Ok(Variable::Percent),
                    other => Err(vec![other]),
                }
            };
            if !lit.is_empty() {
                pieces.push(Piece::Literal(std::mem::take(&mut lit)));
            }
            pieces.push(Piece::Item(Item {
                offset,
                width,
                zero_padding,
                modifiers,
                var,
            }));
        }
        if !lit.is_empty() {
            pieces.push(Piece::Literal(lit));
        }
        Ok(Self { pieces })
    }

    /// Names of the unknown variables in this template (expansion would fail).
    pub fn unknown_variables(&self) -> Vec<Vec<u8>> {
        self.pieces
            .iter()
            .filter_map(|p| match p {
                Piece::Item(Item { var: Err(n), .. }) => Some(n.clone()),
                _ => None,
            })
            .collect()
    }

    /// Whether the template is exactly one plain variable with the given modifiers, e.g.
    /// `%Lu` — used to pick the allocation-free fast paths.
    pub(crate) fn as_single(&self) -> Option<(&[Modifier], Variable)> {
        match self.pieces.as_slice() {
            [Piece::Item(Item {
                offset: 0,
                width: 0,
                zero_padding: false,
                modifiers,
                var: Ok(v),
            })] => Some((modifiers.as_slice(), *v)),
            _ => None,
        }
    }

    /// Expands the template for a username.
    pub fn expand(&self, user: &[u8]) -> Expansion {
        let (username, domain) = split_user(user);
        let mut out = Vec::with_capacity(user.len() + 16);
        let mut unknown = Vec::new();
        for piece in &self.pieces {
            match piece {
                Piece::Literal(l) => out.extend_from_slice(l),
                Piece::Item(item) => {
                    let value: Vec<u8> = match &item.var {
                        Ok(Variable::User) => user.to_vec(),
                        Ok(Variable::Username) => username.to_vec(),
                        Ok(Variable::Domain) => domain.to_vec(),
                        Ok(Variable::Percent) => {
                            // `%%` is a literal; modifiers and widths don't apply to it.
                            out.push(b'%');
                            continue;
                        }
                        Err(name) => {
                            unknown.push(name.clone());
                            let mut v = b"UNSUPPORTED_VARIABLE_".to_vec();
                            v.extend_from_slice(name);
                            out.extend_from_slice(&v);
                            continue;
                        }
                    };
                    apply_item(item, value, &mut out);
                }
            }
        }
        Expansion {
            bytes: out,
            unknown,
        }
    }
}

/// Splits `user` at the first `@` into (username, domain); the domain is empty without `@`.
pub fn split_user(user: &[u8]) -> (&[u8], &[u8]) {
    match user.iter().position(|&b| b == b'@') {
        Some(i) => (&user[..i], &user[i + 1..]),
        None => (user, &[]),
    }
}

struct Ctx {
    offset: i64,
    width: i64,
}

fn apply_item(item: &Item, mut value: Vec<u8>, out: &mut Vec<u8>) {
    let mut ctx = Ctx {
        offset: item.offset,
        width: item.width,
    };
    for m in &item.modifiers {
        value = apply_modifier(*m, value, &mut ctx);
    }
    let len = value.len() as i64;
    let mut start = if ctx.offset < 0 {
        let from_end = -ctx.offset;
        if len > from_end {
            len - from_end
        } else {
            0
        }
    } else {
        ctx.offset.min(len)
    };
    start = start.clamp(0, len);
    let v = &value[start as usize..];
    let vlen = v.len() as i64;
    if ctx.width == 0 {
        out.extend_from_slice(v);
    } else if !item.zero_padding {
        let take = if ctx.width < 0 {
            // Dropping more than the whole value keeps all of it (C size_t wrap-around).
            if vlen + ctx.width < 0 {
                vlen
            } else {
                vlen + ctx.width
            }
        } else {
            ctx.width.min(vlen)
        };
        out.extend_from_slice(&v[..take as usize]);
    } else {
        // `%05u`-like padding: never truncates.
        for _ in vlen..ctx.width {
            out.push(b'0');
        }
        out.extend_from_slice(v);
    }
}

/// Dovecot's `str_hash` (the PJW/ELF hash).
pub fn str_hash(s: &[u8]) -> u32 {
    let mut h: u32 = 0;
    for &b in s {
        h = (h << 4).wrapping_add(u32::from(b));
        let g = h & 0xF000_0000;
        if g != 0 {
            h ^= g >> 24;
            h ^= g;
        }
    }
    h
}

fn hex_hash(mut value: u64, ctx: &mut Ctx) -> Vec<u8> {
    if ctx.width != 0 {
        // A negative width is a huge unsigned modulus in C; don't divide by it.
        if ctx.width > 0 {
            value %= ctx.width as u64;
        }
        ctx.width = 0;
    }
    let mut s = format!("{:x}", value as u32).into_bytes();
    while (s.len() as i64) < ctx.offset {
        s.insert(0, b'0');
    }
    ctx.offset = 0;
    s
}

fn apply_modifier(m: Modifier, v: Vec<u8>, ctx: &mut Ctx) -> Vec<u8> {
    match m {
        Modifier::Lower => v.to_ascii_lowercase(),
        Modifier::Upper => v.to_ascii_uppercase(),
        Modifier::Escape => {
            let mut o = Vec::with_capacity(v.len());
            for b in v {
                if matches!(b, b'\\' | b'"' | b'\'') {
                    o.push(b'\\');
                }
                o.push(b);
            }
            o
        }
        Modifier::Hex => {
            let n = std::str::from_utf8(&v)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0);
            format!("{n:x}").into_bytes()
        }
        Modifier::Reverse => {
            let mut v = v;
            v.reverse();
            v
        }
        Modifier::StrHash => hex_hash(u64::from(str_hash(&v)), ctx),
        Modifier::NewHash => {
            let d = Md5::digest(&v);
            let mut value = 0u64;
            for b in &d[..8] {
                value = (value << 8) | u64::from(*b);
            }
            hex_hash(value, ctx)
        }
        Modifier::Md5 => {
            let d = Md5::digest(&v);
            d.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
                .into_bytes()
        }
        Modifier::LdapDn => {
            let mut o = Vec::with_capacity(v.len() + 8);
            for b in v {
                if b == b'.' {
                    o.extend_from_slice(b",dc=");
                } else {
                    o.push(b);
                }
            }
            o
        }
        Modifier::TrimEnd => {
            let mut v = v;
            while matches!(v.last(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
                v.pop();
            }
            v
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(t: &str, u: &str) -> String {
        let e = Template::parse(t).expect("template").expand(u.as_bytes());
        String::from_utf8(e.bytes).expect("utf8")
    }

    #[test]
    fn variables() {
        assert_eq!(ex("%u", "a@b@c"), "a@b@c");
        assert_eq!(ex("%n", "a@b@c"), "a");
        assert_eq!(ex("%d", "a@b@c"), "b@c");
        assert_eq!(ex("%d", "abc"), "");
        assert_eq!(ex("%{user}-%{username}-%{domain}", "X@y"), "X@y-X-y");
        assert_eq!(ex("%n@%d", "testuser@domain"), "testuser@domain");
    }

    #[test]
    fn modifiers() {
        assert_eq!(ex("%Lu", "AbC@Ü"), "abc@Ü");
        assert_eq!(ex("%Uu", "abc"), "ABC");
        assert_eq!(ex("%Ru", "abc"), "cba");
        assert_eq!(ex("%LRu", "ABC"), "cba");
        assert_eq!(ex("%Tu", "abc \t"), "abc");
        assert_eq!(ex("%Xu", "255"), "ff");
        assert_eq!(ex("%Xu", "x"), "0");
        assert_eq!(ex("%Mu", ""), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(ex("%Eu", "a\"b"), "a\\\"b");
        assert_eq!(ex("%Dd", "u@example.com"), "example,dc=com");
    }

    #[test]
    fn offsets_and_widths() {
        assert_eq!(ex("%3u", "abcdef"), "abc");
        assert_eq!(ex("%1.2u", "abcdef"), "bc");
        assert_eq!(ex("%-2.2u", "abcdef"), "ef");
        assert_eq!(ex("%-2u", "abcdef"), "ab"); // "-" without a dot is ignored
        assert_eq!(ex("%0.-2u", "a"), "a"); // dropping more than everything keeps all
        assert_eq!(ex("%0.-1u", "a"), "");
        assert_eq!(ex("%0.-2u", "abcdef"), "abcd");
        assert_eq!(ex("%05u", "12"), "00012");
        assert_eq!(ex("%05u", "1234567"), "1234567");
        assert_eq!(ex("%.3u", "abcdef"), "abc");
        assert_eq!(ex("%10.2u", "abc"), "");
    }

    #[test]
    fn hashes() {
        assert_eq!(str_hash(b""), 0);
        assert_eq!(str_hash(b"a"), 97);
        // width is the modulus; offset is the zero pad length.
        assert_eq!(ex("%4.256Hu", "a"), "0061");
        assert_eq!(ex("%2Nu", "a").len(), 1);
    }

    #[test]
    fn percent_and_unknown() {
        assert_eq!(ex("%%u", "x"), "%u");
        assert_eq!(ex("100%", "x"), "100");
        let t = Template::parse("%{invalid}").expect("parse");
        let e = t.expand(b"x");
        assert_eq!(e.bytes, b"UNSUPPORTED_VARIABLE_invalid");
        assert_eq!(e.unknown, vec![b"invalid".to_vec()]);
        assert_eq!(ex("%{user", "x"), "UNSUPPORTED_VARIABLE_{user");
        assert_eq!(ex("%L", "x"), "");
    }
}
