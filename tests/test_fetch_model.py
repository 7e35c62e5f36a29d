"""`python -m edge_runtime fetch-model` and the torch-free pieces under it (edge_runtime/modelzoo): downloads
from a real HTTP server on 127.0.0.1 (good, wrong checksum, truncated), .pth files that would run code,
and the untrained demo model through the real daemon. No torch here (tests/models/test_model_torchfree.py
compares against PyTorch); the .pth files are written by tests/pthfile.py in torch.save's format."""

from __future__ import annotations

import hashlib
import http.server
import json
import pickle
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, daemon_env, run_daemon
from pthfile import state_dict_pickle, write_aliasing_pth, write_checkpoint, write_pth

onnx = pytest.importorskip("onnx")
import onnxruntime as ort  # noqa: E402

from edge_runtime.modelzoo import fetch  # noqa: E402
from edge_runtime.engines.spec import from_metadata  # noqa: E402
from edge_runtime.modelzoo import mobilenetv3_arch as arch_tables  # noqa: E402
from edge_runtime.modelzoo import mobilenetv3_onnx as builder  # noqa: E402
from edge_runtime.modelzoo import pth  # noqa: E402

SMALL = arch_tables.network("small")


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    """A MobileNetV3-Small .pth with trained-looking statistics (logits of order 1, not 1e-9)."""
    rng = np.random.default_rng(3)
    state = builder.random_state_dict(SMALL, seed=3)
    for key, value in state.items():
        if key.endswith("running_var"):
            state[key] = (rng.random(value.shape) * 0.5 + 0.05).astype(np.float32)
        elif key.endswith(("running_mean", ".1.bias")):
            state[key] = (rng.standard_normal(value.shape) * 0.1).astype(np.float32)
        elif key.startswith("classifier.") and key.endswith("weight"):
            state[key] = (rng.standard_normal(value.shape) / value.shape[1] ** 0.5 * 1.5).astype(np.float32)
    path = write_pth(tmp_path_factory.mktemp("pth") / "small.pth", state)
    return path, state


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def props(path: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def logits(path: Path, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


def fetch_model(capsys, *args) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = fetch.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


class Server:
    """A real HTTP server on 127.0.0.1: path -> bytes; `truncate` paths send half their body under a
    Content-Length for all of it, then hang up."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.truncate: set[str] = set()
        files, truncate = self.files, self.truncate

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2] if self.path in truncate else body)
                self.close_connection = True

            def log_message(self, *_):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


def one_error(err: str) -> bool:
    """Exactly one error line (a progress line may come before it), no traceback."""
    lines = err.strip().splitlines()
    return len(lines) >= 1 and lines[-1].startswith("fetch-model: error: ") and \
        sum("error" in line for line in lines) == 1 and "Traceback" not in err


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# -- the architecture tables -----------------------------------------------------------------------------

def test_pinned_digests_match_torchvision_file_names():
    for arch, w in arch_tables.IMAGENET_WEIGHTS.items():
        assert w.url == f"https://download.pytorch.org/models/{arch}-{w.sha256[:8]}.pth"
        assert len(w.sha256) == 64 and int(w.sha256, 16) and 5e6 < w.size < 5e7


def test_tables_give_the_papers_channel_counts():
    small, large = arch_tables.network("small"), arch_tables.network("large")
    assert (len(small.bnecks), small.last_ch, small.hidden) == (11, 576, 1024)
    assert (len(large.bnecks), large.last_ch, large.hidden) == (15, 960, 1280)
    shapes = builder.expected_shapes(small)
    assert shapes["features.1.block.1.fc1.weight"] == (8, 16, 1, 1)          # SE: 16/4 -> 8 (multiple of 8)
    assert shapes["classifier.3.weight"] == (1000, 1024) and len(shapes) == 244
    assert sum(int(np.prod(s)) for k, s in shapes.items() if "running" not in k and "num_batches" not in k) \
        == 2_542_856                                                            # torchvision's parameter count


# -- downloads --------------------------------------------------------------------------------------------

def test_download_checks_the_sha256_and_writes_a_self_describing_model(server, weights, tmp_path, capsys):
    path, state = weights
    server.files["/w.pth"] = path.read_bytes()
    out = tmp_path / "out" / "model.onnx"
    rc, stdout, err = fetch_model(capsys, "small", "--from", server.url("/w.pth"), "--sha256", sha256(path).upper(),
                                  "--output", out)
    assert rc == 0, err
    assert stdout.strip() == str(out) and "downloading" in err
    meta = props(out)
    spec = from_metadata(meta, str(out))
    assert spec.labels is not None and len(spec.labels) == 1000 and spec.labels[0] == "tench"
    assert spec.input.size == (224, 224) and spec.input.resize == 256 and spec.input.color == "rgb"
    assert meta["edge_runtime.weights"] == f"{server.url('/w.pth')} (sha256 {sha256(path)[:16]})"
    assert meta["edge_runtime.arch"] == "mobilenet_v3_small" and meta["edge_runtime.opset"] == "17"
    assert not spec.untrained
    # The same network as the builder makes from the arrays themselves: the download changed nothing.
    direct = tmp_path / "direct.onnx"
    onnx.save(builder.build(state, SMALL, builder.eval_spec(), {}), str(direct))
    x = np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32)
    got = logits(out, x)
    assert got.shape == (2, 1000) and np.abs(got).max() > 0.5
    np.testing.assert_array_equal(got, logits(direct, x))
    assert leftovers(out.parent) == ["model.onnx"]


def test_wrong_checksum_writes_nothing_and_keeps_the_old_model(server, weights, tmp_path, capsys):
    path, _ = weights
    server.files["/w.pth"] = path.read_bytes()
    out = tmp_path / "model.onnx"
    out.write_bytes(b"the old model")
    rc, stdout, err = fetch_model(capsys, "--from", server.url("/w.pth"), "--sha256", "0" * 64, "--output", out)
    assert rc == 2 and stdout == ""
    assert one_error(err) and "SHA-256 mismatch" in err and sha256(path) in err and "nothing written" in err
    assert out.read_bytes() == b"the old model" and leftovers(tmp_path) == ["model.onnx"]
    # Without --sha256 a URL must be a copy of torchvision's file: its pinned digest is checked.
    rc, _, err = fetch_model(capsys, "--from", server.url("/w.pth"), "--output", out)
    assert rc == 2 and arch_tables.IMAGENET_WEIGHTS["mobilenet_v3_small"].sha256 in err
    assert out.read_bytes() == b"the old model" and leftovers(tmp_path) == ["model.onnx"]


def test_truncated_download_and_http_errors_write_nothing(server, weights, tmp_path, capsys):
    path, _ = weights
    server.files["/cut.pth"] = path.read_bytes()
    server.truncate.add("/cut.pth")
    out = tmp_path / "model.onnx"
    rc, stdout, err = fetch_model(capsys, "--from", server.url("/cut.pth"), "--sha256", sha256(path), "--output", out)
    assert rc == 2 and stdout == "" and one_error(err), err
    assert ("truncated" in err or "broke off" in err) and "nothing written" in err
    rc, _, err = fetch_model(capsys, "--from", server.url("/missing.pth"), "--sha256", sha256(path), "--output", out)
    assert rc == 2 and "HTTP 404" in err and one_error(err)
    assert leftovers(tmp_path) == []


def test_unreachable_server_says_what_to_do_offline(tmp_path, capsys):
    rc, _, err = fetch_model(capsys, "--from", "http://127.0.0.1:9/w.pth", "--sha256", "0" * 64,
                             "--output", tmp_path / "m.onnx")
    assert rc == 2 and err.count("\n") == 1
    assert "Offline?" in err and "--from FILE.pth" in err and leftovers(tmp_path) == []


class Trickler:
    """A hostile 'mirror' on 127.0.0.1: /body sends its headers, then one byte every 0.1 s of a large body;
    /head sends even the status line a byte at a time; /loop redirects to itself; /ftp and /file redirect
    to other schemes; /deep redirects 10 times."""

    def __init__(self):
        import socket as socket_mod

        self.sock = socket_mod.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _serve(self):
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn):
        try:
            conn.settimeout(5)
            path = conn.recv(4096).split(b" ")[1].decode().split("?")[0]
            if path.startswith("/body"):
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10000000\r\n\r\n")
                while not self.stop.is_set():
                    conn.sendall(b"x")
                    time.sleep(0.1)
            elif path == "/head":
                for byte in b"HTTP/1.1 200 OK\r\n" + b"X-Slow: " + b"y" * 10000:
                    if self.stop.is_set():
                        break
                    conn.sendall(bytes([byte]))
                    time.sleep(0.1)
            else:
                target = {"/loop": "/loop", "/ftp": "ftp://127.0.0.1/w.pth", "/file": "file:///etc/passwd"}.get(path)
                if target is None and path.startswith("/deep"):
                    n = int(path[5:] or 0)
                    target = f"/deep{n + 1}"
                conn.sendall(f"HTTP/1.1 302 Found\r\nLocation: {target}\r\nContent-Length: 0\r\n"
                             "Connection: close\r\n\r\n".encode())
        except OSError:
            pass
        finally:
            conn.close()

    def close(self):
        self.stop.set()
        self.sock.close()


@pytest.fixture
def trickler():
    t = Trickler()
    yield t
    t.close()


@pytest.mark.parametrize("path", ["/body", "/head"])
def test_a_trickling_server_is_given_up_at_the_deadline(trickler, tmp_path, capsys, path):
    out = tmp_path / "new" / "deeper" / "m.onnx"
    t0 = time.monotonic()
    rc, stdout, err = fetch_model(capsys, "--from", trickler.url(path) + "?token=s3cr3t-t0k", "--sha256", "0" * 64,
                                  "--output", out, "--timeout", "1.5")
    took = time.monotonic() - t0
    assert rc == 2 and stdout == "" and one_error(err), err
    assert "did not finish" in err and ("--timeout" in err or "in time" in err), err
    assert "s3cr3t-t0k" not in err and "token=***" in err
    assert took < 30, took                                    # not the 10 MB at 10 bytes a second
    assert leftovers(tmp_path) == []                          # the folders it made are gone again


@pytest.mark.parametrize("path, expect", [
    ("/loop", "redirect"),
    ("/deep", "redirect"),
    ("/ftp", "not http(s)://"),
    ("/file", "not http(s)://"),
])
def test_redirect_errors_are_one_line(trickler, tmp_path, capsys, path, expect):
    out = tmp_path / "made" / "m.onnx"
    rc, stdout, err = fetch_model(capsys, "--from", trickler.url(path), "--sha256", "0" * 64, "--output", out)
    assert rc == 2 and stdout == "" and one_error(err) and err.count("\n") == 1, err
    assert expect in err and "nothing written" in err, err
    assert leftovers(tmp_path) == []


def test_a_failed_download_keeps_folders_that_were_there(server, tmp_path, capsys):
    keep = tmp_path / "models"
    keep.mkdir()
    (keep / "other.onnx").write_bytes(b"x")
    rc, _, err = fetch_model(capsys, "--from", server.url("/missing.pth"), "--sha256", "0" * 64,
                             "--output", keep / "sub" / "m.onnx")
    assert rc == 2 and "HTTP 404" in err
    assert leftovers(tmp_path) == ["models"] and leftovers(keep) == ["other.onnx"]


def test_local_file_and_the_command_line(weights, tmp_path):
    """Through `python -m edge_runtime fetch-model`, as a user runs it (cwd: the default output folder)."""
    path, _ = weights
    proc = subprocess.run([sys.executable, "-m", "edge_runtime", "fetch-model", "--from", str(path)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path, env=daemon_env())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "models/mobilenetv3_small.onnx"
    assert (tmp_path / "models" / "mobilenetv3_small.onnx").stat().st_size > 5e6
    assert props(tmp_path / "models" / "mobilenetv3_small.onnx")["edge_runtime.weights"].startswith(str(path))


# -- hostile .pth files -----------------------------------------------------------------------------------

EVIL = {
    "os.system": b"cos\nsystem\n(S'touch {marker}'\ntR.",
    "posix.system": b"cposix\nsystem\n(S'touch {marker}'\ntR.",
    "builtins.eval": b"cbuiltins\neval\n(S'open(\"{marker}\", \"w\")'\ntR.",
    "subprocess.Popen": b"csubprocess\nPopen\n((S'touch'\nS'{marker}'\nltR.",
}


@pytest.mark.parametrize("name", sorted(EVIL))
def test_a_pth_that_would_run_code_is_refused_and_runs_nothing(name, tmp_path, capsys):
    marker = tmp_path / "pwned"
    payload = EVIL[name].replace(b"{marker}", str(marker).encode())
    # Plain pickle runs what such a file names (shown with a harmless call of the same form).
    assert pickle.loads(b"cos\ngetcwd\n(tR.") == __import__("os").getcwd()
    evil_zip = write_pth(tmp_path / "evil.pth", {"a": np.zeros(2, np.float32)}, pickle_bytes=payload)
    evil_legacy = tmp_path / "evil_legacy.pth"
    evil_legacy.write_bytes(payload)
    for path in (evil_zip, evil_legacy):
        with pytest.raises(pth.PthError, match=f"refused: the pickle calls {name}"):
            pth.load(path)
        out = tmp_path / "m.onnx"
        rc, stdout, err = fetch_model(capsys, "--from", path, "--output", out)
        assert rc == 2 and stdout == "" and err.count("\n") == 1, err
        assert f"refused: the pickle calls {name}" in err and "nothing written" in err
        assert not out.exists() and not marker.exists()


def test_truncated_garbage_and_misfitting_pth_files(weights, tmp_path, capsys):
    path, state = weights
    cases = {
        "half.pth": path.read_bytes()[: path.stat().st_size // 2],
        "empty.pth": b"",
        "text.pth": b"hello, not weights\n" * 10,
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    short = dict(state)
    del short["classifier.3.bias"]
    write_pth(tmp_path / "short.pth", short)
    # A pickle that claims more data than the archive stores for it.
    write_pth(tmp_path / "lying.pth", {"a": np.zeros(2, np.float32)},
              pickle_bytes=state_dict_pickle({"a": np.zeros(4, np.float32)})[0])
    out = tmp_path / "m.onnx"
    for name, expect in [("half.pth", ""), ("empty.pth", ""), ("text.pth", ""),
                         ("short.pth", "1 missing (e.g. classifier.3.bias)"), ("lying.pth", "storage 0 has 8 bytes")]:
        rc, stdout, err = fetch_model(capsys, "--from", tmp_path / name, "--output", out)
        assert rc == 2 and stdout == "" and err.count("\n") == 1, (name, err)
        assert str(tmp_path / name) in err and expect in err and "Traceback" not in err, (name, err)
        assert not out.exists()


def test_pth_reader_bounds_views_and_dtypes(tmp_path):
    arrays = {"f32": np.arange(12, dtype=np.float32).reshape(3, 4), "f16": np.ones(3, np.float16),
              "f64": np.full((2, 2), 0.5), "i64": np.array(7, np.int64)}
    got = pth.load(write_pth(tmp_path / "ok.pth", arrays))
    for key, value in arrays.items():
        assert got[key].dtype == value.dtype and got[key].shape == value.shape
        np.testing.assert_array_equal(got[key], value)
    with pytest.raises(pth.PthError, match="expected a state dict"):
        pth.load_state_dict(write_pth(tmp_path / "none.pth", {}))
    # A zero-stride view that would turn 4 stored bytes into 4 GB: refused before any copy.
    bomb, _ = state_dict_pickle({"a": np.zeros(1, np.float32)})
    one, same = b"(J\x01\x00\x00\x00t(J\x01\x00\x00\x00t", b"(J\x00\xca\x9a\x3bt(J\x00\x00\x00\x00t"
    assert bomb.count(one) == 1
    bomb = bomb.replace(one, same)                 # size (1,), stride (1,) -> size (10**9,), stride (0,)
    with pytest.raises(pth.PthError, match="more elements than its storage"):
        pth.load(write_pth(tmp_path / "bomb.pth", {"a": np.zeros(1, np.float32)}, pickle_bytes=bomb))


def test_a_link_planted_at_the_temporary_name_is_not_written_through(weights, tmp_path, capsys):
    """The temporary model file used to be .<name>.<pid>.tmp: a link planted there by another account
    overwrote its target. Now it has a random name, created exclusively."""
    import os

    path, _ = weights
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "models" / "m.onnx"
    out.parent.mkdir()
    planted = out.parent / f".m.onnx.{os.getpid()}.tmp"
    planted.symlink_to(victim)
    rc, _, err = fetch_model(capsys, "--from", path, "--output", out)
    assert rc == 0, err
    assert victim.read_text() == "precious" and planted.is_symlink()
    assert out.is_file() and not out.is_symlink() and out.stat().st_size > 5e6
    assert leftovers(out.parent) == sorted([planted.name, "m.onnx"])


# -- memory bounds and checkpoint fields (issue 28.4) ----------------------------------------------------

def fetch_model_limited(*args, limit_mb: int = 400) -> subprocess.CompletedProcess:
    """`python -m edge_runtime fetch-model` under an address-space limit: a refusal must come before any
    large allocation, as one line and exit 2, not a MemoryError traceback or a kill."""
    import resource

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (limit_mb << 20, limit_mb << 20))
    return subprocess.run([sys.executable, "-m", "edge_runtime", "fetch-model", *map(str, args)],
                          capture_output=True, text=True, timeout=120, env=daemon_env(), cwd=REPO, preexec_fn=limit)


@pytest.mark.parametrize("case, expect", [
    ("deflated-zeros", "more bytes than the file"),      # 64 MB of zeros in a few KB, viewed 20 times
    ("aliased-copies", "add up to more than the file"),  # 4 MB stored once, viewed 300 times: 1.2 GB of copies
    ("huge-dim", "invalid shape"),                       # a size of (0, 2**62): no bytes, no sense
    ("huge-dims", "invalid shape"),
])
def test_pth_files_that_amplify_memory_are_one_line_under_a_memory_limit(tmp_path, case, expect):
    path = tmp_path / f"{case}.pth"
    if case == "deflated-zeros":
        write_aliasing_pth(path, 16 << 20, 20, deflate=True)
    elif case == "aliased-copies":
        write_aliasing_pth(path, 1 << 20, 300, deflate=False)
    elif case == "huge-dim":
        write_aliasing_pth(path, 4, 1, deflate=False, size=(0, 2**62))
    else:
        write_aliasing_pth(path, 4, 3, deflate=False, size=(2**40, 0, 2**40))
    assert path.stat().st_size < 5 << 20
    out = tmp_path / "m.onnx"
    proc = fetch_model_limited("--from", path, "--output", out)
    assert proc.returncode == 2 and proc.stdout == "", proc.stderr[-2000:]
    assert one_error(proc.stderr) and expect in proc.stderr and str(path) in proc.stderr, proc.stderr
    assert not out.exists() and "MemoryError" not in proc.stderr


def test_a_pickle_of_shared_references_is_walked_once(tmp_path):
    """50 references to a list of 50 references to ... 20 levels deep: 50**20 paths, 20 objects."""
    nested: list = []
    for _ in range(20):
        nested = [nested] * 50
    data = pickle.dumps(nested, protocol=2)
    got = pth.load(write_pth(tmp_path / "nest.pth", {"a": np.zeros(1, np.float32)}, pickle_bytes=data))
    assert isinstance(got, list) and len(got) == 50 and got[0] is got[1]


@pytest.mark.parametrize("extras, key", [
    ({"width_mult": "abc"}, "width_mult"),
    ({"width_mult": []}, "width_mult"),
    ({"width_mult": -1.0}, "width_mult"),
    ({"width_mult": 1e9}, "width_mult"),
    ({"width_mult": True}, "width_mult"),
    ({"input_size": [-5, -5]}, "input_size"),
    ({"input_size": ["a", "b"]}, "input_size[0]"),
    ({"input_size": [224]}, "input_size"),
    ({"input_size": [100000, 100000]}, "input_size"),
    ({"input_size": "224"}, "input_size"),
    ({"arch": 5}, "arch"),
    ({"arch": "resnet18"}, "arch"),
    ({"classes": [1, 2]}, "classes[0]"),
    ({"classes": "tench"}, "classes"),
])
def test_crafted_checkpoint_fields_are_one_line(weights, tmp_path, capsys, extras, key):
    _, state = weights
    path = write_checkpoint(tmp_path / "ckpt.pth", state, {"arch": "mobilenet_v3_small", "width_mult": 1.0,
                                                          "input_size": [224, 224], **extras})
    out = tmp_path / "m.onnx"
    rc, stdout, err = fetch_model(capsys, "--from", path, "--output", out)
    assert rc == 2 and stdout == "" and one_error(err), err
    assert f"key '{key}'" in err and str(path) in err and "nothing written" in err, err
    assert not out.exists() and leftovers(tmp_path) == ["ckpt.pth"]


def test_a_valid_checkpoint_still_makes_its_model(weights, tmp_path, capsys):
    _, state = weights
    path = write_checkpoint(tmp_path / "ckpt.pth", state, {"arch": "mobilenet_v3_small", "width_mult": 1.0,
                                                          "input_size": [192, 192], "epoch": "anything"})
    out = tmp_path / "m.onnx"
    rc, _, err = fetch_model(capsys, "--from", path, "--output", out)
    assert rc == 0, err
    spec = from_metadata(props(out), str(out))
    assert spec.input.size == (192, 192) and props(out)["edge_runtime.width_mult"] == "1"


# -- the untrained demo model -------------------------------------------------------------------------------

def test_untrained_model_changes_with_the_frame_and_says_untrained(tmp_path, capsys, fixtures):
    out = tmp_path / "demo.onnx"
    rc, stdout, err = fetch_model(capsys, "small", "--untrained", "--output", out)
    assert rc == 0, err
    assert "warning: untrained weights" in err
    spec = from_metadata(props(out), str(out))
    assert spec.untrained and props(out)["edge_runtime.weights"].startswith("untrained (random init, seed 0")
    # Through the daemon, on the real photos: the answers depend on the picture.
    result = run_daemon("--source", fixtures / "photos", "--model", out, "--top-k", "3", timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    predictions = result.predictions
    assert len(predictions) == len(list((fixtures / "photos").iterdir()))
    top1 = {p["top"][0]["index"] for p in predictions}
    scores = {p["top"][0]["score"] for p in predictions}
    assert len(top1) >= 4 and len(scores) >= len(predictions) // 2, predictions
    assert max(scores) > 1.2 * min(scores)                  # not the ~1e-9 logits' flat 0.001 everywhere
    assert "untrained" in result.stderr.lower()


def test_usage_errors(capsys):
    for args, message in [(["--sha256", "0" * 64], "--sha256 goes with --from"),
                          (["--from", "x.pth", "--sha256", "xyz"], "64 hex digits"),
                          (["--from", "ftp://h/x.pth"], "http:// or https://"),
                          (["--from", "x.pth", "--untrained"], "not allowed with"),
                          (["medium"], "invalid choice")]:
        with pytest.raises(SystemExit) as exit_info:
            fetch.main(args)
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err


def test_help_is_listed(capsys):
    with pytest.raises(SystemExit):
        fetch.main(["--help"])
    text = capsys.readouterr().out
    assert "--from PATH|URL" in text and "--untrained" in text and "047dcff4" in text


def test_dispatch_from_python_m_edge_runtime(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "edge_runtime", "fetch-model", "--from", str(tmp_path / "no.pth"),
                           "--output", str(tmp_path / "m.onnx")], capture_output=True, text=True, timeout=60,
                          cwd=REPO, env=daemon_env())
    assert proc.returncode == 2 and proc.stderr.strip().endswith("no such file") and proc.stdout == ""
    assert json.dumps(leftovers(tmp_path)) == "[]"
