//! The nginx `auth_http` listener (`inet_listener director-auth-http`): sticky routing for
//! sites whose proxy tier is nginx's mail proxy.
//!
//! nginx asks, for each login, one HTTP request (`director_proto::auth_http`); we route the
//! login's user through [`DirectorHandle::login`], exactly as the built-in proxy does (the
//! same backend `doveadm director status USER` names; the assignment is created or
//! refreshed), and answer `Auth-Server`/`Auth-Port`. Passwords are never checked here:
//! `Auth-Pass` is not even read, the backend checks it when nginx logs in there.
//!
//! Like the TCP admin listener, it creates user assignments for whoever reaches it, so it
//! binds only an explicit address (director-config refuses a wildcard), serves only peers in
//! `director_auth_http_allow_nets` (default loopback), and has its own pool of
//! `director_auth_http_max_connections` slots. A client that has not sent its request within
//! `director_auth_http_timeout` is closed; a login that waits longer than
//! `director_auth_http_login_timeout` for the director (a user being moved, no host up), a
//! routing error, or a stopped driver, answers nginx's temporary failure with `Auth-Wait`:
//! nginx never hangs on us.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use director_config::IpNet;
use director_driver::{DirectorHandle, RequestError};
use director_proto::auth_http::{
    encode_response, AuthRequest, AuthResponse, MailProtocol, Request,
};
use director_proto::log_text::LogText;
use tokio::net::TcpListener;

use crate::admin::listener::{ListenerError, PeerName};

/// The `Auth-Status` text of a temporary failure (nginx's documented SMTP example); nginx
/// gives it to the client after `Auth-Wait` seconds and lets it retry.
pub const TEMPORARY_FAILURE: &str = "Temporary server problem, try again later";

/// Login attempts of one client connection (`Auth-Login-Attempt`) after which a temporary
/// failure no longer carries `Auth-Wait`, so nginx closes the connection: nginx keeps memory
/// per attempt until the session ends, and its documentation asks the server to stop
/// offering retries after 10-20 attempts.
pub const MAX_RETRY_ATTEMPTS: u32 = 10;

/// The backend port of each protocol nginx proxies (`director_backend_port_imap`, `_pop3`,
/// and `_submission` for nginx's `smtp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendPorts {
    /// IMAP.
    pub imap: u16,
    /// POP3.
    pub pop3: u16,
    /// SMTP (the backends' submission service).
    pub smtp: u16,
}

impl BackendPorts {
    fn get(&self, protocol: MailProtocol) -> u16 {
        match protocol {
            MailProtocol::Imap => self.imap,
            MailProtocol::Pop3 => self.pop3,
            MailProtocol::Smtp => self.smtp,
        }
    }
}

/// The auth_http listeners and their policy.
#[derive(Debug, Clone)]
pub struct AuthHttpSettings {
    /// Where they bind (never a wildcard); usually none.
    pub listeners: Vec<SocketAddr>,
    /// `director_auth_http_allow_nets`.
    pub allow_nets: Vec<IpNet>,
    /// `director_auth_http_max_connections`.
    pub max_connections: usize,
    /// `director_auth_http_timeout`: the whole request must arrive within it (and the
    /// answer be taken within it).
    pub request_timeout: Duration,
    /// `director_auth_http_login_timeout`: the longest wait for the director's answer.
    pub login_timeout: Duration,
    /// `director_auth_http_wait`: the `Auth-Wait` of a temporary failure.
    pub wait_secs: u32,
    /// Backend ports by protocol.
    pub ports: BackendPorts,
    /// `auth_master_user_separator`: `user*master` routes as `user`, as in the proxy.
    pub master_user_separator: String,
}

impl AuthHttpSettings {
    /// Whether a client at `ip` may use the listeners.
    pub fn allows(&self, ip: IpAddr) -> bool {
        self.allow_nets.iter().any(|n| n.contains(ip))
    }
}

/// Binds every auth_http listener.
pub fn bind_all(
    settings: &AuthHttpSettings,
) -> Result<Vec<(SocketAddr, TcpListener)>, ListenerError> {
    crate::http::bind_explicit(&settings.listeners, "an auth_http listener")
}

/// The auth_http listeners' service: nginx's requests answered through the director.
pub struct AuthHttp {
    settings: AuthHttpSettings,
    director: DirectorHandle,
}

impl AuthHttp {
    /// Serves nginx's requests with `settings`, routing through `director`.
    pub fn server(
        settings: &AuthHttpSettings,
        director: DirectorHandle,
    ) -> crate::http::HttpServer<AuthHttp> {
        crate::http::HttpServer::new(
            AuthHttp {
                settings: settings.clone(),
                director,
            },
            settings.max_connections,
        )
    }
}

impl crate::http::HttpService for AuthHttp {
    const NAME: &'static str = "auth_http";
    const ALLOW_NETS_SETTING: &'static str = "director_auth_http_allow_nets";
    const TIMEOUT_SETTING: &'static str = "director_auth_http_timeout";

    fn allows(&self, ip: IpAddr) -> bool {
        self.settings.allows(ip)
    }

    fn timeout(&self) -> Duration {
        self.settings.request_timeout
    }

    async fn answer(&self, request: &Request, peer: &PeerName) -> Vec<u8> {
        answer(request, &self.settings, &self.director, peer).await
    }
}

/// The answer to one request (the response bytes).
pub async fn answer(
    request: &Request,
    settings: &AuthHttpSettings,
    director: &DirectorHandle,
    peer: &PeerName,
) -> Vec<u8> {
    let mut out = Vec::new();
    let login = match AuthRequest::from_request(request) {
        Ok(login) => login,
        Err(e) => {
            let message = e.to_string();
            tracing::warn!(peer = %peer, error = %message, "auth_http request refused");
            encode_response(&AuthResponse::Refused { message: &message }, &mut out);
            return out;
        }
    };
    let name =
        director_mailproto::routing::cut_master_user(&login.user, &settings.master_user_separator);
    if !director_mailproto::routing::is_routable(name) {
        tracing::warn!(peer = %peer, user = %LogText(&login.user), "auth_http request refused: the user name cannot be routed");
        encode_response(
            &AuthResponse::Refused {
                message: "the user name cannot be routed",
            },
            &mut out,
        );
        return out;
    }
    let try_later = if login.login_attempt.is_some_and(|n| n >= MAX_RETRY_ATTEMPTS) {
        AuthResponse::Refused {
            message: TEMPORARY_FAILURE,
        }
    } else {
        AuthResponse::TryLater {
            message: TEMPORARY_FAILURE,
            wait_secs: settings.wait_secs,
            smtp: login.protocol == MailProtocol::Smtp,
        }
    };
    let routed = tokio::time::timeout(settings.login_timeout, director.login(name.to_vec())).await;
    let user = LogText(name);
    let client = login.client_ip.map(|ip| ip.to_string()).unwrap_or_default();
    let protocol = login.protocol.name();
    let response = match routed {
        Ok(Some(Ok(route))) => {
            let port = settings.ports.get(login.protocol);
            tracing::debug!(peer = %peer, %user, protocol, client, backend = %route.ip, port, new_user = route.new_user, "auth_http login routed");
            AuthResponse::Ok {
                server: route.ip,
                port,
            }
        }
        Ok(Some(Err(e @ RequestError::HashFailed(_)))) => {
            tracing::error!(peer = %peer, %user, protocol, client, error = %e, "auth_http login not routed");
            try_later
        }
        Ok(Some(Err(e))) => {
            tracing::warn!(peer = %peer, %user, protocol, client, error = %e, "auth_http login not routed, nginx is told to retry");
            try_later
        }
        Ok(None) => {
            tracing::error!(peer = %peer, %user, protocol, client, "auth_http login not routed: the director has stopped");
            try_later
        }
        Err(_) => {
            tracing::warn!(peer = %peer, %user, protocol, client, "auth_http login not routed within director_auth_http_login_timeout, nginx is told to retry");
            try_later
        }
    };
    encode_response(&response, &mut out);
    out
}

#[cfg(test)]
mod tests;
