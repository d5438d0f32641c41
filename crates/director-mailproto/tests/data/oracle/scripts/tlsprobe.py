import socket, ssl, time, sys
from conv import pv2
def rd(s, wait=0.6):
    s.settimeout(wait); out=b''
    while True:
        try: d=s.recv(65536)
        except (socket.timeout, ssl.SSLError): return out
        if not d: return out+b'<EOF>'
        out+=d
def run(port, pre, starttls_cmd, after):
    s=socket.create_connection(('127.0.77.3', port)); s.sendall(pv2(port-10000 if port>10000 else port))
    print('S:', rd(s)[:150])
    for p in pre:
        s.sendall(p); print('C:', p, '\nS:', rd(s)[:400])
    s.sendall(starttls_cmd); print('C:', starttls_cmd, '\nS:', rd(s))
    ctx=ssl.create_default_context(); ctx.check_hostname=False; ctx.verify_mode=ssl.CERT_NONE
    t=ctx.wrap_socket(s, server_hostname='localhost')
    print('after TLS S:', rd(t, 1.0))
    for p in after:
        t.sendall(p); print('C:', p, '\nS:', rd(t)[:600])
    print('-----')
run(10143, [], b'a STARTTLS\r\n', [b'b CAPABILITY\r\n', b'c STARTTLS\r\n'])
run(10110, [], b'STLS\r\n', [b'CAPA\r\n', b'STLS\r\n', b'AUTH\r\n'])
run(10587, [b'EHLO x\r\n'], b'STARTTLS\r\n', [b'EHLO y\r\n', b'STARTTLS\r\n', b'MAIL FROM:<a>\r\n'])
run(14190, [], b'STARTTLS\r\n', [b'CAPABILITY\r\n', b'STARTTLS\r\n'])
