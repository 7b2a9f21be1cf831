"""runtime/distributed.py's process exit: a torchrun worker of several leaves by os._exit after its atexit
handlers; a single process by sys.exit."""
import subprocess
import sys

import pytest

from tests.trainer import ROOT

SCRIPT = """
import atexit
from runtime.distributed import exit_process
atexit.register(lambda: print("atexit handler ran", flush=True))
print("buffered line", end="")  # no newline, no flush: exit_process must flush it
exit_process(5)
print("not reached")
"""


@pytest.mark.parametrize("world", ["1", "2"])
def test_exit_process_runs_atexit_flushes_and_keeps_the_code(world):
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={"WORLD_SIZE": world, "PATH": "/usr/bin:/bin"})
    assert done.returncode == 5, done.stderr
    assert done.stdout.startswith("buffered line") and "atexit handler ran" in done.stdout
    assert "not reached" not in done.stdout
