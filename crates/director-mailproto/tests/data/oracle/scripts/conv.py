import socket,time,sys
def conv(steps, host='127.0.77.1', port=143, show=300, wait=0.5):
    s=socket.create_connection((host,port)); s.settimeout(wait)
    def rd():
        out=b''
        while True:
            try: d=s.recv(65536)
            except socket.timeout: return out
            except ConnectionResetError: return out+b'<RST>'
            if not d: return out+b'<EOF>'
            out+=d
    print('S:', rd()[:show])
    for st in steps:
        try: s.sendall(st)
        except Exception as e: print('send err',e); break
        print('C:', st[:80], len(st)); r=rd(); print('S:', r[:show])
        if r.endswith(b'<EOF>') or r.endswith(b'<RST>'): break
    print('-----')
import struct
def pv2(port):
    src=bytes([10,9,8,7]); dst=bytes([10,9,8,1])
    return b'\r\n\r\n\x00\r\nQUIT\n'+bytes([0x21,0x11])+struct.pack('>H',12)+src+dst+struct.pack('>HH',40000,port)
