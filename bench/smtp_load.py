#!/usr/bin/env python3
"""An SMTP load driver with STARTTLS and AUTH, and an open-loop mode (issue 12).

Postfix's `smtp-source` cannot do TLS or AUTH, and it only knows closed loop (every session sends
its next message as soon as the last one is answered). This driver speaks raw SMTP over asyncio
sockets (stdlib only, no pipelining, like smtp-source) and records for every message its accept
latency: from writing the final "." CRLF of DATA to reading the reply (250).

    # closed loop: 20 concurrent sessions, 2000 messages of 10 KiB body, a new connection per message
    python3 bench/smtp_load.py 127.0.0.1:2525 --sessions 20 --messages 2000 --size 10240
    # the same over STARTTLS + AUTH PLAIN, connections reused for many messages
    python3 bench/smtp_load.py 127.0.0.1:2525 --sessions 20 --messages 2000 --reuse \\
        --starttls --cafile cert.pem --auth user:password
    # open loop: 100 msg/s for 20 s, whatever the replies take (at most --sessions at once)
    python3 bench/smtp_load.py 127.0.0.1:2525 --rate 100 --duration 20 --sessions 40

Prints one JSON object: count (messages answered 2xx), errors, elapsed, msgs_per_s, latency_ms
(p50/p95/p99/max/mean of the accept latency), and in open loop also the rate asked for and how
late messages started against their schedule (lag_ms), which says whether the driver kept the
rate. Only loopback targets are accepted: this is a load generator.
"""
import argparse
import asyncio
import base64
import ipaddress
import json
import os
import ssl
import sys
import time


def percentile(sorted_values, fraction):
    """Nearest-rank percentile of an already sorted list (None when empty)."""
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, int(round(fraction * len(sorted_values) + 0.5)) - 1))
    return sorted_values[index]


def summary_ms(values):
    """p50/p95/p99/max/mean in milliseconds of a list of seconds."""
    values = sorted(values)
    if not values:
        return {"p50": None, "p95": None, "p99": None, "max": None, "mean": None}
    ms = lambda v: round(v * 1000, 3)  # noqa: E731
    return {"p50": ms(percentile(values, 0.50)), "p95": ms(percentile(values, 0.95)),
            "p99": ms(percentile(values, 0.99)), "max": ms(values[-1]), "mean": ms(sum(values) / len(values))}


class SMTPError(Exception):
    """A reply that was not the one expected (the text of the reply is the message)."""


class Message:
    """Message bodies like smtp-source's (-l: body of `size` octets in lines of 80 "X"), with a unique
    Message-ID per message so that no system can take two of them for one retried submission."""

    def __init__(self, sender, recipient, size):
        self.sender, self.recipient = sender, recipient
        line = b"X" * 78 + b"\r\n"
        rest = size % len(line)
        self.body = line * (size // len(line)) + (b"X" * max(1, rest - 2) + b"\r\n" if rest else b"")
        self.run = f"{os.getpid():x}.{int(time.time()):x}"
        self.host = "load.bench.test"

    def make(self, number):
        head = (f"From: <{self.sender}>\r\nTo: <{self.recipient}>\r\n"
                f"Date: {time.strftime('%a, %d %b %Y %H:%M:%S +0000', time.gmtime())}\r\n"
                f"Message-ID: <{self.run}.{number}@{self.host}>\r\nSubject: load {number}\r\n\r\n")
        return head.encode() + self.body + b".\r\n"


class Session:
    """One SMTP connection: greeting, EHLO, optionally STARTTLS (+ EHLO again) and AUTH PLAIN."""

    def __init__(self, args, tls_context):
        self.args = args
        self.tls_context = tls_context
        self.reader = self.writer = None

    async def reply(self):
        """Reads one (possibly multi-line) reply; returns (code, text)."""
        lines = []
        while True:
            line = await asyncio.wait_for(self.reader.readline(), self.args.timeout)
            if not line:
                raise ConnectionError("connection closed by the server" + (f" after {lines!r}" if lines else ""))
            lines.append(line.rstrip(b"\r\n").decode(errors="replace"))
            if len(line) < 4 or line[3:4] != b"-":
                break
        try:
            code = int(lines[-1][:3])
        except ValueError:
            raise SMTPError(f"malformed reply {lines!r}") from None
        return code, "\n".join(lines)

    async def command(self, line, expect):
        self.writer.write(line.encode() + b"\r\n")
        code, text = await self.reply()
        if code != expect:
            raise SMTPError(f"{line.split(' ', 1)[0]}: {text}")
        return text

    async def open(self):
        self.reader, self.writer = await asyncio.wait_for(
            asyncio.open_connection(self.args.host, self.args.port, limit=1 << 20), self.args.timeout)
        code, text = await self.reply()
        if code != 220:
            raise SMTPError(f"greeting: {text}")
        await self.command(f"EHLO {self.args.helo}", 250)
        if self.tls_context is not None:
            await self.command("STARTTLS", 220)
            # asyncio's start_tls (loop.start_tls underneath) upgrades the same transport in place.
            await self.writer.start_tls(self.tls_context, server_hostname=self.args.tls_name,
                                        ssl_handshake_timeout=self.args.timeout)
            await self.command(f"EHLO {self.args.helo}", 250)
        if self.args.auth:
            user, password = self.args.auth.split(":", 1)
            token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
            await self.command(f"AUTH PLAIN {token}", 235)

    async def send(self, data):
        """One transaction; returns the accept latency in seconds (final dot written → 250 read)."""
        await self.command(f"MAIL FROM:<{self.args.sender}>", 250)
        await self.command(f"RCPT TO:<{self.args.recipient}>", 250)
        await self.command("DATA", 354)
        self.writer.write(data)
        await self.writer.drain()  # everything up to and including ".\r\n" is in the kernel now
        started = time.perf_counter()
        code, text = await self.reply()
        latency = time.perf_counter() - started
        if code != 250:
            raise SMTPError(f"end of data: {text}")
        return latency

    async def close(self, polite=True):
        if self.writer is None:
            return
        try:
            if polite:
                self.writer.write(b"QUIT\r\n")
                await asyncio.wait_for(self.reply(), 5)
        except Exception:
            pass
        self.writer.close()
        try:
            await asyncio.wait_for(self.writer.wait_closed(), 5)
        except Exception:
            pass
        self.writer = None


class Load:
    """Closed loop (`run_closed`) or open loop (`run_open`); counts, latencies and errors."""

    def __init__(self, args):
        self.args = args
        self.message = Message(args.sender, args.recipient, args.size)
        self.tls_context = None
        if args.starttls:
            if args.cafile:
                self.tls_context = ssl.create_default_context(cafile=args.cafile)
            else:  # no trust anchor given: encrypt, do not verify
                self.tls_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                self.tls_context.check_hostname = False
                self.tls_context.verify_mode = ssl.CERT_NONE
        self.latencies, self.lags = [], []
        self.errors, self.error_samples = 0, []
        self.number = 0

    def failed(self, error):
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(f"{type(error).__name__}: {error}")

    def next_data(self):
        self.number += 1
        return self.message.make(self.number)

    async def one_message(self, session=None):
        """Sends one message on `session` (reused) or on a connection of its own. Returns the
        session to use next time (None when it broke or when connections are not reused)."""
        own = session is None
        try:
            if own:
                session = Session(self.args, self.tls_context)
                await session.open()
            self.latencies.append(await session.send(self.next_data()))
        except Exception as error:  # noqa: BLE001 — every failure counts as one error, the run goes on
            self.failed(error)
            if session is not None:
                await session.close(polite=False)
            return None
        if own or not self.args.reuse:
            await session.close()
            return None
        return session

    async def open_session(self):
        """A new session for reuse, or None (the failure is recorded)."""
        session = Session(self.args, self.tls_context)
        try:
            await session.open()
            return session
        except Exception as error:  # noqa: BLE001
            self.failed(error)
            await session.close(polite=False)
            return None

    async def run_closed(self):
        """`sessions` workers, each sending its next message as soon as the last one is answered,
        until `messages` have been attempted."""
        remaining = self.args.messages

        async def worker():
            nonlocal remaining
            session = None
            while remaining > 0:
                remaining -= 1
                if self.args.reuse and session is None:
                    session = await self.open_session()
                    if session is None:
                        continue
                session = await self.one_message(session if self.args.reuse else None)
            if session is not None:
                await session.close()

        await asyncio.gather(*(worker() for _ in range(self.args.sessions)))

    async def run_open(self):
        """Message i starts at t0 + i / rate whatever the earlier ones are doing (open loop), with
        at most `sessions` in progress at once; a message that finds them all busy starts late, and
        that lag is recorded."""
        total = self.args.messages if self.args.messages else max(1, round(self.args.rate * self.args.duration))
        loop = asyncio.get_running_loop()
        t0 = loop.time() + 0.05

        if self.args.reuse:
            # A pool of `sessions` connections takes scheduled messages from a queue.
            queue = asyncio.Queue()

            async def worker():
                session = None
                while True:
                    scheduled = await queue.get()
                    if scheduled is None:
                        break
                    self.lags.append(max(0.0, loop.time() - scheduled))
                    if session is None:
                        session = await self.open_session()
                        if session is None:
                            continue
                    session = await self.one_message(session)
                if session is not None:
                    await session.close()

            workers = [asyncio.create_task(worker()) for _ in range(self.args.sessions)]
            for i in range(total):
                delay = t0 + i / self.args.rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                queue.put_nowait(t0 + i / self.args.rate)
            for _ in workers:
                queue.put_nowait(None)
            await asyncio.gather(*workers)
        else:
            # A new connection per message, at most `sessions` at once.
            slots = asyncio.Semaphore(self.args.sessions)
            tasks = []

            async def one(scheduled):
                try:
                    self.lags.append(max(0.0, loop.time() - scheduled))
                    await self.one_message()
                finally:
                    slots.release()

            for i in range(total):
                scheduled = t0 + i / self.args.rate
                delay = scheduled - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                await slots.acquire()
                tasks.append(asyncio.create_task(one(scheduled)))
            await asyncio.gather(*tasks)

    def result(self, elapsed):
        out = {"count": len(self.latencies), "errors": self.errors, "elapsed": round(elapsed, 3),
               "msgs_per_s": round(len(self.latencies) / elapsed, 2) if elapsed > 0 else None,
               "latency_ms": summary_ms(self.latencies),
               "mode": "open" if self.args.rate else "closed", "sessions": self.args.sessions,
               "size": self.args.size, "reuse": self.args.reuse, "starttls": self.args.starttls,
               "auth": bool(self.args.auth)}
        if self.args.rate:
            out["rate"] = self.args.rate
            out["lag_ms"] = summary_ms(self.lags)
        if self.error_samples:
            out["error_samples"] = self.error_samples
        return out


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("target", help="host:port, a loopback address (127.0.0.0/8 or ::1)")
    p.add_argument("--sessions", type=int, default=20,
                   help="concurrent connections (open loop: at most this many messages in progress)")
    p.add_argument("--messages", type=int, default=None,
                   help="messages to send (closed loop: default 1000; open loop: default rate × duration)")
    p.add_argument("--size", type=int, default=10240, help="body size in octets, like smtp-source -l (default 10240)")
    p.add_argument("--reuse", action="store_true", help="keep each connection for the next message "
                   "(default: a new connection per message)")
    p.add_argument("--starttls", action="store_true", help="STARTTLS after EHLO (then EHLO again)")
    p.add_argument("--cafile", help="verify the server's certificate against this PEM (default: not verified)")
    p.add_argument("--tls-name", default=None, help="name to verify the certificate for (default: the host)")
    p.add_argument("--auth", metavar="USER:PASSWORD", help="AUTH PLAIN after EHLO (after STARTTLS if given)")
    p.add_argument("--rate", type=float, default=None, help="open loop: start messages at this fixed rate (msg/s)")
    p.add_argument("--duration", type=float, default=20.0, help="open loop: seconds to run when --messages is not given")
    p.add_argument("--from", dest="sender", default="bench@customer.test")
    p.add_argument("--to", dest="recipient", default="sink@dest.test")
    p.add_argument("--helo", default="load.bench.test")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for any one reply")
    args = p.parse_args(argv)
    host, _, port = args.target.rpartition(":")
    args.host, args.port = host.strip("[]"), int(port)
    try:
        loopback = ipaddress.ip_address(args.host).is_loopback
    except ValueError:
        loopback = args.host == "localhost"
    if not loopback:
        p.error(f"{args.host}: only loopback targets (127.0.0.0/8, ::1, localhost)")
    if args.sessions < 1 or (args.rate is not None and args.rate <= 0):
        p.error("--sessions and --rate must be positive")
    if args.rate is None and args.messages is None:
        args.messages = 1000
    args.tls_name = args.tls_name or args.host
    return args


def main(argv=None):
    args = parse_args(argv)
    load = Load(args)
    started = time.perf_counter()
    asyncio.run(load.run_open() if args.rate else load.run_closed())
    print(json.dumps(load.result(time.perf_counter() - started)))
    return 0 if load.latencies else 1


if __name__ == "__main__":
    sys.exit(main())
