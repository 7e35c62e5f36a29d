"""RSS over N reloads in a row (SIGHUP), printed as a figure: not a timed unit test.

    .venv/bin/python tests/reload_rss.py [--model models/mobilenetv3_small.onnx] [--reloads 50]

Runs the real daemon on a live synthetic source, alternating its model file between two copies of the
model (each reload loads, checks and warms a whole new session), and reads VmRSS after each reload.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from harness import Daemon, wait_until  # noqa: E402


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(REPO / "models" / "mobilenetv3_small.onnx"))
    ap.add_argument("--reloads", type=int, default=50)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        copies = [tmp / "a.onnx", tmp / "b.onnx"]
        for c in copies:
            shutil.copy(args.model, c)
        shutil.copy(copies[0], tmp / "model.onnx")
        (tmp / "edge.yaml").write_text("model: model.onnx\nstats_interval: 60\nquiet_predictions: true\n")
        d = Daemon("--config", tmp / "edge.yaml", "--source", "synthetic://640x480?fps=15")
        try:
            wait_until(lambda: "ready in" in d.stderr(), 60, "the daemon to start")
            time.sleep(5)
            start = rss_mb(d.proc.pid)
            samples = []
            for i in range(args.reloads):
                shutil.copy(copies[(i + 1) % 2], tmp / "model.new")
                (tmp / "model.new").replace(tmp / "model.onnx")
                done = d.stderr().count("reload: now classifying")
                d.proc.send_signal(signal.SIGHUP)
                wait_until(lambda done=done: d.stderr().count("reload: now classifying") > done, 60,
                           f"reload {i + 1}")
                time.sleep(1.5)
                samples.append(rss_mb(d.proc.pid))
            failures = d.stderr().count("reload refused")
        finally:
            code = d.stop()
    print(f"model {args.model}: RSS {start:.1f} MB before, {samples[-1]:.1f} MB after {args.reloads} reloads "
          f"(max {max(samples):.1f}, min {min(samples):.1f}); change {samples[-1] - start:+.1f} MB; "
          f"refused {failures}; exit {code}")
    print("per reload:", " ".join(f"{s:.1f}" for s in samples))
    return 0 if code == 0 and failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
