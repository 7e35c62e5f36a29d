"""bench's PNG chart, drawn with OpenCV (no plotting dependency on the device)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np



def chart(result: dict, path: Path) -> None:
    """Per-stage bars and the thread sweep, drawn with OpenCV."""
    w, h = 1100, 540
    img = np.full((h, w, 3), 255, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    title = f"edge_runtime bench - {result['machine']['cpu'][:60]} - {Path(result['model']).name}"
    if "video" in result:
        v = result["video"]
        title += f" - video: {v['codec']} {v['width']}x{v['height']}"
    cv2.putText(img, title, (20, 30), font, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    if result.get("noisy"):
        cv2.putText(img, f"NOISY RUN: bare rounds spread {result['noisy']['spread']:.0%}", (700, 50), font, 0.5,
                    (0, 0, 200), 1, cv2.LINE_AA)
    if result.get("untrained"):
        cv2.putText(img, "untrained weights (speed only)", (700, 70), font, 0.45, (0, 0, 200), 1, cv2.LINE_AA)
    ratios = ", ".join(f"{name} {run['ratio_vs_bare']:.2f}x" for name, run in result.get("daemon", {}).items()
                       if "ratio_vs_bare" in run)
    cv2.putText(img, f"daemon / bare session.run ({result.get('lanes', 1)} lanes, batch {result.get('batch', 1)}): "
                f"{ratios}", (20, 50), font, 0.4,
                (0, 0, 0), 1, cv2.LINE_AA)
    if "ceiling" in result:
        bounds = ", ".join(f"{name} {result['ceiling'][name]['ratio_vs_bare']:.2f}x" for name in ("synthetic", "video"))
        cv2.putText(img, f"ceiling on these cores (inference + each frame's other work): {bounds}", (20, 68),
                    font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)

    # Left: per-stage median (bar) and p95 (tick), ms.
    names = list(result["stages"])
    vals = [result["stages"][n]["median_ms"] for n in names]
    p95s = [result["stages"][n]["p95_ms"] for n in names]
    top = max(p95s + [1e-3])
    x0, y0, bw, bh = 40, 500, 60, 380
    cv2.putText(img, "per-stage time, ms (bar: median, line: p95)", (x0, 92), font, 0.5, (60, 60, 60), 1, cv2.LINE_AA)
    for i, (name, v, p) in enumerate(zip(names, vals, p95s, strict=True)):
        x = x0 + i * (bw + 20)
        bar = int(bh * v / top)
        cv2.rectangle(img, (x, y0 - bar), (x + bw, y0), (200, 130, 40), -1)
        yp = y0 - int(bh * p / top)
        cv2.line(img, (x, yp), (x + bw, yp), (30, 30, 200), 2)
        cv2.putText(img, f"{v:.3f}", (x, y0 - bar - 6), font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(img, name.replace("capture_", "cap_")[:11], (x - 4, y0 + 18), font, 0.38, (0, 0, 0), 1,
                    cv2.LINE_AA)

    # Right: thread sweep, FPS of bare session.run vs the daemon.
    sweep = result.get("thread_sweep", [])
    x1 = 600
    cv2.putText(img, "threads: fps bare session.run (blue) vs daemon (orange)", (x1, 92), font, 0.5,
                (60, 60, 60), 1, cv2.LINE_AA)
    if sweep:
        peak = max(max(s["bare_fps"], s["pipeline_fps"]) for s in sweep)
        for i, s in enumerate(sweep):
            x = x1 + 20 + i * 130
            for j, (key, colour) in enumerate((("bare_fps", (200, 130, 40)), ("pipeline_fps", (40, 140, 250)))):
                bar = int(bh * s[key] / peak)
                cv2.rectangle(img, (x + j * 50, y0 - bar), (x + j * 50 + 45, y0), colour, -1)
                cv2.putText(img, f"{s[key]:.0f}", (x + j * 50, y0 - bar - 6), font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
            cv2.putText(img, f"{s['threads']} thr ({s['ratio']:.2f}x)", (x, y0 + 18), font, 0.42, (0, 0, 0), 1,
                        cv2.LINE_AA)
    cv2.imwrite(str(path), img)


