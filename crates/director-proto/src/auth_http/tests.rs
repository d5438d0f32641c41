use super::*;
use proptest::prelude::*;

/// The request nginx 1.22 sends for an IMAP login (the example of nginx's protocol
/// documentation, with our values).
const NGINX_IMAP: &[u8] = b"GET /auth HTTP/1.0\r\n\
Host: 127.0.0.1\r\n\
Auth-Method: plain\r\n\
Auth-User: user%20one\r\n\
Auth-Pass: secret%25\r\n\
Auth-Protocol: imap\r\n\
Auth-Login-Attempt: 1\r\n\
Client-IP: 192.0.2.42\r\n\
Client-Host: [UNAVAILABLE]\r\n\
\r\n";

fn read_all(data: &[u8]) -> Result<Option<Request>, RequestError> {
    RequestReader::new().feed(data)
}

fn login(data: &[u8]) -> Result<AuthRequest, AuthRequestError> {
    AuthRequest::from_request(&read_all(data).unwrap().unwrap())
}

#[test]
fn reads_nginx_request_byte_by_byte() {
    let mut r = RequestReader::new();
    let mut got = None;
    for (i, b) in NGINX_IMAP.iter().enumerate() {
        let out = r.feed(std::slice::from_ref(b)).unwrap();
        if i + 1 < NGINX_IMAP.len() {
            assert!(out.is_none(), "complete before the blank line at {i}");
        } else {
            got = out;
        }
    }
    let req = got.unwrap();
    assert_eq!(req.method, "GET");
    assert_eq!(req.target, b"/auth");
    assert_eq!(req.headers.len(), 8);
    let a = AuthRequest::from_request(&req).unwrap();
    assert_eq!(
        a,
        AuthRequest {
            user: b"user one".to_vec(),
            protocol: MailProtocol::Imap,
            client_ip: Some("192.0.2.42".parse().unwrap()),
            login_attempt: Some(1),
        }
    );
    assert!(r.finish().is_ok());
}

#[test]
fn bare_lf_and_case_insensitive_names() {
    let a = login(b"GET / HTTP/1.1\nauth-user: a@b\nAUTH-PROTOCOL: POP3\n\n").unwrap();
    assert_eq!(a.user, b"a@b");
    assert_eq!(a.protocol, MailProtocol::Pop3);
    assert_eq!(a.client_ip, None);
}

#[test]
fn missing_and_bad_headers_are_named() {
    assert_eq!(
        login(b"GET / HTTP/1.0\r\nAuth-Protocol: imap\r\n\r\n"),
        Err(AuthRequestError::Missing("Auth-User"))
    );
    assert_eq!(
        login(b"GET / HTTP/1.0\r\nAuth-User: u\r\n\r\n"),
        Err(AuthRequestError::Missing("Auth-Protocol"))
    );
    assert_eq!(
        login(b"GET / HTTP/1.0\r\nAuth-User: u\r\nAuth-Protocol: lmtp\r\n\r\n"),
        Err(AuthRequestError::UnknownProtocol)
    );
    assert_eq!(
        login(b"GET / HTTP/1.0\r\nAuth-User: u\r\nAuth-User: v\r\nAuth-Protocol: imap\r\n\r\n"),
        Err(AuthRequestError::Repeated("Auth-User"))
    );
    assert_eq!(
        login(b"GET / HTTP/1.0\r\nAuth-User: u%4\r\nAuth-Protocol: imap\r\n\r\n"),
        Err(AuthRequestError::BadUser)
    );
    assert_eq!(
        login(b"GET / HTTP/1.0\r\nAuth-User:\r\nAuth-Protocol: imap\r\n\r\n"),
        Err(AuthRequestError::BadUser)
    );
    assert_eq!(
        login(b"GET / HTTP/1.0\r\nAuth-User: u\r\nAuth-Protocol: smtp\r\nClient-IP: x\r\n\r\n"),
        Err(AuthRequestError::BadClientIp)
    );
    assert_eq!(
        login(b"POST / HTTP/1.0\r\nAuth-User: u\r\nAuth-Protocol: smtp\r\n\r\n"),
        Err(AuthRequestError::Method("POST".into()))
    );
    assert_eq!(
        AuthRequestError::Missing("Auth-User").to_string(),
        "missing header Auth-User"
    );
}

#[test]
fn percent_escapes() {
    assert_eq!(percent_decode(b"a%00b%7e%7E").unwrap(), b"a\0b~~");
    assert_eq!(percent_decode(b"%"), None);
    assert_eq!(percent_decode(b"%g0"), None);
    assert_eq!(percent_decode(b"100%2"), None);
}

#[test]
fn malformed_requests() {
    assert_eq!(
        read_all(b"GET /\r\n\r\n"),
        Err(RequestError::BadRequestLine)
    );
    assert_eq!(
        read_all(b"GET / HTTP/2.0\r\n\r\n"),
        Err(RequestError::BadVersion)
    );
    assert_eq!(
        read_all(b"GET / HTTP/1.0\r\nno colon\r\n\r\n"),
        Err(RequestError::BadHeader)
    );
    assert_eq!(
        read_all(b"GET / HTTP/1.0\r\nA: b\r\n  folded\r\n\r\n"),
        Err(RequestError::FoldedHeader)
    );
    assert_eq!(
        read_all(b"GET / HTTP/1.0\r\nContent-Length: 5\r\n\r\nhello"),
        Err(RequestError::Body)
    );
    assert!(read_all(b"GET / HTTP/1.0\r\nContent-Length: 0\r\n\r\n").is_ok());
    let mut r = RequestReader::new();
    assert_eq!(r.feed(b"GET / HTTP/1.0\r\nA: b\r\n"), Ok(None));
    assert_eq!(r.finish(), Err(RequestError::Truncated));
}

#[test]
fn limits_hold() {
    // A line of exactly the limit passes, with CR LF or LF; one byte more does not.
    let name = "X-A: ";
    let value = "v".repeat(MAX_LINE_LEN - name.len());
    let ok = format!("GET / HTTP/1.0\r\n{name}{value}\r\n\r\n");
    assert!(read_all(ok.as_bytes()).unwrap().is_some());
    let ok_lf = format!("GET / HTTP/1.0\n{name}{value}\n\n");
    assert!(read_all(ok_lf.as_bytes()).unwrap().is_some());
    let long = format!("GET / HTTP/1.0\r\n{name}{value}v\r\n\r\n");
    assert_eq!(read_all(long.as_bytes()), Err(RequestError::LineTooLong));
    // An endless line is refused as soon as it passes the limit.
    let mut r = RequestReader::new();
    assert_eq!(
        r.feed(&vec![b'a'; MAX_LINE_LEN + 10]),
        Err(RequestError::LineTooLong)
    );
    assert!(r.buffered() <= MAX_LINE_LEN + 2);

    let mut many = String::from("GET / HTTP/1.0\r\n");
    for i in 0..MAX_HEADERS {
        many.push_str(&format!("X-{i}: v\r\n"));
    }
    assert!(read_all(format!("{many}\r\n").as_bytes())
        .unwrap()
        .is_some());
    many.push_str("X-last: v\r\n\r\n");
    assert_eq!(read_all(many.as_bytes()), Err(RequestError::TooManyHeaders));

    // Blank lines before the request line count towards the total only.
    let blanks = vec![b'\n'; MAX_REQUEST_LEN + 1];
    assert_eq!(read_all(&blanks), Err(RequestError::TooLong));
}

fn encoded(r: &AuthResponse<'_>) -> String {
    let mut out = Vec::new();
    encode_response(r, &mut out);
    String::from_utf8(out).unwrap()
}

#[test]
fn responses_as_nginx_reads_them() {
    assert_eq!(
        encoded(&AuthResponse::Ok {
            server: "127.0.0.1".parse().unwrap(),
            port: 143
        }),
        "HTTP/1.0 200 OK\r\nAuth-Status: OK\r\nAuth-Server: 127.0.0.1\r\nAuth-Port: 143\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    assert_eq!(
        encoded(&AuthResponse::TryLater {
            message: "Temporary server problem, try again later",
            wait_secs: 3,
            smtp: true
        }),
        "HTTP/1.0 200 OK\r\nAuth-Status: Temporary server problem, try again later\r\n\
         Auth-Error-Code: 451 4.3.0\r\nAuth-Wait: 3\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    assert_eq!(
        encoded(&AuthResponse::Refused {
            message: "bad\r\nInjected: yes"
        }),
        "HTTP/1.0 200 OK\r\nAuth-Status: bad  Injected: yes\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let mut out = Vec::new();
    encode_bad_request(&RequestError::TooLong, &mut out);
    assert!(out.starts_with(b"HTTP/1.0 400 Bad Request\r\nAuth-Status: the request"));
}

proptest! {
    #[test]
    fn never_panics_and_stays_bounded(
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..600), 0..60)
    ) {
        let mut r = RequestReader::new();
        for c in &chunks {
            if let Ok(Some(req)) = r.feed(c) {
                let _ = AuthRequest::from_request(&req);
            }
            prop_assert!(r.buffered() <= MAX_REQUEST_LEN);
        }
        let _ = r.finish();
    }

    #[test]
    fn any_user_name_roundtrips_through_escaping(user in proptest::collection::vec(1u8.., 1..80)) {
        // nginx escapes at least `%`, blanks and control bytes; escape every byte here.
        let escaped: String = user.iter().map(|b| format!("%{b:02X}")).collect();
        let req = format!("GET /auth HTTP/1.0\r\nAuth-User: {escaped}\r\nAuth-Protocol: imap\r\n\r\n");
        let a = login(req.as_bytes()).unwrap();
        prop_assert_eq!(a.user, user);
    }

    #[test]
    fn responses_are_one_header_block(message in "\\PC{0,60}|[\\x00-\\x7f]{0,60}") {
        for r in [
            AuthResponse::Refused { message: &message },
            AuthResponse::TryLater { message: &message, wait_secs: 1, smtp: false },
        ] {
            let out = encoded(&r);
            prop_assert!(out.ends_with("\r\n\r\n"));
            prop_assert_eq!(out.matches("\r\n\r\n").count(), 1);
            prop_assert_eq!(out.matches('\n').count(), out.matches("\r\n").count());
        }
    }
}
