//! The nginx auth_http listener's settings: off unless configured, an explicit address only,
//! its allow-list and limits, and never mistaken for the ring listener.
#![allow(clippy::unwrap_used)]

use std::net::IpAddr;

use director_config::{Config, DirectorSettings, ListenerTransport, SocketType};

fn settings(text: &str) -> Result<DirectorSettings, String> {
    let c = Config::parse_str(text, "t.conf").map_err(|e| e.to_string())?;
    DirectorSettings::from_config(&c).map_err(|e| e.to_string())
}

fn listener(body: &str) -> String {
    format!("service director {{\n  inet_listener director-auth-http {{\n{body}\n  }}\n}}\n")
}

#[test]
fn off_unless_configured_and_with_the_catalogue_defaults() {
    let s = settings("").unwrap();
    assert!(s.auth_http_listeners.is_empty());
    let shown: Vec<String> = s
        .auth_http_allow_nets
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(shown, ["127.0.0.0/8", "::1/128"]);
    assert_eq!(s.auth_http_max_connections, 1000);
    assert_eq!(s.auth_http_timeout_secs, 10);
    assert_eq!(s.auth_http_login_timeout_secs, 30);
    assert_eq!(s.auth_http_wait_secs, 3);
}

#[test]
fn a_listener_with_an_address_is_served_and_is_not_the_ring() {
    let s = settings(&format!(
        "director_auth_http_allow_nets = 192.0.2.0/24\n\
         director_auth_http_max_connections = 5\n\
         director_auth_http_timeout = 2 secs\n\
         director_auth_http_login_timeout = 1 min\n\
         director_auth_http_wait = 10 secs\n{}",
        listener("    address = 127.0.0.5\n    port = 9080")
    ))
    .unwrap();
    assert_eq!(s.auth_http_listeners.len(), 1);
    let l = &s.auth_http_listeners[0];
    assert_eq!(l.socket_type, SocketType::AuthHttp);
    assert!(
        matches!(&l.transport, ListenerTransport::Inet { addresses, port: 9080, .. } if addresses == &["127.0.0.5"])
    );
    assert!(s.ring_listener.is_none(), "not a ring listener");
    let allowed = |ip: &str| {
        let ip: IpAddr = ip.parse().unwrap();
        s.auth_http_allow_nets.iter().any(|n| n.contains(ip))
    };
    assert!(allowed("192.0.2.7"));
    assert!(
        !allowed("127.0.0.1"),
        "a set list replaces the loopback default"
    );
    assert_eq!(s.auth_http_max_connections, 5);
    assert_eq!(s.auth_http_timeout_secs, 2);
    assert_eq!(s.auth_http_login_timeout_secs, 60);
    assert_eq!(s.auth_http_wait_secs, 10);
}

#[test]
fn a_wildcard_address_is_refused() {
    for word in ["*", "::", "0.0.0.0"] {
        let e = settings(&listener(&format!("    address = {word}\n    port = 9080"))).unwrap_err();
        assert!(
            e.contains(&format!(
                "inet_listener director-auth-http: address = {word} is a wildcard: an auth_http \
                 listener binds only an explicit address"
            )),
            "{word}: {e}"
        );
    }
    let e = settings(&listener("    port = 9080")).unwrap_err();
    assert!(
        e.contains("has no address, and listen = *, :: is a wildcard: an auth_http listener"),
        "{e}"
    );
}

#[test]
fn bad_values_are_errors_naming_the_setting() {
    for (text, key) in [
        (
            "director_auth_http_max_connections = 0",
            "director_auth_http_max_connections",
        ),
        (
            "director_auth_http_timeout = 0",
            "director_auth_http_timeout",
        ),
        (
            "director_auth_http_login_timeout = 0",
            "director_auth_http_login_timeout",
        ),
        (
            "director_auth_http_allow_nets = 300.1.1.1",
            "director_auth_http_allow_nets",
        ),
    ] {
        let e = settings(&format!("{text}\n")).unwrap_err();
        assert!(e.contains(key), "{text}: {e}");
    }
}
