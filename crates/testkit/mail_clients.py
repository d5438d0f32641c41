#!/usr/bin/env python3
"""Real mail clients for the proxy tests (testkit::run_mail_clients, testkit::mail_clients_script).

Python's own imaplib, poplib, smtplib (SMTP for Submission, LMTP for LMTP); ManageSieve has
no client in the standard library, so it is a small raw client over a socket. Every command
does many logins in one process (batching keeps the 200-user tests reasonably fast) and prints
one tab-separated line per login, flushed at once.

Usage: mail_clients.py [--tls MODE CAFILE] COMMAND ARGS...
  MODE: plain, ssl (implicit TLS: imap, pop3) or starttls (STARTTLS/STLS: imap, pop3,
  submission); certificates are verified against CAFILE.

  mail_clients.py imap HOST PORT PASSWORD USER...
      USER<TAB>OK<TAB>backend-ip | USER<TAB>NO<TAB>error | USER<TAB>ERR<TAB>error
  mail_clients.py pop3 HOST PORT PASSWORD USER...
      USER<TAB>OK<TAB>message-count | USER<TAB>NO<TAB>error | USER<TAB>ERR<TAB>error
  mail_clients.py submission HOST PORT PASSWORD USER...
      USER<TAB>OK<TAB>- | USER<TAB>NO<TAB>error | USER<TAB>ERR<TAB>error
  mail_clients.py sieve HOST PORT PASSWORD USER...
      USER<TAB>OK<TAB>- | USER<TAB>NO<TAB>error | USER<TAB>ERR<TAB>error
  mail_clients.py lmtp HOST PORT FROM BATCH RCPT...
      transactions of at most BATCH recipients; per recipient: RCPT<TAB>code<TAB>text
      (the RCPT reply if refused, else the recipient's DATA reply)
  mail_clients.py imap-hold HOST PORT PASSWORD N USER
      N concurrent sessions of USER; prints the backend-ip of each, then "READY", waits for
      a line on stdin, logs every session out and prints "DONE"
  mail_clients.py imap-parallel HOST PORT PASSWORD N USER
      the same without waiting: prints only the N backend-ips
"""
import base64
import imaplib
import poplib
import smtplib
import socket
import ssl
import sys
import threading

TIMEOUT = 60

# --tls MODE CAFILE (set by main).
TLS_MODE = "plain"
TLS_CA = None


def tls_context():
    return ssl.create_default_context(cafile=TLS_CA)

# imaplib has no ID command (RFC 2971); register it so _simple_command accepts it.
imaplib.Commands.setdefault("ID", ("NONAUTH", "AUTH", "SELECTED"))


def out(*fields):
    print("\t".join(str(f) for f in fields), flush=True)


def one_line(e):
    return f"{type(e).__name__}: {e}".replace("\t", " ").replace("\n", " ")


def imap_backend_ip(m):
    typ, data = m._simple_command("ID", "NIL")
    typ, data = m._untagged_response(typ, data, "ID")
    text = b" ".join(d for d in data if isinstance(d, bytes)).decode()
    parts = text.replace("(", " ").replace(")", " ").replace('"', " ").split()
    if "backend-ip" in parts:
        return parts[parts.index("backend-ip") + 1]
    return "unknown:" + text


def imap_connect(host, port):
    if TLS_MODE == "ssl":
        return imaplib.IMAP4_SSL(host, port, ssl_context=tls_context(), timeout=TIMEOUT)
    m = imaplib.IMAP4(host, port, timeout=TIMEOUT)
    if TLS_MODE == "starttls":
        m.starttls(ssl_context=tls_context())
    return m


def cmd_imap(host, port, password, users):
    for user in users:
        try:
            m = imap_connect(host, port)
            try:
                m.login(user, password)
            except imaplib.IMAP4.error as e:
                out(user, "NO", one_line(e))
                m.shutdown()
                continue
            ip = imap_backend_ip(m)
            m.logout()
            out(user, "OK", ip)
        except Exception as e:  # noqa: BLE001 - every failure goes to the test
            out(user, "ERR", one_line(e))


def cmd_pop3(host, port, password, users):
    for user in users:
        try:
            if TLS_MODE == "ssl":
                p = poplib.POP3_SSL(host, port, context=tls_context(), timeout=TIMEOUT)
            else:
                p = poplib.POP3(host, port, timeout=TIMEOUT)
                if TLS_MODE == "starttls":
                    p.stls(context=tls_context())
            try:
                p.user(user)
                p.pass_(password)
            except poplib.error_proto as e:
                out(user, "NO", one_line(e))
                p.close()
                continue
            count, _size = p.stat()
            p.quit()
            out(user, "OK", count)
        except Exception as e:  # noqa: BLE001
            out(user, "ERR", one_line(e))


def cmd_submission(host, port, password, users):
    for user in users:
        try:
            s = smtplib.SMTP(host, port, timeout=TIMEOUT)
            s.ehlo("client.example")
            if TLS_MODE == "starttls":
                s.starttls(context=tls_context())
                s.ehlo("client.example")
            try:
                s.login(user, password)
                out(user, "OK", "-")
            except smtplib.SMTPAuthenticationError as e:
                out(user, "NO", one_line(e))
            try:
                s.quit()
            except smtplib.SMTPException:
                pass
        except Exception as e:  # noqa: BLE001
            out(user, "ERR", one_line(e))


class Sieve:
    """Just enough ManageSieve (RFC 5804) for a login: greeting, AUTHENTICATE, LOGOUT."""

    def __init__(self, host, port):
        self.sock = socket.create_connection((host, port), timeout=TIMEOUT)
        self.rd = self.sock.makefile("rb")

    def response(self):
        """Lines up to and including the OK/NO/BYE status line."""
        lines = []
        while True:
            line = self.rd.readline()
            if not line:
                raise EOFError(f"EOF after {lines!r}")
            text = line.decode(errors="replace").rstrip("\r\n")
            lines.append(text)
            if text.split(" ", 1)[0].upper() in ("OK", "NO", "BYE"):
                return lines

    def send(self, text):
        self.sock.sendall(text.encode() + b"\r\n")

    def close(self):
        self.rd.close()
        self.sock.close()


def cmd_sieve(host, port, password, users):
    for user in users:
        try:
            c = Sieve(host, port)
            c.response()
            b64 = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
            c.send(f'AUTHENTICATE "PLAIN" "{b64}"')
            last = c.response()[-1]
            if last.upper().startswith("OK"):
                c.send("LOGOUT")
                c.response()
                out(user, "OK", "-")
            else:
                out(user, "NO", last)
            c.close()
        except Exception as e:  # noqa: BLE001
            out(user, "ERR", one_line(e))


def cmd_lmtp(host, port, sender, batch, rcpts):
    for start in range(0, len(rcpts), batch):
        chunk = rcpts[start:start + batch]
        lmtp = smtplib.LMTP(host, port, timeout=TIMEOUT)
        lmtp.ehlo_or_helo_if_needed()
        lmtp.mail(sender)
        accepted = []
        for r in chunk:
            code, msg = lmtp.rcpt(r)
            if code == 250:
                accepted.append(r)
            else:
                out(r, code, msg.decode(errors="replace"))
        if accepted:
            # A line starting with a dot: DATA must be dot-stuffed on the way through.
            body = (
                f"From: {sender}\r\nTo: {', '.join(accepted)}\r\n"
                "Subject: director routing test\r\n\r\nHello through directord.\r\n"
                ".leading dot line\r\n"
            )
            # LMTP answers DATA with one reply per accepted recipient, in RCPT order.
            code, msg = lmtp.data(body.encode())
            out(accepted[0], code, msg.decode(errors="replace"))
            for r in accepted[1:]:
                code, msg = lmtp.getreply()
                out(r, code, msg.decode(errors="replace"))
        lmtp.quit()


def cmd_imap_hold(host, port, password, n, user, hold=True):
    sessions = [None] * n
    errors = []
    barrier = threading.Barrier(n)

    def login(i):
        try:
            barrier.wait(timeout=TIMEOUT)
            m = imap_connect(host, port)
            m.login(user, password)
            sessions[i] = m
        except Exception as e:  # noqa: BLE001
            errors.append(one_line(e))

    threads = [threading.Thread(target=login, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        out("ERR", "; ".join(errors))
        return
    for m in sessions:
        out(imap_backend_ip(m))
    if hold:
        out("READY")
        sys.stdin.readline()
    for m in sessions:
        m.logout()
    if hold:
        out("DONE")


def main():
    global TLS_MODE, TLS_CA
    argv = sys.argv[1:]
    if argv[:1] == ["--tls"]:
        TLS_MODE, TLS_CA, argv = argv[1], argv[2], argv[3:]
        if TLS_MODE not in ("plain", "ssl", "starttls"):
            sys.exit(f"unknown TLS mode {TLS_MODE}")
    cmd, a = argv[0], argv[1:]
    if cmd == "imap":
        cmd_imap(a[0], int(a[1]), a[2], a[3:])
    elif cmd == "pop3":
        cmd_pop3(a[0], int(a[1]), a[2], a[3:])
    elif cmd == "submission":
        cmd_submission(a[0], int(a[1]), a[2], a[3:])
    elif cmd == "sieve":
        cmd_sieve(a[0], int(a[1]), a[2], a[3:])
    elif cmd == "lmtp":
        cmd_lmtp(a[0], int(a[1]), a[2], int(a[3]), a[4:])
    elif cmd == "imap-hold":
        cmd_imap_hold(a[0], int(a[1]), a[2], int(a[3]), a[4])
    elif cmd == "imap-parallel":
        cmd_imap_hold(a[0], int(a[1]), a[2], int(a[3]), a[4], hold=False)
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
