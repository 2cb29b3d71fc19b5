#!/usr/bin/env python3
"""dkimpy-verify.py <records-file> <message-file>...

Verifies every DKIM-Signature of each message with dkimpy (PyPI dkimpy / Debian python3-dkim),
answering key lookups from <records-file> ("<selector>._domainkey.<domain> <TXT text>" lines)
instead of DNS. Prints per message "PASS <file> <n>" (all n signatures valid) or
"FAIL <file> <details>"; exit 0 if it ran.
"""
import sys
import dkim


def main():
    records = {}
    with open(sys.argv[1]) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            name, text = line.split(None, 1)
            records[name.rstrip(".").lower() + "."] = text.encode()

    def dnsfunc(name, timeout=5):
        if isinstance(name, bytes):
            name = name.decode()
        return records.get(name.rstrip(".").lower() + ".")

    for path in sys.argv[2:]:
        with open(path, "rb") as f:
            message = f.read()
        d = dkim.DKIM(message)
        sigs = [v for (k, v) in d.headers if k.lower() == b"dkim-signature"]
        if not sigs:
            print(f"FAIL {path} no signature")
            continue
        results = []
        for i in range(len(sigs)):
            v = dkim.DKIM(message)
            try:
                ok = v.verify(idx=i, dnsfunc=dnsfunc)
            except dkim.DKIMException as e:
                ok = False
                results.append(f"sig{i}: {e}")
                continue
            if not ok:
                results.append(f"sig{i}: invalid")
        if results:
            print(f"FAIL {path} {'; '.join(results)}")
        else:
            print(f"PASS {path} {len(sigs)}")


if __name__ == "__main__":
    main()
