"""What the Python tests share: the pattern and digest of a served array,
and a target process (the test script itself, run with --serve ARGS) that
registers an array, prints its segment name and address as JSON, and
answers 'sum' on stdin with the array's digest until stdin closes."""
import hashlib
import json
import subprocess
import sys

import numpy


def pattern(n, seed):
    return numpy.random.default_rng(seed).integers(0, 256, n, dtype=numpy.uint8)


def digest(arr):
    return hashlib.sha256(memoryview(arr).cast("B")).hexdigest()


def serve_array(eng, arr):
    """The target's side: announce arr of engine eng, answer digests."""
    eng.register_memory(arr)
    print(json.dumps({"name": eng.segment_name, "addr": arr.ctypes.data}), flush=True)
    for line in sys.stdin:
        if line.strip() == "sum":
            print(digest(arr), flush=True)
    eng.close()


class Target:
    """The target process, started and stopped by the tests: script --serve ARGS."""

    def __init__(self, script, *args):
        self.proc = subprocess.Popen([sys.executable, script, "--serve", *args],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        info = json.loads(self.proc.stdout.readline())
        self.name, self.addr = info["name"], info["addr"]

    def digest(self):
        self.proc.stdin.write("sum\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def stop(self):
        self.proc.stdin.close()
        try:
            return self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
