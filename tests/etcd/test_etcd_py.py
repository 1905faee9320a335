"""The Python module with etcd metadata: initialize(local_hostname,
'etcd://HOST:PORT') publishes the engine under local_hostname; another
process moves numpy arrays to and from it by that name (checksums on both
sides); when the target leaves, the next call raises teshim.Error with
errno EHOSTDOWN, and the call after it reaches the engine published under
the name since. Starts a real etcd (etcd-server) on loopback and stops it;
exits 77 (skipped) without an etcd binary.

Run: PYTHONPATH=build/python python3 tests/etcd/test_etcd_py.py -v
(`--serve SPEC SEED` is the target process the test starts.)
"""
import errno
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

import numpy

import teshim

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
from teshim_peer import Target, digest, pattern, serve_array  # noqa: E402

N = (1 << 20) + 7


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(spec, seed):
    """Target process: serve an array under the name 'localhost'."""
    eng = teshim.TransferEngine()
    eng.initialize("localhost", spec, "tcp", "")
    serve_array(eng, pattern(N, seed))


class Etcd:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="teshim-etcd-")
        port, peer = free_port(), free_port()
        client, purl = "http://127.0.0.1:%d" % port, "http://127.0.0.1:%d" % peer
        self.spec = "etcd://127.0.0.1:%d" % port
        self.log = open(os.path.join(self.dir, "etcd.log"), "w")
        self.proc = subprocess.Popen(
            ["etcd", "--name", "t", "--data-dir", os.path.join(self.dir, "data"),
             "--listen-client-urls", client, "--advertise-client-urls", client,
             "--listen-peer-urls", purl, "--initial-advertise-peer-urls", purl,
             "--initial-cluster", "t=" + purl], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while True:
            try:
                req = urllib.request.Request(client + "/v3/kv/range", data=b'{"key":"AA=="}')
                with urllib.request.urlopen(req, timeout=2):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("etcd did not start within 20 s")
                time.sleep(0.1)

    def stop(self):
        self.proc.kill()
        self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir)


class ByNameThroughEtcd(unittest.TestCase):
    def setUp(self):
        self.etcd = Etcd()

    def tearDown(self):
        self.etcd.stop()

    def test_numpy_by_name_and_peer_exit(self):
        t = Target(__file__, self.etcd.spec, "1")
        self.assertEqual(t.name, "localhost")
        eng = teshim.TransferEngine()
        self.assertEqual(eng.initialize("127.0.0.1", self.etcd.spec, "tcp", ""), 0)
        self.assertEqual(eng.segment_name, "127.0.0.1")
        got = numpy.zeros(N, dtype=numpy.uint8)
        mine = pattern(N, 2)
        eng.register_memory(got)
        eng.register_memory(mine)
        self.assertEqual(eng.transfer_sync_read(t.name, got, t.addr), 0)
        self.assertEqual(digest(got), t.digest())
        self.assertEqual(eng.transfer_sync_write(t.name, mine, t.addr), 0)
        self.assertEqual(t.digest(), digest(mine))

        # the target leaves (its key is revoked) and another takes the name
        self.assertEqual(t.stop(), 0)
        time.sleep(0.5)  # the watch's DELETE event
        t2 = Target(__file__, self.etcd.spec, "3")
        with self.assertRaises(teshim.Error) as cm:
            eng.transfer_sync_read(t.name, got, t.addr)
        self.assertEqual(cm.exception.errno, errno.EHOSTDOWN)
        # the next call opens the name again: the new engine
        self.assertEqual(eng.transfer_sync_read(t2.name, got, t2.addr), 0)
        self.assertEqual(digest(got), t2.digest())
        self.assertEqual(digest(got), digest(pattern(N, 3)))
        self.assertEqual(t2.stop(), 0)
        eng.close()


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--serve":
        serve(sys.argv[2], int(sys.argv[3]))
        sys.exit(0)
    if not shutil.which("etcd"):
        print("SKIP: no etcd binary on PATH (Debian package etcd-server; scripts/deps.sh)")
        sys.exit(77)
    unittest.main()
