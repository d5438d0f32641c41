//! The admin listeners' security settings: wildcard refusal, the allow-list, limits, TLS.
#![allow(clippy::unwrap_used)]

use std::net::IpAddr;

use director_config::{Config, DirectorSettings};

fn settings(text: &str) -> Result<DirectorSettings, String> {
    let c = Config::parse_str(text, "t.conf").map_err(|e| e.to_string())?;
    DirectorSettings::from_config(&c).map_err(|e| e.to_string())
}

fn doveadm_listener(body: &str) -> String {
    format!("service director {{\n  inet_listener director-doveadm {{\n{body}\n  }}\n}}\n")
}

#[test]
fn a_wildcard_tcp_admin_address_is_refused_naming_the_setting() {
    for word in ["*", "::", "0.0.0.0", "[::]", "127.0.0.1, *"] {
        let e = settings(&doveadm_listener(&format!(
            "    address = {word}\n    port = 9091"
        )))
        .unwrap_err();
        assert!(
            e.starts_with("t.conf:2:") && e.contains("inet_listener director-doveadm: address = "),
            "{word}: {e}"
        );
        assert!(e.contains("is a wildcard"), "{word}: {e}");
    }
    // No address: the global `listen` applies, and its default is every address.
    let e = settings(&doveadm_listener("    port = 9091")).unwrap_err();
    assert!(
        e.contains(
            "inet_listener director-doveadm has no address, and listen = *, :: is a wildcard"
        ),
        "{e}"
    );
    let e = settings(&format!(
        "listen = ::\n{}",
        doveadm_listener("    port = 9091")
    ))
    .unwrap_err();
    assert!(e.contains("listen = :: is a wildcard"), "{e}");
    // An explicit `listen` or `address` is fine; a disabled listener (port 0) is never bound.
    settings(&format!(
        "listen = 127.0.0.5\n{}",
        doveadm_listener("    port = 9091")
    ))
    .unwrap();
    settings(&doveadm_listener(
        "    address = 127.0.0.5 ::1\n    port = 9091",
    ))
    .unwrap();
    settings(&doveadm_listener("    port = 0")).unwrap();
    // The ring listener is not an admin listener: its wildcard is still allowed.
    settings("service director {\n inet_listener {\n port = 9090\n }\n}\n").unwrap();
}

#[test]
fn allow_nets_default_to_loopback_plus_the_ring() {
    let s = settings(
        "director_servers = 10.0.0.1:9090 10.0.0.2:9090\n\
         service director {\n inet_listener {\n address = 10.0.0.1\n port = 9090\n }\n}\n",
    )
    .unwrap();
    let shown: Vec<String> = s.admin_allow_nets.iter().map(|n| n.to_string()).collect();
    assert_eq!(
        shown,
        ["127.0.0.0/8", "::1/128", "10.0.0.1/32", "10.0.0.2/32"]
    );
    let allowed = |ip: &str| {
        let ip: IpAddr = ip.parse().unwrap();
        s.admin_allow_nets.iter().any(|n| n.contains(ip))
    };
    assert!(allowed("127.1.2.3"));
    assert!(allowed("10.0.0.2"));
    assert!(!allowed("10.0.0.3"));
    assert!(!allowed("192.0.2.1"));

    // A set list replaces the loopback default; the ring's directors stay allowed.
    let s = settings(
        "director_admin_allow_nets = 192.0.2.0/24\ndirector_servers = 10.0.0.1:9090\n\
         service director {\n inet_listener {\n address = 10.0.0.1\n port = 9090\n }\n}\n",
    )
    .unwrap();
    let shown: Vec<String> = s.admin_allow_nets.iter().map(|n| n.to_string()).collect();
    assert_eq!(shown, ["192.0.2.0/24", "10.0.0.1/32"]);

    let e = settings("director_admin_allow_nets = 10.0.0.0/33\n").unwrap_err();
    assert!(
        e.starts_with("t.conf:1: director_admin_allow_nets: Invalid network: 10.0.0.0/33"),
        "{e}"
    );
}

#[test]
fn limits_have_defaults_and_refuse_zero() {
    let s = settings("").unwrap();
    assert_eq!(s.admin_tcp_max_connections, 100);
    assert_eq!(s.admin_idle_timeout_secs, 60);
    let s =
        settings("director_admin_tcp_max_connections = 7\ndirector_admin_idle_timeout = 3 secs\n")
            .unwrap();
    assert_eq!(s.admin_tcp_max_connections, 7);
    assert_eq!(s.admin_idle_timeout_secs, 3);
    for bad in [
        "director_admin_tcp_max_connections = 0",
        "director_admin_idle_timeout = 0",
    ] {
        let e = settings(bad).unwrap_err();
        assert!(e.contains("must be at least 1"), "{bad}: {e}");
    }
}

#[test]
fn tls_listener_needs_its_material() {
    let ssl = doveadm_listener("    address = 127.0.0.5\n    port = 9091\n    ssl = yes");
    let e = settings(&ssl).unwrap_err();
    assert!(
        e.contains("inet_listener director-doveadm has ssl = yes, but ssl_cert is not set"),
        "{e}"
    );
    let e = settings(&format!("ssl_cert = C\n{ssl}")).unwrap_err();
    assert!(e.contains("but ssl_key is not set"), "{e}");
    let e = settings(&format!("ssl = no\nssl_cert = C\nssl_key = K\n{ssl}")).unwrap_err();
    assert!(e.contains("but ssl = no"), "{e}");
    let e = settings(&format!(
        "ssl_cert = C\nssl_key = K\nssl_verify_client_cert = yes\n{ssl}"
    ))
    .unwrap_err();
    assert!(e.contains("but ssl_ca is not set"), "{e}");

    let s = settings(&format!(
        "ssl_cert = C\nssl_key = K\nssl_ca = A\nssl_verify_client_cert = yes\n{ssl}"
    ))
    .unwrap();
    let tls = s.admin_tls.as_ref().unwrap();
    assert_eq!(
        (
            tls.cert_pem.as_str(),
            tls.ca_pem.as_deref(),
            tls.verify_client_cert
        ),
        ("C", Some("A"), true)
    );
    assert!(
        !format!("{s:?}").contains("key_pem: \"K\""),
        "the key never shows in Debug output"
    );
    // Without an ssl=yes admin listener the material is not looked at.
    assert!(settings("ssl_verify_client_cert = yes\n")
        .unwrap()
        .admin_tls
        .is_none());
}
