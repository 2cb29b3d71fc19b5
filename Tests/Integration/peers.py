"""Real SMTP peers for the delivery tests: "the Internet's" mail servers, each on its own loopback
address (127.0.0.10, 127.0.0.11, …) and all on one port, so that egress can reach every MX host
on `egress.port`.

A small asyncio SMTP server rather than aiosmtpd: the tests need a 421 greeting, a delay before
*every* reply (greeting and EHLO included), an EHLO without 8BITMIME, STARTTLS with the TLS
version and cipher recorded, and connection-level records (source address, EHLO name, how many
messages went over each connection, how many connections were open at once), which aiosmtpd
does not expose without reaching into its internals. The protocol side is deliberately plain
RFC 5321: commands are read one line at a time and answered in order, so a pipelining client
works; DATA is dot-unstuffed and kept byte for byte (CRLF line ends, 8-bit octets untouched).

Everything runs on one background event loop thread shared by all peers. Only loopback
addresses are ever bound; a peer refuses to bind anything else.

    ca = TestCA(tmp / "ca")
    peer = Peer("127.0.0.21", port, name="mx.tls.egress.test", tls=ca.issue("mx.tls.egress.test"))
    ...
    peer.messages()      # [Message(mail_from, rcpts, data, source_ip, helo, tls, tls_version, …)]
    peer.connections()   # [Connection(number, source_ip, helo, tls, messages, commands, …)]
    peer.stop()

Run one by hand (e.g. to try it with swaks):
    python3 Tests/Integration/peers.py --address 127.0.0.10 --port 2525 --name mx.test --tls-self-signed
"""
import argparse
import asyncio
import hashlib
import ipaddress
import itertools
import socket
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

# ---------------------------------------------------------------------------------------------
# Certificates (openssl, made at test time)


@dataclass
class CertPair:
    """A server certificate and its key (PEM files)."""
    cert: Path
    key: Path

    def der(self) -> bytes:
        return ssl.PEM_cert_to_DER_cert(self.cert.read_text())

    @property
    def sha256(self) -> str:
        """Lower-case hex SHA-256 of the DER certificate (what egress reports as
        `peer_certificate_sha256`)."""
        return hashlib.sha256(self.der()).hexdigest()

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(str(self.cert), str(self.key))
        return ctx


def _openssl(*args, cwd=None):
    out = subprocess.run(["openssl", *args], capture_output=True, text=True, cwd=cwd, timeout=60)
    if out.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed: {out.stderr}")
    return out.stdout


class TestCA:
    """A certificate authority made with openssl in `directory`; `issue(host)` gives a server
    certificate for `host` (CN and DNS SAN) signed by it. Give `ca.cert` to the client as an extra
    trust anchor (egress: `egress.tls_ca_file`)."""

    __test__ = False  # not a pytest test class

    def __init__(self, directory: Path, name: str = "SMG Test CA"):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.cert = self.dir / "ca.pem"
        self.key = self.dir / "ca.key"
        self._serial = itertools.count(1000)
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(self.key), "-out", str(self.cert),
                 "-days", "2", "-subj", f"/CN={name}",
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                 "-addext", "subjectKeyIdentifier=hash")

    def issue(self, hostname: str, *alt_names: str) -> CertPair:
        names = [hostname, *alt_names]
        stem = self.dir / hostname
        key, csr, cert, ext = (Path(f"{stem}.key"), Path(f"{stem}.csr"), Path(f"{stem}.pem"), Path(f"{stem}.ext"))
        ext.write_text("basicConstraints=critical,CA:FALSE\n"
                       "keyUsage=critical,digitalSignature,keyEncipherment\n"
                       "extendedKeyUsage=serverAuth\n"
                       "authorityKeyIdentifier=keyid\n"
                       "subjectAltName=" + ",".join(f"DNS:{n}" for n in names) + "\n")
        _openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
                 "-subj", f"/CN={hostname}")
        _openssl("x509", "-req", "-in", str(csr), "-CA", str(self.cert), "-CAkey", str(self.key),
                 "-set_serial", str(next(self._serial)), "-days", "2", "-sha256", "-extfile", str(ext),
                 "-out", str(cert))
        return CertPair(cert, key)


def self_signed(directory: Path, hostname: str) -> CertPair:
    """A self-signed server certificate for `hostname`: no trust store anchors it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{hostname}.self.pem", directory / f"{hostname}.self.key"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
             "-subj", f"/CN={hostname}", "-addext", f"subjectAltName=DNS:{hostname}",
             "-addext", "basicConstraints=critical,CA:FALSE")
    return CertPair(cert, key)


# ---------------------------------------------------------------------------------------------
# Ports and addresses


def check_loopback(address: str):
    if not ipaddress.ip_address(address).is_loopback:
        raise ValueError(f"test peers bind loopback addresses only, not {address}")


def common_free_port(addresses, attempts: int = 100) -> int:
    """A TCP port that is free on every one of `addresses` (all loopback)."""
    for a in addresses:
        check_loopback(a)
    from harness import free_port  # below the ephemeral range: see its comment
    for _ in range(attempts):
        port = free_port()
        socks = []
        try:
            for a in addresses:
                fam = socket.AF_INET6 if ":" in a else socket.AF_INET
                t = socket.socket(fam, socket.SOCK_STREAM)
                socks.append(t)
                t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                t.bind((a, port))
        except OSError:
            continue
        finally:
            for t in socks:
                t.close()
        return port
    raise RuntimeError(f"no port free on all of {addresses}")


def refuses(address: str, port: int) -> bool:
    """Whether a TCP connection to address:port is refused (nothing listens there)."""
    check_loopback(address)
    try:
        with socket.create_connection((address, port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------
# The shared event loop


class _Loop:
    _lock = threading.Lock()
    _loop = None
    _thread = None

    @classmethod
    def get(cls) -> asyncio.AbstractEventLoop:
        with cls._lock:
            if cls._loop is None or not cls._thread.is_alive():
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="smtp-peers", daemon=True)
                thread.start()
                cls._loop, cls._thread = loop, thread
            return cls._loop


def _run(coro, timeout=15):
    return asyncio.run_coroutine_threadsafe(coro, _Loop.get()).result(timeout)


# ---------------------------------------------------------------------------------------------
# Records


@dataclass
class Connection:
    number: int
    source_ip: str
    source_port: int
    opened: float
    closed: Optional[float] = None
    helo: Optional[str] = None          # the last EHLO/HELO name
    helo_names: list = field(default_factory=list)
    esmtp: bool = False
    tls: bool = False
    tls_version: Optional[str] = None
    tls_cipher: Optional[str] = None
    tls_error: Optional[str] = None
    commands: list = field(default_factory=list)   # every command line as received (decoded latin-1)
    messages: int = 0                              # transactions accepted with 250 at end of DATA
    partial_data: bytes = b""                      # DATA cut off by the client going away
    pipelined_after_starttls: bool = False

    def mail_commands(self):
        return [c for c in self.commands if c.upper().startswith("MAIL")]


@dataclass
class Message:
    mail_from: str                 # "" for the null sender <>
    mail_options: list             # MAIL parameters, e.g. ["BODY=8BITMIME", "SIZE=123"]
    rcpts: list                    # accepted recipients
    data: bytes                    # dot-unstuffed content, CRLF line ends
    source_ip: str
    source_port: int
    helo: Optional[str]
    tls: bool
    tls_version: Optional[str]
    tls_cipher: Optional[str]
    connection: int                # Connection.number on this peer
    peer: str                      # the peer's name
    received_at: float
    replied: bool = False          # the 250 after DATA was written (False: client gone, or still tarpitted)
    rcpt_options: dict = field(default_factory=dict)  # accepted recipient → its RCPT parameters

    @property
    def eight_bit(self) -> bool:
        return any(b >= 0x80 for b in self.data)


def default_rcpt_policy(peer: "Peer", address: str, attempt: int) -> Optional[str]:
    """Reply by local part: reject… → 550 5.1.1; later… → always 451; flaky… → 451 for the first
    `peer.temp_failures` attempts of that address, then accepted. None = accept (250)."""
    local = address.split("@", 1)[0].lower()
    if local.startswith("reject"):
        return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown in {peer.name} ({peer.marker})"
    if local.startswith("later"):
        return f"451 4.3.0 <{address}>: Temporary lookup failure at {peer.name} ({peer.marker})"
    if local.startswith("flaky") and attempt <= peer.temp_failures:
        return f"451 4.3.0 <{address}>: Try again later, greylisted at {peer.name} ({peer.marker})"
    return None


class _ClientGone(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# The peer


class Peer:
    """One SMTP server on `address`:`port`.

    Behaviours (all per peer):
      tls            CertPair (or ssl.SSLContext): offer STARTTLS with it
      greeting       the greeting line, e.g. "421 4.3.2 busy" (a non-2xx greeting closes the connection)
      delay          seconds to wait before every reply (tarpit), the greeting included
      data_delay     seconds to wait before the reply to the end of DATA only
      eightbitmime   advertise 8BITMIME (False: a 7-bit-only server)
      dsn            advertise DSN (RFC 3461); MAIL/RCPT parameters are recorded either way
      reject_8bit_param  with eightbitmime=False, answer MAIL … BODY=8BITMIME with 555 (else 250, recorded)
      temp_failures  how many times a flaky… recipient gets 451 before it is accepted
      rcpt_policy    callable(peer, address, attempt) -> reply text or None (accept); default by local part
    """

    _markers = itertools.count(1)

    def __init__(self, address: str, port: int, name: Optional[str] = None, *, tls=None,
                 greeting: Optional[str] = None, delay: float = 0.0, data_delay: float = 0.0,
                 eightbitmime: bool = True, pipelining: bool = True, reject_8bit_param: bool = True,
                 temp_failures: int = 1, rcpt_policy: Callable = default_rcpt_policy,
                 max_size: int = 50 * 1024 * 1024, dsn: bool = False, start: bool = True):
        check_loopback(address)
        self.address, self.port = address, port
        self.name = name or f"peer-{address}"
        self.marker = f"peer-{next(Peer._markers)}-{address}"  # appears in this peer's replies
        if isinstance(tls, CertPair):
            self.cert = tls
            self.tls_context = tls.server_context()
        else:
            self.cert = None
            self.tls_context = tls
        self.greeting = greeting or f"220 {self.name} ESMTP smg-test-peer"
        self.delay, self.data_delay = delay, data_delay
        self.eightbitmime, self.pipelining = eightbitmime, pipelining
        self.reject_8bit_param = reject_8bit_param
        self.temp_failures = temp_failures
        self.rcpt_policy = rcpt_policy
        self.max_size = max_size
        self.dsn = dsn
        self.lock = threading.Lock()
        self._messages = []
        self._connections = []
        self._rcpt_attempts = {}
        self._active = 0
        self.max_active = 0          # most connections open at once
        self.errors = []             # unexpected exceptions in sessions (should stay empty)
        self._writers = set()
        self._server = None
        self._conn_numbers = itertools.count(1)
        if start:
            self.start()

    def __repr__(self):
        return f"<Peer {self.name} {self.address}:{self.port}>"

    # -- lifecycle

    def start(self):
        async def go():
            fam = socket.AF_INET6 if ":" in self.address else socket.AF_INET
            return await asyncio.start_server(self._client, host=self.address, port=self.port, family=fam,
                                              reuse_address=True, limit=1024 * 1024, backlog=128)
        self._server = _run(go())

    def stop(self):
        if self._server is None:
            return
        server, self._server = self._server, None

        async def go():
            server.close()
            for w in list(self._writers):
                w.transport.abort()
            try:
                await asyncio.wait_for(server.wait_closed(), 5)
            except asyncio.TimeoutError:
                pass
        _run(go())

    # -- what it saw (copies; safe from any thread)

    def messages(self):
        with self.lock:
            return list(self._messages)

    def connections(self):
        with self.lock:
            return list(self._connections)

    def count(self) -> int:
        with self.lock:
            return len(self._messages)

    def active(self) -> int:
        """Connections open right now."""
        with self.lock:
            return self._active

    def rcpt_attempts(self, address: str) -> int:
        with self.lock:
            return self._rcpt_attempts.get(address.lower(), 0)

    def message_connections(self):
        """Connections that carried at least one accepted message."""
        return [c for c in self.connections() if c.messages > 0]

    # -- the session

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        peername = writer.get_extra_info("peername") or ("?", 0)
        conn = Connection(number=next(self._conn_numbers), source_ip=peername[0], source_port=peername[1],
                          opened=time.time())
        with self.lock:
            self._connections.append(conn)
            self._active += 1
            self.max_active = max(self.max_active, self._active)
        self._writers.add(writer)
        try:
            await self._session(conn, reader, writer)
        except (_ClientGone, ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, OSError):
            pass
        except asyncio.CancelledError:
            pass
        except Exception as e:  # a bug in the peer: kept for the test to see, the connection is closed
            with self.lock:
                self.errors.append(f"connection {conn.number}: {type(e).__name__}: {e}")
        finally:
            self._writers.discard(writer)
            with self.lock:
                self._active -= 1
                conn.closed = time.time()
            try:
                writer.close()
            except Exception:
                pass

    async def _reply(self, writer, text: str, delay: Optional[float] = None):
        wait = self.delay if delay is None else delay
        if wait:
            await asyncio.sleep(wait)
        if writer.is_closing():
            raise _ClientGone()
        writer.write(text.encode() + b"\r\n")
        await writer.drain()

    async def _line(self, reader) -> bytes:
        try:
            line = await reader.readuntil(b"\n")
        except asyncio.LimitOverrunError:
            raise _ClientGone()
        except asyncio.IncompleteReadError as e:
            raise _ClientGone() from e
        return line

    def _ehlo_lines(self, conn, name):
        lines = [f"{self.name} Hello {name}"]
        if self.pipelining:
            lines.append("PIPELINING")
        lines.append(f"SIZE {self.max_size}")
        if self.eightbitmime:
            lines.append("8BITMIME")
        lines.append("ENHANCEDSTATUSCODES")
        if self.dsn:
            lines.append("DSN")
        if self.tls_context is not None and not conn.tls:
            lines.append("STARTTLS")
        return "\r\n".join(f"250-{l}" for l in lines[:-1]) + f"\r\n250 {lines[-1]}"

    async def _session(self, conn: Connection, reader, writer):
        await self._reply(writer, self.greeting)
        if not self.greeting.startswith("2"):
            await asyncio.sleep(0.1)
            return
        mail_from, mail_options, rcpts = None, [], []
        rcpt_options = {}
        while True:
            raw = await self._line(reader)
            line = raw.rstrip(b"\r\n").decode("latin-1")
            with self.lock:
                conn.commands.append(line)
            verb, _, arg = line.partition(" ")
            verb = verb.upper()
            if len(raw) > 4096:
                await self._reply(writer, "500 5.5.2 Line too long")
            elif verb in ("EHLO", "HELO"):
                if not arg.strip():
                    await self._reply(writer, "501 5.5.4 Syntax: EHLO hostname")
                    continue
                with self.lock:
                    conn.helo = arg.strip()
                    conn.helo_names.append(conn.helo)
                    conn.esmtp = verb == "EHLO"
                mail_from, mail_options, rcpts = None, [], []
                if verb == "EHLO":
                    await self._reply(writer, self._ehlo_lines(conn, conn.helo))
                else:
                    await self._reply(writer, f"250 {self.name}")
            elif verb == "STARTTLS":
                if self.tls_context is None or conn.tls or not conn.esmtp:
                    await self._reply(writer, "502 5.5.1 STARTTLS not available")
                    continue
                if reader._buffer:  # RFC 3207 §5: nothing may follow STARTTLS in the same batch
                    conn.pipelined_after_starttls = True
                await self._reply(writer, "220 2.0.0 Ready to start TLS")
                try:
                    await writer.start_tls(self.tls_context, ssl_handshake_timeout=15)
                except Exception as e:  # handshake refused by the client (e.g. it distrusts the cert)
                    with self.lock:
                        conn.tls_error = f"{type(e).__name__}: {e}"
                    raise _ClientGone()
                ssl_object = writer.get_extra_info("ssl_object")
                with self.lock:
                    conn.tls = True
                    conn.tls_version = ssl_object.version() if ssl_object else None
                    conn.tls_cipher = ssl_object.cipher()[0] if ssl_object else None
                    conn.helo, conn.esmtp = None, False
                mail_from, mail_options, rcpts = None, [], []
            elif verb == "MAIL":
                if conn.helo is None:
                    await self._reply(writer, "503 5.5.1 Send EHLO first")
                elif mail_from is not None:
                    await self._reply(writer, "503 5.5.1 Nested MAIL command")
                elif not arg.upper().startswith("FROM:"):
                    await self._reply(writer, "501 5.5.4 Syntax: MAIL FROM:<address>")
                else:
                    address, params = _path_and_params(arg[5:])
                    if address is None:
                        await self._reply(writer, "501 5.1.7 Bad sender address syntax")
                    elif (not self.eightbitmime and self.reject_8bit_param
                          and any(p.upper() == "BODY=8BITMIME" for p in params)):
                        await self._reply(writer, "555 5.5.4 BODY=8BITMIME not supported here")
                    else:
                        mail_from, mail_options, rcpts = address, params, []
                        rcpt_options = {}
                        await self._reply(writer, "250 2.1.0 Ok")
            elif verb == "RCPT":
                if mail_from is None:
                    await self._reply(writer, "503 5.5.1 Need MAIL command")
                    continue
                if not arg.upper().startswith("TO:"):
                    await self._reply(writer, "501 5.5.4 Syntax: RCPT TO:<address>")
                    continue
                address, params = _path_and_params(arg[3:])
                if not address:
                    await self._reply(writer, "501 5.1.3 Bad recipient address syntax")
                    continue
                with self.lock:
                    n = self._rcpt_attempts.get(address.lower(), 0) + 1
                    self._rcpt_attempts[address.lower()] = n
                refusal = self.rcpt_policy(self, address, n)
                if refusal:
                    await self._reply(writer, refusal)
                else:
                    rcpts.append(address)
                    rcpt_options[address] = list(params)
                    await self._reply(writer, "250 2.1.5 Ok")
            elif verb == "DATA":
                if mail_from is None:
                    await self._reply(writer, "503 5.5.1 Need MAIL command")
                    continue
                if not rcpts:
                    await self._reply(writer, "554 5.5.1 No valid recipients")
                    continue
                await self._reply(writer, "354 End data with <CR><LF>.<CR><LF>")
                data = await self._data(conn, reader)
                message = Message(mail_from=mail_from, mail_options=list(mail_options), rcpts=list(rcpts), data=data,
                                  source_ip=conn.source_ip, source_port=conn.source_port, helo=conn.helo,
                                  tls=conn.tls, tls_version=conn.tls_version, tls_cipher=conn.tls_cipher,
                                  connection=conn.number, peer=self.name, received_at=time.time(),
                                  rcpt_options=dict(rcpt_options))
                rcpt_options = {}
                mail_from, mail_options, rcpts = None, [], []
                if len(data) > self.max_size:
                    await self._reply(writer, "552 5.3.4 Message too big")
                    continue
                # Recorded before the (possibly delayed) 250, as a real MTA commits before it answers.
                with self.lock:
                    self._messages.append(message)
                    conn.messages += 1
                await self._reply(writer, f"250 2.0.0 Ok: queued as {self.marker}-{len(self._messages)}",
                                  delay=self.delay + self.data_delay)
                message.replied = True
            elif verb == "RSET":
                mail_from, mail_options, rcpts = None, [], []
                await self._reply(writer, "250 2.0.0 Ok")
            elif verb == "NOOP":
                await self._reply(writer, "250 2.0.0 Ok")
            elif verb == "VRFY":
                await self._reply(writer, "252 2.0.0 Cannot VRFY")
            elif verb == "QUIT":
                await self._reply(writer, "221 2.0.0 Bye")
                return
            else:
                await self._reply(writer, "502 5.5.2 Command not recognized")

    async def _data(self, conn, reader) -> bytes:
        chunks = []
        while True:
            try:
                line = await reader.readuntil(b"\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as e:
                with self.lock:
                    conn.partial_data = b"".join(chunks) + (getattr(e, "partial", b"") or b"")
                raise _ClientGone()
            if line in (b".\r\n", b".\n"):
                return b"".join(chunks)
            if line.startswith(b"."):
                line = line[1:]
            chunks.append(line)


def _path_and_params(text: str):
    """'<a@b> BODY=8BITMIME SIZE=1' → ('a@b', ['BODY=8BITMIME', 'SIZE=1']); None if malformed."""
    text = text.strip()
    if not text.startswith("<"):
        parts = text.split()
        return (parts[0] if parts else None), parts[1:]
    close = text.find(">")
    if close < 0:
        return None, []
    path = text[1:close]
    if ":" in path and path.startswith("@"):  # source route @a,@b:user@c
        path = path.split(":", 1)[1]
    return path, text[close + 1:].split()


class Peers:
    """The set of peers of one test, all on one `port` (the port egress uses for every MX host)."""

    def __init__(self, addresses):
        self.port = common_free_port(addresses)
        self.all = []

    def add(self, address: str, name: str, **behaviour) -> Peer:
        peer = Peer(address, self.port, name, **behaviour)
        self.all.append(peer)
        return peer

    def refusing(self, address: str) -> str:
        """An MX address where nothing listens: connections are refused."""
        assert refuses(address, self.port), f"something listens on {address}:{self.port}"
        return address

    def connections_from(self, source_ip: str):
        return [(p, c) for p in self.all for c in p.connections() if c.source_ip == source_ip]

    def messages(self):
        return [m for p in self.all for m in p.messages()]

    def stop(self):
        for p in self.all:
            p.stop()


# ---------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description="Run one SMTP test peer until interrupted.")
    ap.add_argument("--address", default="127.0.0.10")
    ap.add_argument("--port", type=int, default=2525)
    ap.add_argument("--name", default="mx.test")
    ap.add_argument("--tls-cert", help="PEM certificate (offer STARTTLS)")
    ap.add_argument("--tls-key")
    ap.add_argument("--tls-self-signed", action="store_true", help="make a self-signed certificate for --name")
    ap.add_argument("--greeting")
    ap.add_argument("--delay", type=float, default=0.0)
    ap.add_argument("--data-delay", type=float, default=0.0)
    ap.add_argument("--no-8bitmime", action="store_true")
    args = ap.parse_args()
    tls = None
    if args.tls_self_signed:
        import tempfile
        tls = self_signed(Path(tempfile.mkdtemp(prefix="peer-")), args.name)
    elif args.tls_cert:
        tls = CertPair(Path(args.tls_cert), Path(args.tls_key))
    peer = Peer(args.address, args.port, args.name, tls=tls, greeting=args.greeting, delay=args.delay,
                data_delay=args.data_delay, eightbitmime=not args.no_8bitmime)
    print(f"listening on {args.address}:{args.port} as {args.name}", flush=True)
    seen = 0
    try:
        while True:
            time.sleep(0.5)
            for m in peer.messages()[seen:]:
                print(f"message from={m.mail_from!r} rcpts={m.rcpts} source={m.source_ip} helo={m.helo} "
                      f"tls={m.tls_version or 'none'} {m.tls_cipher or ''} conn={m.connection} "
                      f"8bit={m.eight_bit} options={m.mail_options} size={len(m.data)}", flush=True)
                seen += 1
    except KeyboardInterrupt:
        pass
    finally:
        peer.stop()


if __name__ == "__main__":
    main()
