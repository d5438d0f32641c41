import socket, sys, time, ast
# usage: probe.py host port 'b"..."' 'b"..."' ...   (each arg: python bytes literal to send; read after each)
host, port = sys.argv[1], int(sys.argv[2])
s = socket.create_connection((host, port), timeout=5)
import os, struct
if os.environ.get('PROXYV2'):
    src=bytes([10,9,8,7]); dst=bytes([10,9,8,1])
    hdr=b'\r\n\r\n\x00\r\nQUIT\n'+bytes([0x21,0x11])+struct.pack('>H',12)+src+dst+struct.pack('>HH',40000,port-10000)
    s.sendall(hdr)
def rd(quiet=0.4, total=4.0):
    out=b''; end=time.time()+total
    s.settimeout(quiet)
    while time.time()<end:
        try:
            d=s.recv(65536)
        except socket.timeout:
            if out: break
            continue
        if not d: out+=b'<EOF>'; break
        out+=d
    return out
print('S:', rd())
for a in sys.argv[3:]:
    wait=0.4
    if a.startswith('W'):
        wait=float(a[1:a.index(':')]); a=a[a.index(':')+1:]
    b=ast.literal_eval(a)
    s.sendall(b); print('C:', b)
    r=rd(quiet=wait, total=max(4.0, wait+1)); print('S:', r)
    if r.endswith(b'<EOF>'): break
