//! Which replies a driver delays by `auth_failure_delay`: each machine's own refusal of the
//! credentials, and nothing else (temporary failures and other errors go out at once).

use director_mailproto::imap::ImapLogin;
use director_mailproto::managesieve::SieveLogin;
use director_mailproto::pop3::Pop3Login;
use director_mailproto::submission::SubmissionLogin;

#[test]
fn each_protocol_recognises_its_own_authentication_failure() {
    assert!(ImapLogin::is_auth_failure(
        b"a1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"
    ));
    assert!(!ImapLogin::is_auth_failure(
        b"a1 NO [UNAVAILABLE] Account is temporarily unavailable.\r\n"
    ));
    assert!(!ImapLogin::is_auth_failure(
        b"* OK [AUTHENTICATIONFAILED]\r\n"
    ));

    assert!(Pop3Login::is_auth_failure(
        b"-ERR [AUTH] Authentication failed.\r\n"
    ));
    assert!(!Pop3Login::is_auth_failure(
        b"-ERR [SYS/TEMP] Temporary failure\r\n"
    ));

    assert!(SubmissionLogin::is_auth_failure(
        b"535 5.7.8 Authentication failed.\r\n"
    ));
    assert!(!SubmissionLogin::is_auth_failure(
        b"454 4.7.0 Temporary authentication failure\r\n"
    ));

    // ManageSieve's refusal carries no response code: it is recognised by its text.
    assert!(SieveLogin::is_auth_failure(
        b"NO \"Authentication failed.\"\r\n"
    ));
    assert!(!SieveLogin::is_auth_failure(
        b"NO (TRYLATER) \"Temporary failure\"\r\n"
    ));
}
