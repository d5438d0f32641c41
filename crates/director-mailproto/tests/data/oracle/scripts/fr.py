import socket
def first_reply(payload, wait=1.5, host='127.0.77.1', port=143, pre=None):
    s=socket.create_connection((host,port)); s.settimeout(wait)
    s.recv(1000)
    if pre:
        s.sendall(pre); s.recv(1000)
    try:
        s.sendall(payload)
    except Exception as e: return 'senderr'
    out=b''
    try:
        while True:
            d=s.recv(65536)
            if not d: out+=b'<EOF>'; break
            out+=d
            if b'\n' in out: break
    except socket.timeout: pass
    except ConnectionResetError: out+=b'<RST>'
    s.close(); return out[:60]
def search(mk, lo, hi, good, **kw):
    while lo<hi:
        mid=(lo+hi+1)//2
        r=first_reply(mk(mid), **kw)
        if good(r): lo=mid
        else: hi=mid-1
    return lo
