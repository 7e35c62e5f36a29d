"""The Teach page in real headless Chromium against the real daemon (the fixture's float MobileNetV2, a video
whose region shows a chip bag or not): a user adds two labels, labels the unlabeled candidates in bulk,
presses Train, watches the progress, reads the accuracy, sees the region's label switch on the live view,
rolls back; another site's form POST to /train is refused."""

from __future__ import annotations

import json
import re
import time

import cv2
import numpy as np
import pytest

from harness import CHROMIUM, Chromium, Daemon, free_port
from test_teach_http import BACKBONE, NEW, make_video, request, write_config
from test_train import photo

pytestmark = [pytest.mark.skipif(not BACKBONE.exists(), reason="fixtures not available"),
              pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium: apt-get install chromium")]


def has_bag(jpeg: bytes) -> bool:
    """The truth for a candidate, from its own pixels: the chip bag found by normalised cross-correlation."""
    crop = cv2.cvtColor(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2GRAY)
    bag = cv2.cvtColor(cv2.resize(photo("missvickie_potato_chips.png"), (90, 90)), cv2.COLOR_BGR2GRAY)
    return float(cv2.matchTemplate(crop, bag, cv2.TM_CCOEFF_NORMED).max()) > 0.6


def js(browser, session, expression):
    return browser.evaluate(session, expression)


def wait(predicate, timeout, what, interval=0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def live_label(browser, session) -> str | None:
    text = js(browser, session, "(document.querySelector('#boxes [data-region=\"bin\"]') || {}).textContent || ''")
    found = re.search(r"now (\S+) ", text or "")
    return found.group(1) if found else None


def test_teach_a_region_in_chromium(tmp_path):
    video = make_video(tmp_path / "scene.avi")
    data = tmp_path / "dataset"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    daemon = Daemon("--config", write_config(tmp_path, video, data, port))
    browser = Chromium(tmp_path)
    try:
        page = browser.open(base + "/teach?region=bin", 1280, 1000)
        live = browser.open(base + "/", 1280, 800)
        imagenet = wait(lambda: live_label(browser, live), 60, "the live view's region label")
        assert imagenet not in NEW

        # Two labels, added as a user does.
        for name in ("empty", "full"):
            js(browser, page, f"""(() => {{ document.getElementById('newlabel').value = '{name}';
                document.getElementById('addlabel').click(); return true; }})()""")
            wait(lambda n=name: js(browser, page, f"!!document.querySelector('#labels [data-label=\"{n}\"]')"), 10,
                 f"label {name} in the list")

        # Label the candidates in bulk, as they come: select all of one kind, one press each.
        counts = {"empty": 0, "full": 0}
        deadline = time.monotonic() + 90
        while min(counts.values()) < 6:
            assert time.monotonic() < deadline, f"not enough candidates of each kind: {counts}"
            ids = json.loads(js(browser, page, "JSON.stringify([...document.querySelectorAll('#candidates .cand')]"
                                               ".map(d => Number(d.dataset.id)))") or "[]")
            kinds: dict[str, list[int]] = {"empty": [], "full": []}
            for ident in ids:
                status, jpeg = request(f"{base}/teach/candidate?region=bin&id={ident}&full=1")
                if status == 200:
                    kinds["full" if has_bag(jpeg) else "empty"].append(ident)
            for label, chosen in kinds.items():
                if not chosen:
                    continue
                js(browser, page, f"""(() => {{ for (const id of {json.dumps(chosen)}) {{
                    const d = document.querySelector('#candidates .cand[data-id="' + id + '"]');
                    if (d && !d.classList.contains('sel')) d.click(); }}
                    document.getElementById('assignto').value = '{label}';
                    document.getElementById('assign').click(); return true; }})()""")
                wait(lambda: "labelled" in (js(browser, page, "document.getElementById('candstatus').textContent")
                                            or ""), 10, "the candidates to be labelled")
                js(browser, page, "document.getElementById('candstatus').textContent = ''")
            time.sleep(1.0)
            counts = {name: int(js(browser, page, f"document.querySelector('#labels [data-label=\"{name}\"] .count')"
                                                  ".textContent") or 0) for name in counts}
        assert sum(1 for p in (data / "full").iterdir()) == counts["full"]
        assert all(p.name.startswith("bin_") for p in (data / "empty").iterdir())

        # The gallery: pick the label's tab, select a picture, move it out of the training set.
        tab = "document.querySelector('#gallerytabs [data-label=\"empty\"]')"
        wait(lambda: js(browser, page, f"!!{tab}"), 10, "the gallery's tabs")
        js(browser, page, f"{tab}.click()")
        first = wait(lambda: js(browser, page, "(document.querySelector('#gallery .pic') || {}).dataset?.name"), 10,
                     "the gallery's pictures")
        assert first.startswith("bin_") and (data / "empty" / first).is_file()
        js(browser, page, f"""(() => {{ document.querySelector('#gallery .pic[data-name="{first}"]').click();
            document.getElementById('moveto').value = 'unlabeled';
            document.getElementById('move').click(); return true; }})()""")
        wait(lambda: (data / "unlabeled" / first).is_file(), 10, "the picture to move to unlabeled/")
        assert not (data / "empty" / first).exists()
        wait(lambda: "1 moved to unlabeled" in (js(browser, page, "document.getElementById('galstatus').textContent")
                                               or ""), 10, "the page to confirm the move")

        # Train: the button, the progress, the accuracy.
        js(browser, page, "document.getElementById('train').click()")
        seen = set()

        def finished():
            state = js(browser, page, "document.getElementById('trainstate').textContent") or ""
            seen.add(state.split(" ")[0])
            return state.startswith(("done", "failed")) and state
        assert wait(finished, 120, "the training to end", interval=0.1).startswith("done"), \
            js(browser, page, "document.getElementById('trainerror').textContent")
        assert "running" in seen
        assert js(browser, page, "document.getElementById('progress').value") == 1
        accuracy = js(browser, page, "document.getElementById('accuracy').textContent")
        found = re.search(r"Held-out accuracy ([\d.]+) %", accuracy)
        assert found and float(found.group(1)) >= 90, accuracy
        assert js(browser, page, "document.querySelectorAll('#confusion td').length") == 4
        wait(lambda: "taught model" in (js(browser, page, "document.getElementById('inuse').textContent") or ""),
             10, "the page to name the model in use")

        # The live view: the region answers with its new labels.
        wait(lambda: live_label(browser, live) in NEW, 30, "the region's new label on the live view")

        # Another site's form POST at /train is refused, and nothing starts.
        evil = browser.open(f"http://localhost:{port}/healthz", 800, 600)
        js(browser, evil, f"""(() => {{ const f = document.createElement('form'); f.method = 'post';
            f.action = '{base}/train?region=bin'; document.body.append(f); f.submit(); return true; }})()""")
        wait(lambda: "cross-site" in (js(browser, evil, "document.body.innerText") or ""), 10, "the refusal")
        assert json.loads(request(base + "/train")[1])["state"] == "done"

        # Roll back from the page: the config's model again.
        wait(lambda: js(browser, page, "!document.getElementById('rollback').disabled"), 10, "the rollback button")
        js(browser, page, "document.getElementById('rollback').click()")
        wait(lambda: live_label(browser, live) not in NEW | {None}, 30, "the region's old label on the live view")
        wait(lambda: "config's model" in (js(browser, page, "document.getElementById('inuse').textContent") or ""),
             10, "the page to say the config's model is in use")
    finally:
        browser.close()
        code = daemon.stop()
    assert code == 0, daemon.stderr()[-3000:]
