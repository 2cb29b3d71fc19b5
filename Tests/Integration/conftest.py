import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from harness import ROOT, Gateway, RedisServer, Sink, free_port


@pytest.fixture
def workdir():
    d = Path(tempfile.mkdtemp(prefix="smg-it-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def redis_server(workdir):
    server = RedisServer(workdir)
    yield server
    server.stop()


@pytest.fixture
def sink():
    s = Sink()
    yield s
    s.stop()


@pytest.fixture
def gateway(workdir, redis_server, sink, request):
    gw = Gateway(workdir, redis_server, sink)
    yield gw
    gw.stop_all()
    if request.node.rep_call.failed if hasattr(request.node, "rep_call") else False:
        for name in gw.logs:
            print(f"----- {name} log (tail) -----")
            print("\n".join(gw.log_text(name).splitlines()[-40:]))


class DNSFixture:
    """The knot + validating unbound fixture (Tests/Fixtures/dns/start-dns.sh) on 127.0.0.1.

    `extra_zones`: a directory with a zones.list and <zone>.zone files (same layout as
    Tests/Fixtures/dns/zones), handed to the script as SMG_DNS_EXTRA_ZONES."""

    SCRIPTS = ROOT / "Tests" / "Fixtures" / "dns"

    def __init__(self, workdir: Path, extra_zones=None):
        self.workdir = Path(workdir)
        self.auth_port, self.resolver_port = free_port(), free_port()
        while self.resolver_port == self.auth_port:
            self.resolver_port = free_port()
        env = dict(os.environ)
        env.pop("SMG_DNS_EXTRA_ZONES", None)
        if extra_zones:
            env["SMG_DNS_EXTRA_ZONES"] = str(extra_zones)
        out = subprocess.run([str(self.SCRIPTS / "start-dns.sh"), str(self.workdir), str(self.auth_port),
                              str(self.resolver_port)], capture_output=True, text=True, timeout=120, env=env,
                             stdin=subprocess.DEVNULL)
        assert out.returncode == 0, out.stdout + out.stderr

    @property
    def server(self) -> str:
        """The resolver as the gateway's `dns.servers` wants it."""
        return f"127.0.0.1:{self.resolver_port}"

    def dig(self, name: str, rtype: str = "A") -> list:
        """The answer section's data for name/rtype (dig +short), from the resolver."""
        out = subprocess.run(["dig", "+short", "+time=2", "+tries=2", "@127.0.0.1", "-p", str(self.resolver_port),
                              name, rtype], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
        assert out.returncode == 0, out.stderr
        return [line.strip() for line in out.stdout.splitlines() if line.strip()]

    def stop(self):
        subprocess.run([str(self.SCRIPTS / "stop-dns.sh"), str(self.workdir)], capture_output=True, timeout=60,
                       stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def dns_fixture(tmp_path_factory, request):
    """The DNS fixture for one test module. A module that sets `DNS_EXTRA_ZONES = <directory>`
    gets those zones served as well."""
    fixture = DNSFixture(tmp_path_factory.mktemp("dns"), getattr(request.module, "DNS_EXTRA_ZONES", None))
    yield fixture
    fixture.stop()


@pytest.fixture(scope="module")
def dns(dns_fixture):
    """`127.0.0.1:<resolver port>` of the module's DNS fixture (for SMG_DNS_SERVERS)."""
    return dns_fixture.server


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)
