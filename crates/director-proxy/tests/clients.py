#!/usr/bin/env python3
"""Real mail clients (Python's imaplib, poplib, smtplib.LMTP) driven by the proxy tests.

Usage:
  clients.py imap HOST PORT MODE CAFILE PASSWORD USER...   MODE: plain | ssl | starttls
      prints per user: USER<TAB>OK<TAB>backend-ip   or   USER<TAB>NO<TAB>error
  clients.py imap-parallel HOST PORT PASSWORD N USER
      opens N sessions of USER at once, prints the backend-ip of each, then logs out all
  clients.py pop3 HOST PORT MODE CAFILE PASSWORD USER...   MODE: plain | ssl | stls
      prints per user: USER<TAB>OK<TAB>message-count   or   USER<TAB>NO<TAB>error
  clients.py lmtp HOST PORT FROM RCPT...
      one transaction to all recipients; prints one line per recipient: RCPT<TAB>code<TAB>text
  clients.py submission HOST PORT MODE CAFILE PASSWORD USER   MODE: plain | starttls
      EHLO + AUTH PLAIN through smtplib; prints OK or NO<TAB>error
"""
import imaplib
import poplib
import smtplib
import ssl
import sys

# imaplib has no ID command (RFC 2971); register it so _simple_command accepts it.
imaplib.Commands.setdefault("ID", ("NONAUTH", "AUTH", "SELECTED"))


def tls_context(cafile):
    ctx = ssl.create_default_context(cafile=cafile)
    return ctx


def imap_connect(host, port, mode, cafile):
    if mode == "ssl":
        return imaplib.IMAP4_SSL(host, port, ssl_context=tls_context(cafile), timeout=60)
    m = imaplib.IMAP4(host, port, timeout=60)
    if mode == "starttls":
        m.starttls(ssl_context=tls_context(cafile))
    return m


def imap_backend_ip(m):
    typ, data = m._simple_command("ID", "NIL")
    typ, data = m._untagged_response(typ, data, "ID")
    text = b" ".join(d for d in data if isinstance(d, bytes)).decode()
    parts = text.replace("(", " ").replace(")", " ").replace('"', " ").split()
    if "backend-ip" in parts:
        return parts[parts.index("backend-ip") + 1]
    return "unknown:" + text


def cmd_imap(args):
    host, port, mode, cafile, password = args[0], int(args[1]), args[2], args[3], args[4]
    for user in args[5:]:
        try:
            m = imap_connect(host, port, mode, cafile)
            try:
                m.login(user, password)
            except imaplib.IMAP4.error as e:
                print(f"{user}\tNO\t{e}", flush=True)
                m.shutdown()
                continue
            ip = imap_backend_ip(m)
            m.logout()
            print(f"{user}\tOK\t{ip}", flush=True)
        except Exception as e:  # noqa: BLE001 - report every failure to the test
            print(f"{user}\tERR\t{type(e).__name__}: {e}", flush=True)


def cmd_imap_parallel(args):
    host, port, password, n, user = args[0], int(args[1]), args[2], int(args[3]), args[4]
    sessions = []
    for _ in range(n):
        m = imaplib.IMAP4(host, port, timeout=60)
        m.login(user, password)
        sessions.append(m)
    for m in sessions:
        print(imap_backend_ip(m), flush=True)
    for m in sessions:
        m.logout()


def cmd_pop3(args):
    host, port, mode, cafile, password = args[0], int(args[1]), args[2], args[3], args[4]
    for user in args[5:]:
        try:
            if mode == "ssl":
                p = poplib.POP3_SSL(host, port, context=tls_context(cafile), timeout=60)
            else:
                p = poplib.POP3(host, port, timeout=60)
                if mode == "stls":
                    p.stls(context=tls_context(cafile))
            try:
                p.user(user)
                p.pass_(password)
            except poplib.error_proto as e:
                print(f"{user}\tNO\t{e}", flush=True)
                p.close()
                continue
            count, _size = p.stat()
            p.quit()
            print(f"{user}\tOK\t{count}", flush=True)
        except Exception as e:  # noqa: BLE001
            print(f"{user}\tERR\t{type(e).__name__}: {e}", flush=True)


def cmd_lmtp(args):
    host, port, sender, rcpts = args[0], int(args[1]), args[2], args[3:]
    lmtp = smtplib.LMTP(host, port, timeout=60)
    code, _ = lmtp.ehlo_or_helo_if_needed() or (None, None)
    lmtp.mail(sender)
    accepted = []
    for r in rcpts:
        code, msg = lmtp.rcpt(r)
        if code == 250:
            accepted.append(r)
        else:
            print(f"{r}\t{code}\t{msg.decode(errors='replace')}", flush=True)
    if accepted:
        body = (
            f"From: {sender}\r\nTo: {', '.join(accepted)}\r\nSubject: proxy fan-out test\r\n\r\n"
            "Hello through the director.\r\n.leading dot line\r\n"
        )
        # LMTP answers DATA with one reply per accepted recipient, in RCPT order.
        code, msg = lmtp.data(body.encode())
        print(f"{accepted[0]}\t{code}\t{msg.decode(errors='replace')}", flush=True)
        for r in accepted[1:]:
            code, msg = lmtp.getreply()
            print(f"{r}\t{code}\t{msg.decode(errors='replace')}", flush=True)
    lmtp.quit()


def cmd_submission(args):
    host, port, mode, cafile, password, user = args[0], int(args[1]), args[2], args[3], args[4], args[5]
    s = smtplib.SMTP(host, port, timeout=60)
    s.ehlo("client.example")
    if mode == "starttls":
        s.starttls(context=tls_context(cafile))
        s.ehlo("client.example")
    try:
        s.login(user, password)
        print("OK", flush=True)
    except smtplib.SMTPException as e:
        print(f"NO\t{e}", flush=True)
    try:
        s.quit()
    except smtplib.SMTPException:
        pass


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    {
        "imap": cmd_imap,
        "imap-parallel": cmd_imap_parallel,
        "pop3": cmd_pop3,
        "lmtp": cmd_lmtp,
        "submission": cmd_submission,
    }[cmd](args)


if __name__ == "__main__":
    main()
