"""Every test runs in the process's pool (started once, 256 MiB) and must
leave it as it found it: no block of the test still live after a collection."""

import gc
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import arraypool

FIXTURES = Path(__file__).parent / "fixtures"
REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="session")
def pool():
    # A pool of our own, not one inherited from whatever started pytest.
    os.environ.pop(arraypool.SEGMENT_ENV, None)
    return arraypool.start_pool(size="256M")


@pytest.fixture(autouse=True)
def no_blocks_left(pool):
    gc.collect()
    before = pool.stats()
    yield
    gc.collect()
    after = pool.stats()
    assert after["live_blocks"] == before["live_blocks"], "a test left blocks in the pool"
    assert after["held_references"] == before["held_references"]
    assert pool.check()["violation"] is None


class Member:
    """A child process (Python or Node) speaking JSON lines on stdio."""

    def __init__(self, argv, env=None):
        import json

        self._json = json
        self.process = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env if env is not None else os.environ.copy(),
            text=True,
        )
        self.ready = self.read()

    def read(self):
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"member exited: {self.process.wait()}")
        return self._json.loads(line)

    def request(self, **message):
        self.process.stdin.write(self._json.dumps(message) + "\n")
        self.process.stdin.flush()
        return self.read()

    def kill(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self):
        if self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait(timeout=30)
        self.process.stdout.close()


def member_fixture(command):
    """A fixture that starts members running `command` and kills them after the test."""

    @pytest.fixture
    def members(pool):
        started = []

        def start():
            m = Member(command)
            started.append(m)
            return m

        yield start
        for m in started:
            m.kill()
            m.process.stdout.close()

    return members


python_member = member_fixture([sys.executable, str(FIXTURES / "member.py")])
