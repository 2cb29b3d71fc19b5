#!/usr/bin/env python3
"""Synthetic, production-sized signature databases for smg-scanner-bench (issue 12).

freshclam cannot run on the build machines, so this writes a ClamAV database folder and a YARA
rule file of realistic size instead. Deterministic: the same options and --seed give the same files.

    python3 bench/make_signatures.py --out /tmp/smg-sigs [--hashes 1000000] [--sha256 200000]
                                     [--bodies 30000] [--yara 3000] [--seed 12]

Layout of --out:

    clamav/synthetic.hdb   MD5 file hashes        md5:size:Synthetic.Hash.N          (--hashes)
    clamav/synthetic.hsb   SHA256 file hashes     sha256:size:Synthetic.Sha256.N     (--sha256)
    clamav/synthetic.ndb   body signatures        Name:Target:Offset:HexSignature    (--bodies)
    clamav/smg-test.*      the shipped test signatures (deploy/scanner/clamav): EICAR still hits
    yara/rules.yar         the shipped deploy/scanner/yara/smg.yar, then --yara synthetic rules
    manifest.json          counts, sizes and options (outside clamav/, which libclamav loads whole)

The shipped YARA rules use the external string variables `filename` and `content_type` (so do a
few synthetic ones): smg-scanner defines them; the yara CLI needs them on the command line:

    yara -w -d filename= -d content_type= /tmp/smg-sigs/yara/rules.yar FILE

Every synthetic pattern carries at least 6 consecutive random bytes (ASCII ones at least 8 random
letters/digits) in each fixed part, so none of them matches real mail by accident.
"""
import argparse
import json
import math
import random
import re
import shutil
import string
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_CLAMAV = ROOT / "deploy/scanner/clamav"
SHIPPED_YARA = ROOT / "deploy/scanner/yara/smg.yar"

KIB = 1024
MIB = 1024 * 1024
ALNUM = string.ascii_lowercase + string.digits
ALNUM_MIXED = string.ascii_letters + string.digits


def file_size(rng):
    """Sizes of malware samples: log-normal around ~150 KiB, clamped to 1 KiB–10 MiB."""
    size = int(math.exp(rng.gauss(math.log(150 * KIB), 1.7)))
    return min(max(size, KIB), 10 * MIB)


def write_lines(path, count, line):
    """Writes `count` lines made by line(i) (i from 1) in chunks; returns the byte size."""
    with open(path, "w", encoding="ascii", newline="\n") as f:
        chunk = []
        for i in range(1, count + 1):
            chunk.append(line(i))
            if len(chunk) == 50_000:
                f.write("\n".join(chunk) + "\n")
                chunk = []
        if chunk:
            f.write("\n".join(chunk) + "\n")
    return path.stat().st_size


# ---------------------------------------------------------------------------------------------
# ClamAV body signatures (.ndb)
#
# Hex signature syntax (ClamAV "Body-based signature content format"): `??` any byte, `a?`/`?a`
# nibbles, `(aa|bb)` alternatives (multi-byte ones of equal length), `!(aa|bb)` negation, `*` any
# number of bytes, `{n}`, `{-n}`, `{n-m}` bounded jumps. `*` and `{}` split a signature into
# sub-signatures, each of which needs static bytes: every part here starts with >= 6 random bytes.

# Tokens real HTML/script/text signatures are built around (hex-encoded, lower case: target 3
# (HTML) and 7 (ASCII) are matched against normalized, lower-cased text).
ASCII_TOKENS = ["<script", "eval(", "unescape(", "document.write(", "fromcharcode(", "<iframe src=",
                "window.location", "activexobject(", "wscript.shell", "powershell -e", "cmd.exe /c",
                "createobject(", "http://", "https://", ".exe", "base64,", "<form action=", "password"]


def hexs(data):
    return data.hex()


def random_ascii(rng, n):
    return "".join(rng.choice(ALNUM) for _ in range(n)).encode()


def binary_wildcard(rng):
    """One wildcard element of a binary pattern and how many bytes it matches."""
    kind = rng.random()
    if kind < 0.40:
        return "??", 1
    if kind < 0.55:
        return rng.choice(["%x?", "?%x"]) % rng.randrange(16), 1
    if kind < 0.80:
        alternatives = sorted({rng.randrange(256) for _ in range(rng.randint(2, 4))})
        if len(alternatives) < 2:
            return "??", 1
        return "(" + "|".join("%02x" % b for b in alternatives) + ")", 1
    if kind < 0.90:
        width = 2
        alternatives = sorted({hexs(rng.randbytes(width)) for _ in range(rng.randint(2, 3))})
        return "(" + "|".join(alternatives) + ")", width
    alternatives = sorted({rng.randrange(256) for _ in range(2)})
    return "!(" + "|".join("%02x" % b for b in alternatives) + ")", 1


def binary_jump(rng):
    kind = rng.random()
    if kind < 0.35:
        return "*"
    if kind < 0.60:
        return "{%d}" % rng.randint(1, 32)
    if kind < 0.80:
        low = rng.randint(1, 16)
        return "{%d-%d}" % (low, low + rng.randint(1, 64))
    return "{-%d}" % rng.randint(2, 48)


def binary_part(rng, budget):
    """A sub-signature: >= 6 fixed random bytes, then maybe wildcard + >= 3 fixed bytes, repeated."""
    fixed = rng.randint(6, 12)
    out, size = [hexs(rng.randbytes(fixed))], fixed
    while size + 4 <= budget and rng.random() < 0.45:
        token, width = binary_wildcard(rng)
        fixed = rng.randint(3, 8)
        out += [token, hexs(rng.randbytes(fixed))]
        size += width + fixed
    return "".join(out), size


def binary_signature(rng):
    length = rng.randint(16, 60)
    parts, size = [], 0
    while True:
        part, n = binary_part(rng, length - size)
        parts.append(part)
        size += n
        if size >= length or len(parts) == 4:
            break
        if size + 6 > length:
            break
        parts.append(binary_jump(rng))
    # Short signatures get a random tail so every one has 16+ matched bytes.
    if size < 16:
        parts.append(hexs(rng.randbytes(16 - size)))
    return "".join(parts)


def ascii_signature(rng):
    """Script/HTML-like: a common token, a random identifier, quote alternatives, short jumps."""
    parts = []
    size = 0
    length = rng.randint(16, 60)
    while size < length and len(parts) < 7:
        if parts:
            parts.append(rng.choice(["{1-20}", "{-32}", "*", "(22|27)", "??", "(20|09)"]))
        token = rng.choice(ASCII_TOKENS).encode() if rng.random() < 0.6 else b""
        random_part = random_ascii(rng, rng.randint(8, 14))
        piece = token + random_part if rng.random() < 0.5 else random_part + token
        parts.append(hexs(piece))
        size += len(piece)
    return "".join(parts)


# One element of a hex signature: a jump ({n-m}, *), an alternative ((..|..), !(..|..)), ??, a nibble, a byte.
ELEMENT = re.compile(r"\{[0-9-]*\}|\*|!?\(([0-9a-f|]+)\)|\?\?|\?[0-9a-f]|[0-9a-f]\?|[0-9a-f]{2}")


def matched_bytes(signature):
    """Bytes a signature matches outside its jumps (what the 16–60 byte bound is about)."""
    n = 0
    for m in ELEMENT.finditer(signature):
        token = m.group(0)
        if token == "*" or token.startswith("{"):
            continue
        n += len(m.group(1).split("|")[0]) // 2 if m.group(1) else 1
    return n


def ndb_signature(rng, ascii_only):
    while True:  # rejection sampling keeps every signature within 16–60 matched bytes
        signature = ascii_signature(rng) if ascii_only else binary_signature(rng)
        if 16 <= matched_bytes(signature) <= 60:
            return signature


def ndb_line(rng, i):
    r = rng.random()
    target = 0 if r < 0.70 else 3 if r < 0.80 else 4 if r < 0.88 else 7
    if target == 0:
        o = rng.random()
        offset = "*" if o < 0.85 else "0" if o < 0.95 else "%d,%d" % (rng.choice([0, 64, 512]), rng.choice([256, 4096]))
        signature = ndb_signature(rng, ascii_only=rng.random() >= 0.85)
    else:
        offset = "*"
        signature = ndb_signature(rng, ascii_only=True)
    return "Synthetic.Body.%d:%d:%s:%s" % (i, target, offset, signature)


# ---------------------------------------------------------------------------------------------
# YARA rules (libyara 4.2 syntax)

TEXT_PREFIXES = ["", "", "", "http://", "https://", "cmd.exe /c ", "powershell -enc ", "User-Agent: ",
                 "Mozilla/5.0 ", "GetProcAddress", "VirtualAlloc", "CreateRemoteThread", "Global\\\\",
                 "SOFTWARE\\\\Microsoft\\\\Windows\\\\CurrentVersion\\\\Run\\\\", "/tmp/.", "stratum+tcp://",
                 "-----BEGIN ", "<?php ", "document.write(", "WScript.Shell."]
TEXT_MODIFIERS = ["", "", "", " ascii wide", " nocase", " wide", " fullword", " ascii wide nocase"]
TAGS = ["", "", " : trojan", " : downloader", " : webshell", " : ransomware", " : phishing", " : apt"]


def yara_text(rng):
    prefix = rng.choice(TEXT_PREFIXES)
    body = "".join(rng.choice(ALNUM_MIXED) for _ in range(rng.randint(8, 20)))
    return '"%s%s"%s' % (prefix, body, rng.choice(TEXT_MODIFIERS))


def yara_hex(rng):
    """{ 6+ fixed bytes, then wildcards ??/?X/X?, alternatives and jumps [n]/[n-m], each followed by 4+ fixed }."""
    def fixed(n):
        return " ".join("%02X" % b for b in rng.randbytes(n))

    out = [fixed(rng.randint(6, 10))]
    for _ in range(rng.randint(0, 4)):
        kind = rng.random()
        if kind < 0.30:
            out.append("??")
        elif kind < 0.45:
            out.append(rng.choice(["?%X", "%X?"]) % rng.randrange(16))
        elif kind < 0.70:
            low = rng.randint(0, 8)
            out.append("[%d-%d]" % (low, low + rng.randint(1, 24)))
        elif kind < 0.80:
            out.append("[%d]" % rng.randint(1, 16))
        else:
            alternatives = sorted({"%02X %02X" % (rng.randrange(256), rng.randrange(256))
                                   for _ in range(rng.randint(2, 3))})
            out.append("( " + " | ".join(alternatives) + " )")
        out.append(fixed(rng.randint(4, 8)))
    return "{ " + " ".join(out) + " }"


def yara_regex(rng):
    """Anchored on a literal of 8+ random characters (good atoms, no slow-rule warning); bounded classes."""
    literal = "".join(rng.choice(ALNUM) for _ in range(rng.randint(8, 12)))
    tail = rng.choice([r"[a-z0-9]{4,16}\.(php|asp|jsp)", r"[0-9a-f]{8}\/[a-z]{2,8}", r"_[A-Z][a-z]{3,10}",
                       r"\.(exe|dll|scr) ", r"=[A-Za-z0-9+\/]{16,64}", r"-[0-9]{1,5}\.bin"])
    return "/%s%s/" % (literal, tail)


def yara_rule(rng, i):
    kind = rng.random()
    strings, conditions = [], None
    if kind < 0.45:  # text strings
        n = rng.randint(2, 5)
        strings = [("$a%d" % k, yara_text(rng)) for k in range(1, n + 1)]
        conditions = ["any of them", "2 of ($a*)", "all of them", "filesize < 5MB and any of them",
                      "$a1 and 1 of ($a*)", "#a1 > 2 or 2 of them"]
    elif kind < 0.75:  # hex strings
        n = rng.randint(1, 3)
        strings = [("$h%d" % k, yara_hex(rng)) for k in range(1, n + 1)]
        conditions = ["any of them", "all of them", "filesize < 5MB and any of ($h*)",
                      "uint16(0) == 0x5A4D and any of them", "$h1 in (0..4096) or all of them", "$h1 at 0 or all of them",
                      "uint32(0) == 0x464C457F and any of them"]
    elif kind < 0.95:  # mixed text + hex (+ a regex in a quarter of them)
        strings = [("$a1", yara_text(rng)), ("$a2", yara_text(rng)), ("$h1", yara_hex(rng))]
        if rng.random() < 0.25:
            strings.append(("$r1", yara_regex(rng)))
            conditions = ["$a1 and ($a2 or $h1 or $r1)", "2 of them", "filesize < 2MB and ($r1 or $h1 or all of ($a*))"]
        else:
            conditions = ["$a1 and ($a2 or $h1)", "2 of them", "filesize < 2MB and ($h1 or all of ($a*))",
                          "#a1 > 1 and ($a2 or $h1)", "filesize < 10MB and 2 of ($a*, $h1)"]
    else:  # content-type scoped (the scanner's external variables)
        strings = [("$a1", yara_text(rng)), ("$h1", yara_hex(rng))]
        ctype = rng.choice(["pdf", "msword", "zip", "html", "octet-stream", "javascript"])
        conditions = ['content_type contains "%s" and any of them' % ctype,
                      'filename matches /\\.(zip|rar|7z)$/i and any of them']
    digest = "%064x" % rng.getrandbits(256)
    lines = ["rule Synthetic_Rule_%d%s" % (i, rng.choice(TAGS)), "{", "    meta:",
             '        description = "synthetic rule %d (bench/make_signatures.py)"' % i,
             '        author = "smg bench"', '        date = "2026-%02d-%02d"' % (rng.randint(1, 12), rng.randint(1, 28)),
             '        hash = "%s"' % digest, "    strings:"]
    lines += ["        %s = %s" % (name, text) for name, text in strings]
    lines += ["    condition:", "        " + rng.choice(conditions), "}", "", ""]
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="folder to write clamav/, yara/ and manifest.json into")
    p.add_argument("--hashes", type=int, default=1_000_000, help="MD5 hash signatures (.hdb)")
    p.add_argument("--sha256", type=int, default=200_000, help="SHA256 hash signatures (.hsb); 0 = none")
    p.add_argument("--bodies", type=int, default=30_000, help="body signatures (.ndb)")
    p.add_argument("--yara", type=int, default=3_000, help="synthetic YARA rules (plus the 8 shipped ones)")
    p.add_argument("--seed", type=int, default=12)
    args = p.parse_args()

    out = Path(args.out)
    clamav, yara = out / "clamav", out / "yara"
    # Start clean: libclamav loads every database file in the folder.
    for folder in (clamav, yara):
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
    started = time.monotonic()
    sizes = {}

    rng = random.Random("%d/hdb" % args.seed)   # one stream per file: changing one count keeps the others
    sizes["synthetic.hdb"] = write_lines(clamav / "synthetic.hdb", args.hashes, lambda i: "%032x:%d:Synthetic.Hash.%d" % (
        rng.getrandbits(128), file_size(rng), i))
    if args.sha256 > 0:
        rng = random.Random("%d/hsb" % args.seed)
        sizes["synthetic.hsb"] = write_lines(clamav / "synthetic.hsb", args.sha256, lambda i: "%064x:%d:Synthetic.Sha256.%d" % (
            rng.getrandbits(256), file_size(rng), i))
    rng = random.Random("%d/ndb" % args.seed)
    sizes["synthetic.ndb"] = write_lines(clamav / "synthetic.ndb", args.bodies, lambda i: ndb_line(rng, i))

    shipped = sorted(f for f in SHIPPED_CLAMAV.iterdir() if f.is_file())
    shipped_count = 0
    for f in shipped:
        shutil.copyfile(f, clamav / f.name)
        sizes[f.name] = f.stat().st_size
        shipped_count += sum(1 for line in f.read_text().splitlines() if line.strip() and not line.startswith("#"))

    rng = random.Random("%d/yara" % args.seed)
    rules = yara / "rules.yar"
    with open(rules, "w", encoding="ascii", newline="\n") as f:
        f.write("// Generated by bench/make_signatures.py (seed %d): the shipped rules, then %d synthetic ones.\n"
                "// External string variables used: filename, content_type (yara CLI: -d filename= -d content_type=).\n\n"
                % (args.seed, args.yara))
        f.write(SHIPPED_YARA.read_text())
        f.write("\n// ---- synthetic rules ----\n\n")
        for i in range(1, args.yara + 1):
            f.write(yara_rule(rng, i))
    sizes["rules.yar"] = rules.stat().st_size

    manifest = {
        "seed": args.seed,
        "clamav": {"md5_hashes": args.hashes, "sha256_hashes": max(0, args.sha256), "body_signatures": args.bodies,
                   "shipped_signatures": shipped_count, "shipped_files": [f.name for f in shipped],
                   "total": args.hashes + max(0, args.sha256) + args.bodies + shipped_count},
        "yara": {"synthetic_rules": args.yara, "shipped_file": str(SHIPPED_YARA.relative_to(ROOT)),
                 "externals": ["filename", "content_type"]},
        "bytes": sizes,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    for name, size in sizes.items():
        print("%-16s %10.1f MiB" % (name, size / MIB))
    print("clamav: %d signatures (%d MD5, %d SHA256, %d body, %d shipped) in %s"
          % (manifest["clamav"]["total"], args.hashes, max(0, args.sha256), args.bodies, shipped_count, clamav))
    print("yara:   %d synthetic rules + %s in %s" % (args.yara, SHIPPED_YARA.name, rules))
    print("written in %.1f s" % (time.monotonic() - started))
    return 0


if __name__ == "__main__":
    sys.exit(main())
