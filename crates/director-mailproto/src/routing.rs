//! Which name the core hashes for a login (DIRECTOR-SPEC §1.4, §7.1).
//!
//! Dovecot's director hashes the login name cut at the first character of
//! `auth_master_user_separator` (so `user*master` routes as `user`), and for
//! SASL PLAIN with a non-empty authorization identity the authzid is the user
//! whose mail is accessed, so that is the name to route.

use crate::connection::Credentials;

/// The user name to route `creds` by. `master_separator` is the value of
/// `auth_master_user_separator` (empty = unset); the name is cut at the first
/// byte that appears in it.
pub fn routing_user(creds: &Credentials, master_separator: &str) -> Vec<u8> {
    let name = if creds.authzid.is_empty() {
        &creds.authcid
    } else {
        &creds.authzid
    };
    cut_master_user(name, master_separator).to_vec()
}

/// Whether a login or recipient name may be routed at all. A NUL cannot be part of a
/// Dovecot user name (it ends the name in every C string that carries it), so a name with one
/// is refused before it reaches the core, whatever the protocol or SASL mechanism that
/// delivered it.
pub fn is_routable(name: &[u8]) -> bool {
    !name.is_empty() && !name.contains(&0)
}

/// `name` cut at the first byte of `separator` (unchanged when it is empty).
pub fn cut_master_user<'a>(name: &'a [u8], separator: &str) -> &'a [u8] {
    let seps = separator.as_bytes();
    if seps.is_empty() {
        return name;
    }
    match name.iter().position(|b| seps.contains(b)) {
        Some(i) => &name[..i],
        None => name,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests: a panic is the failure report.
mod tests {
    use super::*;
    use crate::connection::Mechanism;

    fn creds(authzid: &[u8], authcid: &[u8]) -> Credentials {
        Credentials {
            authzid: authzid.to_vec(),
            authcid: authcid.to_vec(),
            password: b"pw".to_vec(),
            mechanism: Mechanism::Plain,
        }
    }

    #[test]
    fn names_with_nul_are_not_routable() {
        assert!(is_routable(b"user@example.com"));
        assert!(!is_routable(b"user\0admin"));
        assert!(!is_routable(b""));
    }

    #[test]
    fn master_user_is_cut() {
        assert_eq!(routing_user(&creds(b"", b"user1*master"), "*"), b"user1");
        assert_eq!(
            routing_user(&creds(b"", b"user1*master"), ""),
            b"user1*master"
        );
        assert_eq!(routing_user(&creds(b"", b"a+b*c"), "*+"), b"a");
    }

    #[test]
    fn authzid_wins() {
        assert_eq!(routing_user(&creds(b"target", b"master"), "*"), b"target");
    }
}
