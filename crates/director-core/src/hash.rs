//! User hashing (§1): which 32-bit number a username maps to.
//!
//! Every director, login process and doveadm must compute the same number for the same user,
//! or users end up on different backends. The algorithm is Dovecot's `mail_user_hash`:
//! expand `director_username_hash` (default `%Lu`), MD5 the result, take the first four
//! bytes big-endian, and map 0 to 1.

use md5::{Digest, Md5};

use crate::var_expand::{Modifier, Template, TemplateError, Variable};

/// Dovecot's default `director_username_hash`.
pub const DEFAULT_HASH_FORMAT: &str = "%Lu";

/// Why a `director_username_hash` value was rejected at configuration time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashFormatError {
    /// The template is too long.
    #[error("director_username_hash: {0}")]
    Template(#[from] TemplateError),
    /// The template uses a variable Dovecot doesn't provide for hashing; every login would
    /// fail, so we refuse the setting up front (see [`HashFormat::parse_lenient`]).
    #[error("director_username_hash: unknown variable '{0}' (only %u %n %d / %{{user}} %{{username}} %{{domain}})")]
    UnknownVariable(String),
}

/// Why a username could not be hashed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashError {
    /// The format has an unknown variable (Dovecot: "Failed to expand
    /// director_username_hash"). Logins get a temporary failure, admin gets `TRYAGAIN`.
    #[error("failed to expand director_username_hash: unknown variable '{0}'")]
    UnknownVariable(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    /// Exactly `%u`: hash the username bytes.
    Verbatim,
    /// Exactly `%Lu`: hash the ASCII-lowercased username.
    Lower,
    /// Anything else: full template expansion.
    Template(Template),
}

/// A parsed `director_username_hash` value. Parse once at configuration time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashFormat {
    kind: Kind,
    source: String,
}

impl Default for HashFormat {
    fn default() -> Self {
        Self {
            kind: Kind::Lower,
            source: DEFAULT_HASH_FORMAT.to_string(),
        }
    }
}

impl HashFormat {
    /// Parses and validates a format. Unlike Dovecot (which fails every single login at
    /// run time), a format with an unknown variable is rejected here.
    pub fn parse(s: &str) -> Result<Self, HashFormatError> {
        let f = Self::parse_lenient(s)?;
        if let Kind::Template(t) = &f.kind {
            if let Some(name) = t.unknown_variables().into_iter().next() {
                return Err(HashFormatError::UnknownVariable(
                    String::from_utf8_lossy(&name).into_owned(),
                ));
            }
        }
        Ok(f)
    }

    /// Parses a format the way Dovecot accepts it: unknown variables are kept and make
    /// [`user_hash`] fail at run time (useful to reproduce Dovecot's `TRYAGAIN` answers).
    pub fn parse_lenient(s: &str) -> Result<Self, HashFormatError> {
        let kind = match s {
            "%u" => Kind::Verbatim,
            "%Lu" => Kind::Lower,
            _ => {
                let t = Template::parse(s)?;
                match t.as_single() {
                    Some(([], Variable::User)) => Kind::Verbatim,
                    Some(([Modifier::Lower], Variable::User)) => Kind::Lower,
                    _ => Kind::Template(t),
                }
            }
        };
        Ok(Self {
            kind,
            source: s.to_string(),
        })
    }

    /// The text this format was parsed from.
    pub fn as_str(&self) -> &str {
        &self.source
    }
}

/// First four bytes of MD5(`data`), big-endian — the hash primitive used for users and
/// vhosts alike (without the 0 → 1 rule).
#[inline]
pub fn md5_first_u32(data: &[u8]) -> u32 {
    let d = Md5::digest(data);
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

/// Username bytes as Dovecot sees them: a C string, so everything from a NUL on is ignored.
fn c_string(username: &[u8]) -> &[u8] {
    match username.iter().position(|&b| b == 0) {
        Some(i) => &username[..i],
        None => username,
    }
}

/// Computes the user hash (§1.1).
///
/// `%u` and `%Lu` take allocation-free fast paths (`%Lu` lowercases ASCII only).
pub fn user_hash(username: &[u8], format: &HashFormat) -> Result<u32, HashError> {
    let username = c_string(username);
    let h = match &format.kind {
        Kind::Verbatim => md5_first_u32(username),
        Kind::Lower => {
            let mut md5 = Md5::new();
            let mut buf = [0u8; 64];
            for chunk in username.chunks(buf.len()) {
                let out = &mut buf[..chunk.len()];
                out.copy_from_slice(chunk);
                out.make_ascii_lowercase();
                md5.update(&*out);
            }
            let d = md5.finalize();
            u32::from_be_bytes([d[0], d[1], d[2], d[3]])
        }
        Kind::Template(t) => {
            let e = t.expand(username);
            if let Some(name) = e.unknown.into_iter().next() {
                return Err(HashError::UnknownVariable(
                    String::from_utf8_lossy(&name).into_owned(),
                ));
            }
            md5_first_u32(&e.bytes)
        }
    };
    Ok(if h == 0 { 1 } else { h })
}

/// How an admin command names a user: a hash, or a name to hash.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum UserKey {
    /// The field was a decimal `u32`, taken as the hash itself.
    Hash(u32),
    /// Anything else: a username, hashed with the director's format.
    Name(Vec<u8>),
}

impl UserKey {
    /// Resolves the key to a hash.
    pub fn hash(&self, format: &HashFormat) -> Result<u32, HashError> {
        match self {
            Self::Hash(h) => Ok(*h),
            Self::Name(n) => user_hash(n, format),
        }
    }
}

/// Interprets the user field of admin `USER-LOOKUP`/`USER-MOVE` (lab NOTES §4, §6): ASCII
/// digits only, at least one, fitting in 32 bits → the hash (`007` is 7, `0` is 0);
/// anything else (`abc`, `12abc`, `4294967296`, ``) is a username.
pub fn parse_user_key(s: &[u8]) -> UserKey {
    if !s.is_empty() && s.iter().all(u8::is_ascii_digit) {
        let mut n: u64 = 0;
        for &b in s {
            n = n * 10 + u64::from(b - b'0');
            if n > u64::from(u32::MAX) {
                return UserKey::Name(s.to_vec());
            }
        }
        // Fits: checked against u32::MAX above.
        return UserKey::Hash(n as u32);
    }
    UserKey::Name(s.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(user: &str, fmt: &str) -> u32 {
        user_hash(
            user.as_bytes(),
            &HashFormat::parse(fmt).expect("valid format"),
        )
        .expect("hash")
    }

    #[test]
    fn spec_table_1_3() {
        assert_eq!(h("", "%u"), 3558706393);
        assert_eq!(h("testuser", ""), 3558706393);
        assert_eq!(h("@", "%u"), 1368314517);
        assert_eq!(h("testuser", "%u"), 1570531526);
        assert_eq!(h("testuser", "%n"), 1570531526);
        assert_eq!(h("testuser", "%d"), 3558706393);
        assert_eq!(h("@domain", "%d"), 2908717800);
        assert_eq!(h("testuser@domain", "%u"), 3813799143);
        assert_eq!(h("testuser@domain", "%n@%d"), 3813799143);
        assert_eq!(h("testuser@domain", "%Lu"), 0xe351f4e7);
        assert_eq!(h("TestUser@Domain", "%Lu"), 3813799143);
        assert_eq!(h("testuser@domain", "%n"), 1570531526);
        assert_eq!(h("test@user@domain", "%n"), 160394189);
        assert_eq!(h("test@user@domain", "%d"), 1841230927);
        assert_eq!(h("alice@example.com", "%Lu"), 3244357836);
        assert_eq!(h("bob", "%Lu"), 2677887420);
    }

    #[test]
    fn unknown_variable() {
        assert!(matches!(
            HashFormat::parse("%{invalid}"),
            Err(HashFormatError::UnknownVariable(v)) if v == "invalid"
        ));
        let f = HashFormat::parse_lenient("%{invalid}").expect("lenient");
        assert_eq!(
            user_hash(b"testuser@domain", &f),
            Err(HashError::UnknownVariable("invalid".into()))
        );
        // The value Dovecot would have hashed.
        assert_eq!(md5_first_u32(b"UNSUPPORTED_VARIABLE_invalid"), 1466562296);
    }

    #[test]
    fn lab_vectors() {
        assert_eq!(h("user1", "%Lu"), 617210206);
        assert_eq!(h("USER1", "%Lu"), 617210206);
        assert_eq!(h("user2@example.com", "%Lu"), 2874385041);
        assert_eq!(h("abc", "%Lu"), 2416005272);
        assert_eq!(h("Jürgen", "%Lu"), 2018624527);
        assert_eq!(h("jürgen", "%Lu"), 2018624527);
        assert_eq!(h("JÜRGEN", "%Lu"), 2146606469);
        assert_eq!(h("user1@example.com", "%Ln"), 617210206);
        assert_eq!(h("a@b@c", "%Ln"), h("a", "%u"));
        assert_eq!(h("@", "%Ln"), 3558706393);
        // The long-form spelling takes the same path.
        assert_eq!(h("TestUser@Domain", "%L{user}"), 3813799143);
    }

    #[test]
    fn long_username_fast_path_matches_template() {
        let name = "AbC".repeat(500);
        let tmpl = HashFormat::parse("%Lu%%").expect("fmt");
        let expected = md5_first_u32(format!("{}%", name.to_ascii_lowercase()).as_bytes());
        assert_eq!(user_hash(name.as_bytes(), &tmpl), Ok(expected));
        assert_eq!(
            h(&name, "%Lu"),
            md5_first_u32(name.to_ascii_lowercase().as_bytes())
        );
    }

    #[test]
    fn user_keys() {
        assert_eq!(parse_user_key(b"42"), UserKey::Hash(42));
        assert_eq!(parse_user_key(b"007"), UserKey::Hash(7));
        assert_eq!(parse_user_key(b"0"), UserKey::Hash(0));
        assert_eq!(parse_user_key(b"4294967295"), UserKey::Hash(u32::MAX));
        assert_eq!(
            parse_user_key(b"4294967296"),
            UserKey::Name(b"4294967296".to_vec())
        );
        assert_eq!(parse_user_key(b"12abc"), UserKey::Name(b"12abc".to_vec()));
        assert_eq!(parse_user_key(b""), UserKey::Name(Vec::new()));
        assert_eq!(parse_user_key(b"+1"), UserKey::Name(b"+1".to_vec()));
    }
}
