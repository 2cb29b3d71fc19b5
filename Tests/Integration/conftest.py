import shutil
import tempfile
from pathlib import Path

import pytest

from harness import Gateway, RedisServer, Sink


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


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)
