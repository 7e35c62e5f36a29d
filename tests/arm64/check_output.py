"""Host-side helper for tests/arm64/run.sh (runs on the host's Python, not under emulation).

  check_output.py listen SOCKET OUT     bind a unix datagram socket, append each message to OUT
  check_output.py check STDOUT NOTIFY N check the daemon's JSON lines (N predictions, then a final
                                        stats line) and the notifications (READY before STOPPING)
"""

from __future__ import annotations

import json
import signal
import socket
import sys
from pathlib import Path


def listen(path: str, out: str) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with open(out, "a") as f:
        while True:
            data = sock.recv(4096)
            f.write(json.dumps(data.decode(errors="replace")) + "\n")
            f.flush()


def check(stdout: str, notify: str, frames: int) -> int:
    lines = [json.loads(x) for x in Path(stdout).read_text().splitlines() if x.strip()]
    preds = [x for x in lines if x.get("type") == "prediction"]
    stats = [x for x in lines if x.get("type") == "stats"]
    problems = []
    if [p.get("frame") for p in preds] != list(range(frames)):
        problems.append(f"expected predictions for frames 0..{frames - 1}, got {[p.get('frame') for p in preds]}")
    for p in preds:
        top = p.get("top") or []
        if not top or not all({"index", "label", "score"} <= set(t) for t in top):
            problems.append(f"malformed prediction: {p}")
        elif not 0 < top[0]["score"] <= 1:
            problems.append(f"top score out of range: {top[0]}")
    if not stats or not stats[-1].get("final") or stats[-1].get("frames_processed") != frames:
        problems.append(f"no final stats line with frames_processed={frames}: {stats[-1:] }")
    messages = [json.loads(x) for x in Path(notify).read_text().splitlines()] if Path(notify).exists() else []
    kinds = [m.split("\n")[0].split("=")[0] for m in messages]
    if "READY" not in kinds or "STOPPING" not in kinds or kinds.index("READY") > kinds.index("STOPPING"):
        problems.append(f"notifications: expected READY then STOPPING, got {kinds}")
    if preds:
        p = preds[0]
        print(f"    first prediction: frame {p['frame']} top {p['top'][0]} latency_ms {p.get('latency_ms')}")
    if stats:
        s = stats[-1]
        print(f"    final stats: frames_processed {s.get('frames_processed')} fps {s.get('fps')}")
    print(f"    notifications: {[m.replace(chr(10), ' | ') for m in messages]}")
    for problem in problems:
        print(f"    PROBLEM: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["listen"] and len(sys.argv) == 4:
        listen(sys.argv[2], sys.argv[3])
    elif sys.argv[1:2] == ["check"] and len(sys.argv) == 5:
        sys.exit(check(sys.argv[2], sys.argv[3], int(sys.argv[4])))
    else:
        sys.exit(__doc__)
