#!/usr/bin/env python3
"""Record director_username_hash results from real doveadm (Dovecot 2.3) into
var_expand_doveadm.json. `doveadm director map -u USER` hashes locally (no director needed).

Usage: python3 record_var_expand_oracle.py [OUT.json]
Needs: apt-get install -y dovecot-core
"""
import json, os, subprocess, sys, tempfile

TEMPLATES = ["%u", "%Lu", "%Uu", "%n", "%d", "%Ln", "%Ld", "%n@%d", "%Ru", "%LRu", "%Tu", "%Mu",
             "%Xu", "%Hu", "%4Hu", "%4.256Hu", "%Nu", "%8Nu", "%3u", "%1.2u", "%-2.2u", "%-2u",
             "%0.-2u", "%05u", "%.3u", "%10.2u", "%%u", "100%", "%{user}", "%L{user}",
             "%{username}", "%{domain}", "%L{username}@x", "%Du", "%Eu", "pre-%u-post", "%2.1n",
             "%-3.-1u", "%05.3u", "%U%L%u", "%LLLLLLLLLLLu", "%d%n%u", "%{user", "%L", "%-5u",
             "%0u", "%00u", "%.0u", "%5.0u", "%-0.3u", "%-3Hu", "%2.8Nu", "%Xn", "%16Xu",
             "%2.3L{user}", "%{}", "%{unknown}", "%5%", "%L%", "%%%u", "%UTu", "%ETu",
             "%{domain}%{domain}", "%U{username}", "%-1.1u", "%1.-1u", "%-20.5u", "%020u",
             "%0.05u", "%M{user}", "%1Mu", "%RLRu", "%x", "%-", "%-.u", "%.-u", "%3.u",
             "{user}", "%N", "%H", "%7.7Hu", "%X{user}"]
USERS = ["TestUser@Domain", "a@b@c", "user1", "", "@", "  spaced \t", "12345", "ÄÖü@Ex.COM",
         "x.y.z@a.b", "o'neil\"q\\", "99999999999999999999", "0x1F", "x-5", "tab\there@x"]


def main():
    out_path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "var_expand_doveadm.json")
    tmp = tempfile.mkdtemp(prefix="var-expand-oracle-")
    conf = os.path.join(tmp, "dovecot.conf")
    with open(conf, "w") as f:
        f.write(f"base_dir = {tmp}/run\nstate_dir = {tmp}/state\nprotocols =\n"
                f"log_path = {tmp}/log\n")
    cases = []
    for t in TEMPLATES:
        for u in USERS:
            r = subprocess.run(["doveadm", "-c", conf, "-o", "director_username_hash=" + t,
                                "director", "map", "-u", u],
                               capture_output=True, text=True, timeout=10)
            s = r.stdout.strip()
            cases.append({"format": t, "user": u,
                          "hash": s if r.returncode == 0 and s.isdigit() else "ERR"})
    version = subprocess.run(["dovecot", "--version"], capture_output=True,
                             text=True).stdout.strip()
    with open(out_path, "w") as f:
        json.dump({"source": "doveadm director map -u USER with -o director_username_hash=FORMAT "
                             "(no director connection; the hash is computed by doveadm itself)",
                   "dovecot_version": version,
                   "recorded_by": "tests/data/record_var_expand_oracle.py",
                   "cases": cases}, f, ensure_ascii=False, indent=1)
    print(len(cases), "cases")


if __name__ == "__main__":
    main()
