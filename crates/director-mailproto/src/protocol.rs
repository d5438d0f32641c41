//! The mail protocols the proxy speaks, with the facts about each that are not a state
//! machine: names, Dovecot service names, standard ports, and the lines a client gets when
//! the proxy refuses or ends its connection outside a login conversation.
//!
//! The texts are the ones Dovecot 2.3.19's login processes and LMTP proxy send (recorded in
//! `tests/data/oracle/`).

/// One of the mail protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// IMAP4rev1 (`service imap-login`).
    Imap,
    /// POP3 (`service pop3-login`).
    Pop3,
    /// SMTP submission (`service submission-login`).
    Submission,
    /// ManageSieve (`service managesieve-login`).
    ManageSieve,
    /// LMTP (`service lmtp`).
    Lmtp,
}

impl Protocol {
    /// Every protocol, in config order.
    pub const ALL: [Protocol; 5] = [
        Protocol::Imap,
        Protocol::Pop3,
        Protocol::Submission,
        Protocol::ManageSieve,
        Protocol::Lmtp,
    ];

    /// Name as in Dovecot's `protocols` setting and in logs.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Imap => "imap",
            Protocol::Pop3 => "pop3",
            Protocol::Submission => "submission",
            Protocol::ManageSieve => "sieve",
            Protocol::Lmtp => "lmtp",
        }
    }

    /// The Dovecot service whose `inet_listener`s serve the protocol.
    pub fn service(self) -> &'static str {
        match self {
            Protocol::Imap => "imap-login",
            Protocol::Pop3 => "pop3-login",
            Protocol::Submission => "submission-login",
            Protocol::ManageSieve => "managesieve-login",
            Protocol::Lmtp => "lmtp",
        }
    }

    /// The standard port of the protocol.
    pub fn default_port(self) -> u16 {
        match self {
            Protocol::Imap => 143,
            Protocol::Pop3 => 110,
            Protocol::Submission => 587,
            Protocol::ManageSieve => 4190,
            Protocol::Lmtp => 24,
        }
    }

    /// Dovecot's default port for a listener of this protocol's service named `name`
    /// (`imaps` 993, `pop3s` 995, `submissions` 465, else the plain port).
    pub fn listener_default_port(self, name: &str) -> u16 {
        match name {
            "imaps" => 993,
            "pop3s" => 995,
            "submissions" => 465,
            _ => self.default_port(),
        }
    }

    /// The last line before a client that stayed idle too long before logging in is
    /// disconnected.
    pub fn idle_disconnect(self) -> &'static [u8] {
        match self {
            Protocol::Imap => b"* BYE Disconnected for inactivity.\r\n",
            Protocol::Pop3 => b"-ERR Disconnected for inactivity.\r\n",
            Protocol::Submission | Protocol::Lmtp => b"421 4.4.2 Disconnected for inactivity\r\n",
            Protocol::ManageSieve => b"BYE \"Disconnected for inactivity.\"\r\n",
        }
    }

    /// The last line a client gets when the proxy shuts down.
    pub fn shutting_down(self) -> &'static [u8] {
        match self {
            Protocol::Imap => b"* BYE Server shutting down.\r\n",
            Protocol::Pop3 => b"-ERR Server shutting down.\r\n",
            Protocol::Submission | Protocol::Lmtp => b"421 4.3.2 Server shutting down\r\n",
            Protocol::ManageSieve => b"BYE \"Server shutting down.\"\r\n",
        }
    }

    /// The last line a client gets when its backend connection fails after the login.
    pub fn backend_lost(self) -> &'static [u8] {
        match self {
            Protocol::Imap => b"* BYE [UNAVAILABLE] Lost connection to the mail server.\r\n",
            Protocol::Pop3 => b"-ERR [SYS/TEMP] Lost connection to the mail server.\r\n",
            Protocol::Submission | Protocol::Lmtp => {
                b"421 4.4.2 Lost connection to the mail server\r\n"
            }
            Protocol::ManageSieve => b"BYE \"Lost connection to the mail server.\"\r\n",
        }
    }

    /// The line that refuses a new connection at once (connection limits), with `why`.
    pub fn refusal(self, why: &[u8]) -> Vec<u8> {
        match self {
            Protocol::Imap => [b"* BYE ".as_slice(), why, b"\r\n"].concat(),
            Protocol::Pop3 => [b"-ERR [SYS/TEMP] ".as_slice(), why, b"\r\n"].concat(),
            Protocol::Submission | Protocol::Lmtp => {
                [b"421 4.7.0 ".as_slice(), why, b"\r\n"].concat()
            }
            Protocol::ManageSieve => [b"BYE \"".as_slice(), why, b"\"\r\n"].concat(),
        }
    }
}
