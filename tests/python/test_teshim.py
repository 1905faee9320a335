"""The Python module teshim: numpy arrays between two engines in two
processes (checksums on both sides), the Mooncake-shaped and teshim's own
methods, errors as exceptions, the GIL released during engine calls, and a
docstring on everything public.

Run: PYTHONPATH=build/python python3 tests/python/test_teshim.py -v
(`test_teshim.py --serve` is the target process the tests start.)
"""
import errno
import os
import socket
import subprocess
import sys
import threading
import time
import unittest

import numpy

import teshim
from teshim_peer import Target, digest, pattern, serve_array

N = (1 << 20) + 123  # bytes the target serves


def serve():
    """Target process: serve a numpy array; answer 'sum' with its digest."""
    eng = teshim.TransferEngine()
    eng.initialize("127.0.0.1", "P2PHANDSHAKE", "tcp", "")
    serve_array(eng, pattern(N, 1))


class TwoProcesses(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.target = Target(__file__)

    @classmethod
    def tearDownClass(cls):
        assert cls.target.stop() == 0, "target process failed"

    def setUp(self):
        self.eng = teshim.TransferEngine()
        self.assertEqual(self.eng.initialize("127.0.0.1:9999", "P2PHANDSHAKE", "tcp", ""), 0)

    def tearDown(self):
        self.eng.close()

    def test_numpy_round_trip(self):
        t = self.target
        got = numpy.zeros(N, numpy.uint8)
        mine = pattern(1 << 18, 2).view(numpy.float32)  # any dtype: bytes move
        self.eng.register_memory(got)
        self.eng.register_memory(mine)
        self.assertEqual(self.eng.transfer_sync_read(t.name, got, t.addr), 0)
        self.assertEqual(digest(got), digest(pattern(N, 1)))
        self.assertEqual(self.eng.transfer_sync_write(t.name, mine, t.addr), 0)
        self.assertEqual(t.digest(), digest(numpy.concatenate(
            [mine.view(numpy.uint8), pattern(N, 1)[mine.nbytes:]])))
        back = numpy.zeros_like(mine)
        self.eng.register_memory(back)
        self.eng.transfer_sync_read(t.name, back, t.addr)
        self.assertEqual(digest(back), digest(mine))  # bytes: random floats hold NaNs
        # restore the target's pattern for the other tests
        self.eng.transfer_sync_write(t.name, got, t.addr)
        self.assertEqual(t.digest(), digest(pattern(N, 1)))
        self.assertEqual(self.eng.stats()["failed"], 0)
        self.assertGreaterEqual(self.eng.stats()["bytes"], 2 * N)

    def test_batches_addresses_and_async(self):
        t = self.target
        buf = numpy.zeros(N, numpy.uint8)
        self.eng.register_memory(buf.ctypes.data, buf.nbytes)  # as with torch's data_ptr()
        chunks = [(0, 4096), (10000, 65536), (N - 1000, 1000)]
        base = buf.ctypes.data
        self.eng.batch_transfer_sync_read(t.name, [base + o for o, _ in chunks],
                                          [t.addr + o for o, _ in chunks],
                                          [n for _, n in chunks])
        want = pattern(N, 1)
        for o, n in chunks:
            self.assertTrue(numpy.array_equal(buf[o:o + n], want[o:o + n]))
        # slices are buffer objects too; the async batch keeps them exported
        views = [buf[o:o + n] for o, n in chunks]
        bid = self.eng.batch_transfer_async_write(t.name, views, [t.addr + o for o, _ in chunks])
        self.assertGreater(bid, 0)
        self.assertEqual(self.eng.get_batch_transfer_status([bid]), 0)
        self.assertEqual(t.digest(), digest(want))
        bid = self.eng.batch_transfer_async(t.name, [buf], [t.addr], None,
                                            teshim.TransferOpcode.READ)
        self.assertEqual(self.eng.get_batch_transfer_status([bid]), 0)
        bid = self.eng.transfer_submit_write(t.name, base, t.addr, N)
        deadline = time.monotonic() + 20
        while (st := self.eng.transfer_check_status(bid)) == 0:
            self.assertLess(time.monotonic(), deadline)
            time.sleep(0.001)
        self.assertEqual(st, 1)
        self.assertEqual(self.eng.transfer_sync(t.name, buf, t.addr, 64,
                                                teshim.TransferOpcode.WRITE), 0)
        self.assertEqual(t.digest(), digest(want))
        self.eng.unregister_memory(base)

    def test_segments_and_managed_buffers(self):
        t = self.target
        self.assertEqual(self.eng.get_first_buffer_address(t.name), t.addr)
        self.assertEqual(self.eng.segment_regions(t.name), [(t.addr, N, False)])
        self.assertIn(self.eng.segment_transport(t.name), ("tcp", "local", "local-target"))
        self.assertEqual(self.eng.send_probe(t.name), 0)
        addr = self.eng.allocate_managed_buffer(8192)
        self.assertNotEqual(addr, 0)
        self.eng.write_bytes_to_buffer(addr, b"teshim" * 10)
        self.eng.transfer_sync_write(t.name, addr, t.addr + 100, 60)
        self.eng.transfer_sync_read(t.name, addr + 4096, t.addr + 100, 60)
        self.assertEqual(self.eng.read_bytes_from_buffer(addr + 4096, 60), b"teshim" * 10)
        self.eng.write_bytes_to_buffer(addr, memoryview(pattern(N, 1))[100:160])
        self.eng.transfer_sync_write(t.name, addr, t.addr + 100, 60)
        self.assertEqual(t.digest(), digest(pattern(N, 1)))
        self.assertEqual(self.eng.free_managed_buffer(addr, 8192), 0)
        with self.assertRaises(teshim.Error) as cm:
            self.eng.free_managed_buffer(addr, 8192)
        self.assertEqual(cm.exception.errno, errno.ENOENT)
        self.eng.close_segment(t.name)
        with self.assertRaises(teshim.Error):
            self.eng.close_segment(t.name)

    def test_errors_are_exceptions(self):
        t = self.target
        small = bytearray(64)
        self.eng.register_memory(small)
        with self.assertRaises(teshim.Error) as cm:
            self.eng.transfer_sync_read(t.name, small, t.addr + N - 8)  # past the peer's region
        self.assertEqual(cm.exception.errno, errno.EFAULT)
        self.assertIn(t.name, str(cm.exception))
        with self.assertRaises(TypeError):
            self.eng.transfer_sync_read(t.name, bytes(64), t.addr)  # cannot be written into
        with self.assertRaises(ValueError):
            self.eng.transfer_sync_write(t.name, small, t.addr, 65)  # longer than the object
        with self.assertRaises(teshim.Error) as cm:
            self.eng.register_memory(memoryview(small)[8:])
        self.assertEqual(cm.exception.errno, errno.EEXIST)
        with self.assertRaises(teshim.Error) as cm:
            self.eng.transfer_sync_write(t.name, bytearray(8), t.addr)  # not registered
        self.assertEqual(cm.exception.errno, errno.EFAULT)
        with self.assertRaises(teshim.Error) as cm:
            self.eng.unregister_memory(12345)
        self.assertEqual(cm.exception.errno, errno.ENOENT)
        self.assertIsInstance(cm.exception, OSError)
        with socket.socket() as s:  # a port nobody listens on
            s.bind(("127.0.0.1", 0))
            dead = "127.0.0.1:%d" % s.getsockname()[1]
        with self.assertRaises(teshim.Error) as cm:
            self.eng.transfer_sync_write(dead, small, 4096, 8)
        self.assertIn(cm.exception.errno, (errno.ECONNREFUSED, errno.ETIMEDOUT))
        # Mooncake's convention on request
        quiet = teshim.TransferEngine("127.0.0.1:0", raise_errors=False)
        self.assertEqual(quiet.unregister_memory(12345), -errno.ENOENT)
        self.assertEqual(quiet.transfer_submit_write(dead, small, 4096, 8), 0)
        self.assertEqual(quiet.get_batch_transfer_status([42]), -1)
        with self.assertRaises(TypeError):
            quiet.register_memory("not a buffer")
        quiet.close()
        with self.assertRaises(teshim.Error) as cm:
            teshim.TransferEngine().initialize("127.0.0.1", "P2PHANDSHAKE", "rdma", "")
        self.assertEqual(cm.exception.errno, errno.EPROTONOSUPPORT)
        with self.assertRaises(teshim.Error) as cm:
            teshim.TransferEngine().get_rpc_port()
        self.assertEqual(cm.exception.errno, errno.ENOTCONN)
        with self.assertRaises(teshim.Error):
            self.eng.initialize("127.0.0.1", "P2PHANDSHAKE", "tcp", "")  # already started


class Gil(unittest.TestCase):
    def test_released_while_the_engine_waits(self):
        """A handshake with a peer that never answers blocks one thread; the
        others run meanwhile, and close() refuses to pull the engine away."""
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel accepts; nobody answers the handshake
        name = "127.0.0.1:%d" % silent.getsockname()[1]
        eng = teshim.TransferEngine("127.0.0.1:0")
        result = []
        th = threading.Thread(target=lambda: result.append(self._probe(eng, name)))
        th.start()
        spins, deadline = 0, time.monotonic() + 0.5
        while time.monotonic() < deadline:
            spins += 1
        self.assertTrue(th.is_alive(), "the probe held the GIL until it returned")
        self.assertGreater(spins, 1000)
        with self.assertRaises(teshim.Error) as cm:
            eng.close()
        self.assertEqual(cm.exception.errno, errno.EBUSY)
        th.join(30)
        self.assertFalse(th.is_alive())
        self.assertIsInstance(result[0], teshim.Error)
        eng.close()
        silent.close()

    @staticmethod
    def _probe(eng, name):
        try:
            return eng.send_probe(name)
        except teshim.Error as e:
            return e


class Documentation(unittest.TestCase):
    def public(self):
        for name in dir(teshim):
            if not name.startswith("_"):
                yield "teshim." + name, getattr(teshim, name)
        for name, obj in vars(teshim.TransferEngine).items():
            if not name.startswith("_") or name in ("__enter__", "__exit__"):
                yield "TransferEngine." + name, obj

    def test_everything_public_has_a_docstring(self):
        names = []
        for name, obj in self.public():
            if callable(obj) or isinstance(obj, type) or hasattr(obj, "__get__"):
                doc = getattr(obj, "__doc__", None)
                self.assertTrue(doc and len(doc.strip()) > 20, name + " has no docstring")
                names.append(name)
        self.assertIn("TransferEngine.transfer_sync_write", names)
        self.assertIn("teshim.Error", names)
        self.assertGreater(len(names), 30)

    def test_help_documents_every_method(self):
        out = subprocess.run([sys.executable, "-c", "import teshim; help(teshim)"],
                             capture_output=True, text=True, timeout=60,
                             env=dict(os.environ, PAGER="cat", TERM="dumb"))
        self.assertEqual(out.returncode, 0, out.stderr)
        for name, obj in self.public():
            if name.startswith("TransferEngine.") and callable(obj):
                self.assertIn(name.split(".")[1] + "(", out.stdout, name)
        self.assertIn("Mooncake", out.stdout)


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        serve()
    else:
        os.environ.setdefault("TESHIM_ENGINE_CONNECT_TIMEOUT_MS", "2000")
        unittest.main()
