"""The live page with several regions, in real Chromium (issue 23 item 5).

One real daemon (the tiled two-photo clip of test_watch.py, paced and looped, three regions, snapshots)
serves the page: each region's box, label and state are on the page and in /latest; the snapshot links
open the full JPEG in a tab of their own; the chart's axes carry ticks and units; the region editor,
driven by real mouse events, gives YAML that the project's own config loader accepts and flags that the
daemon's own argument parser accepts. At phone width (360 px) nothing overflows sideways, also with a
label far longer than the card (an in-process sink fed such records). Without a browser: the page's
files and headers (CSP) over real HTTP, and /latest's per-region entries.
"""

from __future__ import annotations

import base64
import json
import shlex
import time

import numpy as np
import pytest

from harness import CHROMIUM, Chromium, Daemon, Dom, free_port, get, wait_until
from test_watch import DOOR_BOX, FEEDER_BOX, model_path, write_clip

from edge_runtime import config as config_mod
from edge_runtime.cli import main as cli_main
from edge_runtime.core.stats import Stats
from edge_runtime.sinks import SinkContext
from edge_runtime.sources import Frame
from edge_runtime.watch.regions import parse_region_flag
from edge_runtime.web.http import HttpSink

PERCH_BOX = [0, 0, 0.25, 0.5]           # the bird's upper half; a low threshold gives it a state for sure
NAMES = ["feeder", "door", "perch"]
LONG = "an extraordinarily long label, " * 6 + "the end"


def browser_or_skip(tmp_path) -> Chromium:
    if CHROMIUM is None:
        pytest.skip("needs Chromium: apt-get install chromium")
    return Chromium(tmp_path)


# --- without a browser: the page's files and /latest ---------------------------------------------

def record(i: int, region: str | None, label: str = "open", score: float = 0.9) -> dict:
    rec = {"type": "prediction", "frame": i, "ts": 1.0 + i, "source": "rtsp://cam:hunter2@10.0.0.7/s",
           "top": [{"index": 1, "label": label, "score": score}, {"index": 0, "label": "closed", "score": 0.05}],
           "latency_ms": {"preprocess": 1.0, "inference": 5.0, "total": 8.0}}
    if region:
        rec["region"] = region
    return rec


def start_sink(regions) -> HttpSink:
    cfg = config_mod.HttpConfig(listen="127.0.0.1:0")
    sink = HttpSink(cfg).start(SinkContext(stats=Stats(), regions=tuple(regions)))
    sink.base = f"http://127.0.0.1:{sink.address[1]}"
    return sink


def feed(sink: HttpSink, index: int, labels: dict[str, str]) -> None:
    image = np.zeros((240, 320, 3), np.uint8)
    for region in [r.name for r in sink.context.regions] or [None]:
        sink.prediction(record(index, region, labels.get(region, "open")),
                        Frame(image=image, index=index, ts=0.0, mono=0.0))


def test_the_page_is_static_files_under_a_strict_csp():
    sink = start_sink(())
    try:
        status, headers, body = get(sink.base + "/")
        csp = headers["Content-Security-Policy"]
        assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
        assert "default-src 'none'" in csp and "script-src 'self'" in csp and "style-src 'self'" in csp
        assert "unsafe" not in csp and headers["X-Content-Type-Options"] == "nosniff"
        dom = Dom(body.decode())
        scripts = [e for e in dom.elements if e["tag"] == "script"]
        # Nothing inline: the CSP would refuse it (and the page would silently lose it).
        assert [e["attrs"].get("src") for e in scripts] == ["/static/live.js"]
        assert not any(e["text"].strip() for e in scripts)
        assert not [e for e in dom.elements if e["tag"] == "style" or "style" in e["attrs"]
                    or any(a.startswith("on") for a in e["attrs"])]
        for path, kind in (("/static/live.js", "text/javascript"), ("/static/live.css", "text/css")):
            status, headers, text = get(sink.base + path)
            assert status == 200 and headers["Content-Type"] == kind + "; charset=utf-8" and len(text) > 1000, path
            assert headers["Content-Security-Policy"] == csp
            assert b"http://" not in text and b"https://" not in text and b"innerHTML" not in text, path
        for path in ("/static/", "/static/../http.py", "/static/live.html.bak", "/static/assets.py", "/live.js"):
            assert get(sink.base + path)[0] == 404, path
    finally:
        sink.close()


def test_a_missing_page_file_is_a_500_naming_it(tmp_path, monkeypatch, caplog):
    from edge_runtime.web import assets

    monkeypatch.setattr(assets, "STATIC", tmp_path)         # an installation without web/static/
    assets._read.cache_clear()
    sink = start_sink(())
    try:
        status, _, body = get(sink.base + "/static/live.js")
        assert status == 500 and b"live.js is missing" in body
        assert "cannot be read" in caplog.text
    finally:
        sink.close()
        assets._read.cache_clear()


def test_latest_keeps_the_line_and_adds_every_region():
    regions = [parse_region_flag("door=0.5,0,0.5,1"), parse_region_flag("gate=0,0,0.5,1")]
    sink = start_sink(regions)
    try:
        feed(sink, 0, {"door": "open", "gate": "shut"})
        feed(sink, 1, {"door": "ajar", "gate": "shut"})
        status, _, body = get(sink.base + "/latest")
        latest = json.loads(body)
        assert status == 200
        # The line as before: the frame's first region, every field of the stdout line, the password masked.
        assert (latest["type"], latest["frame"], latest["region"]) == ("prediction", 1, "door")
        assert latest["top"][0]["label"] == "ajar" and set(latest["latency_ms"]) == {"preprocess", "inference", "total"}
        assert [(r["region"], r["frame"], r["top"][0]["label"]) for r in latest["regions"]] == \
            [("door", 1, "ajar"), ("gate", 1, "shut")]
        assert "hunter2" not in body.decode()
    finally:
        sink.close()
    plain = start_sink(())
    try:
        feed(plain, 0, {})
        assert "regions" not in json.loads(get(plain.base + "/latest")[2])      # no regions: the line only
    finally:
        plain.close()


# --- the real daemon with three regions, in Chromium -----------------------------------------------

@pytest.fixture(scope="module")
def three(fixtures, tmp_path_factory):
    """(daemon, base URL, snapshot folder): three regions on the looping tiled clip."""
    folder = tmp_path_factory.mktemp("three")
    clip = write_clip(fixtures, folder / "tiled.avi", frames=60)       # the owl from frame 5 of 60: 2 events in 6 s
    port = free_port()
    cfg = folder / "edge.yaml"
    cfg.write_text(f"""
model: {model_path(fixtures)}
regions:
  - {{name: feeder, box: {FEEDER_BOX}}}
  - {{name: door, box: {DOOR_BOX}}}
  - {{name: perch, box: {PERCH_BOX}, threshold: 0.05}}
snapshots: {{dir: snaps}}
http: {{listen: "127.0.0.1:{port}"}}
""")
    d = Daemon("--config", cfg, "--source", clip, "--loop", "--realtime", "--stats-interval", "1")
    base = f"http://127.0.0.1:{port}"

    def all_events():
        assert d.running(), d.stderr()
        try:
            events = json.loads(get(base + "/events", timeout=2)[2])
        except (OSError, ValueError):
            return False
        return {e["region"] for e in events if e["snapshot"] and (folder / "snaps" / e["snapshot"]).exists()} \
            == set(NAMES)
    try:
        wait_until(all_events, 60, "an event with a snapshot for each of the three regions", interval=0.25)
        yield d, base, folder / "snaps"
    finally:
        code = d.stop()
    assert code == 0, d.stderr()


PROBE = """JSON.stringify({
  groups: [...document.querySelectorAll('#labels .group')].map((g) => ({name: g.dataset.region,
    state: g.querySelector('.state').textContent, top: (g.querySelector('.name') || {}).textContent || null,
    labels: g.querySelectorAll('.label').length})),
  boxes: [...document.querySelectorAll('#boxes .region')].map((b) => ({name: b.dataset.region,
    text: b.textContent, rect: b.getBoundingClientRect().toJSON()})),
  view: document.getElementById('view').getBoundingClientRect().toJSON(),
  links: [...document.querySelectorAll('#events a.thumb')].map((a) => ({href: a.getAttribute('href'),
    target: a.target, width: a.querySelector('img').naturalWidth,
    what: a.parentElement.querySelector('.what').textContent})),
  axes: {fps: [...document.querySelectorAll('#yfps span')].map((s) => s.textContent),
         ms: [...document.querySelectorAll('#yms span')].map((s) => s.textContent),
         time: [...document.querySelectorAll('#xaxis span')].map((s) => s.textContent),
         units: [...document.querySelectorAll('.chart .unit, .chart .xtitle')].map((s) => s.textContent)},
  width: document.documentElement.scrollWidth, inner: window.innerWidth})"""


def probe(browser: Chromium, session: str) -> dict:
    raw = browser.evaluate(session, PROBE)
    return json.loads(raw) if raw else {}


def region_entries(base: str) -> tuple[dict, dict]:
    """(/latest's regions by name, /stats.json's regions by name), read now."""
    latest = json.loads(get(base + "/latest")[2])
    stats = json.loads(get(base + "/stats.json")[2])
    return {r["region"]: r for r in latest.get("regions", [])}, {r["name"]: r for r in stats["regions"]}


def center(browser: Chromium, session: str, selector: str) -> tuple[float, float]:
    """The element scrolled into view; its centre in viewport pixels (where a real click lands)."""
    rect = json.loads(browser.evaluate(session, f"""(() => {{ const e = document.querySelector({json.dumps(selector)});
        e.scrollIntoView({{block: 'center'}}); return JSON.stringify(e.getBoundingClientRect().toJSON()); }})()"""))
    return rect["x"] + rect["width"] / 2, rect["y"] + rect["height"] / 2


def mouse(browser: Chromium, session: str, kind: str, x: float, y: float) -> None:
    params = {"type": kind, "x": x, "y": y, "button": "left", "buttons": 0 if kind == "mouseReleased" else 1}
    if kind != "mouseMoved":
        params["clickCount"] = 1
    browser.call("Input.dispatchMouseEvent", params, session)


def click(browser: Chromium, session: str, selector: str) -> None:
    x, y = center(browser, session, selector)
    mouse(browser, session, "mousePressed", x, y)
    mouse(browser, session, "mouseReleased", x, y)


def test_every_region_on_the_page_and_in_latest(three, fixtures, tmp_path):
    _, base, snaps = three
    expected = json.loads((fixtures / "expected.json").read_text())["models"]["mobilenet_v1_0.5_160_quant"]
    bird = expected["bird.png"]["label"]
    browser = browser_or_skip(tmp_path)
    try:
        session = browser.open(base + "/", 1280, 800)

        def consistent():
            v = probe(browser, session)
            if [g["name"] for g in v.get("groups", [])] != NAMES or len(v["links"]) < 3 \
                    or not all(link["width"] > 0 for link in v["links"]):
                return None
            latest, stats = region_entries(base)
            # Live: a poll may fall between two frames; the page must agree with the daemon on a recent one.
            for g in v["groups"]:
                state = stats[g["name"]]
                if state["state"] is None or g["top"] != latest[g["name"]]["top"][0]["label"] \
                        or not g["state"].startswith(state["state"] + " "):
                    return None
            return v, latest
        view, latest = wait_until(consistent, 30, "every region's label and state on the page as in /latest",
                                  interval=0.3)
        (tmp_path / "three.png").write_bytes(
            base64.b64decode(browser.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True},
                                          session)["data"]))

        groups = {g["name"]: g for g in view["groups"]}
        assert groups["feeder"]["top"] == bird and groups["feeder"]["state"].startswith(bird + " ")
        assert all(g["labels"] >= 1 for g in view["groups"])
        assert set(latest) == set(NAMES) and all(latest[n]["region"] == n and latest[n]["top"] for n in NAMES)
        line = json.loads(get(base + "/latest")[2])
        assert line["type"] == "prediction" and line["region"] == "feeder"      # the first region's line, as before
        assert {"frame", "ts", "source", "top", "latency_ms"} <= set(line)
        assert [r["region"] for r in line["regions"]] == NAMES

        # Every region's box over the picture where the config puts it, labelled with its name and state.
        img = view["view"]
        boxes = {b["name"]: b for b in view["boxes"]}
        assert list(boxes) == NAMES
        for name, box in (("feeder", FEEDER_BOX), ("door", DOOR_BOX), ("perch", PERCH_BOX)):
            rect = boxes[name]["rect"]
            assert rect["x"] == pytest.approx(img["x"] + box[0] * img["width"], abs=3), name
            assert rect["width"] == pytest.approx(box[2] * img["width"], abs=3), name
            assert rect["height"] == pytest.approx(box[3] * img["height"], abs=3), name
            assert boxes[name]["text"].startswith(name + ": ") and "unknown" not in boxes[name]["text"]

        # The chart's axes: fps on the left, ms on the right, 5 ticks each from 0; time ends at "now".
        axes = view["axes"]
        assert axes["units"][:2] == ["fps", "ms"] and "time" in axes["units"][2]
        for ticks in (axes["fps"], axes["ms"]):
            values = [float(t) for t in ticks]
            assert len(values) == 5 and values[0] == 0 and values == sorted(values) and values[-1] > 0
        assert float(axes["fps"][-1]) >= 5               # holds the live ~10 fps
        assert axes["time"][-1] == "now" and axes["time"][0] in ("−60 s", "−45 s")

        # A snapshot link, clicked as a user does, opens the full JPEG in a tab of its own.
        assert all(link["target"] == "_blank" and link["href"].startswith("/snapshots/") for link in view["links"])
        assert {link["what"].split(":")[0] for link in view["links"]} == set(NAMES)
        before = {t["targetId"] for t in browser.call("Target.getTargets")["targetInfos"]}
        # (The list may gain an event between finding the link and the click: whichever link was under the
        # pointer, its tab must show that snapshot.)
        click(browser, session, f'#events a.thumb[href="{view["links"][-1]["href"]}"]')
        opened = wait_until(lambda: next((t for t in browser.call("Target.getTargets")["targetInfos"]
                                          if t["targetId"] not in before and "/snapshots/" in t["url"]), None),
                            10, "the snapshot's tab")
        href = "/snapshots/" + opened["url"].split("/snapshots/", 1)[1]
        name = href.removeprefix("/snapshots/")
        tab = browser.call("Target.attachToTarget", {"targetId": opened["targetId"], "flatten": True})["sessionId"]
        shown = wait_until(lambda: browser.evaluate(tab, """document.contentType === 'image/jpeg' && document.images[0]
            && document.images[0].complete && [document.images[0].naturalWidth, document.images[0].naturalHeight]"""),
                           10, "the snapshot in its tab")
        assert shown == [1024, 384]                     # the full frame, not the 96 px thumbnail
        status, headers, body = get(base + href)
        assert status == 200 and headers["Content-Type"] == "image/jpeg" and body == (snaps / name).read_bytes()

        # The CSP holds in the browser: a script injected into the page does not run.
        assert browser.evaluate(session, """(() => { const s = document.createElement('script');
            s.textContent = 'window.injected = 1'; document.body.append(s);
            return window.injected === undefined; })()""")
    finally:
        browser.close()


def test_the_region_editor_gives_a_valid_config_and_flags(three, tmp_path):
    _, base, _ = three
    browser = browser_or_skip(tmp_path)
    try:
        session = browser.open(base + "/", 1280, 800)
        wait_until(lambda: len(probe(browser, session).get("boxes", [])) == 3 and browser.evaluate(
            session, "document.getElementById('view').dataset.size === '1024x384'"), 30,
            "the configured regions over the picture at its size")
        click(browser, session, "#edit")
        wait_until(lambda: browser.evaluate(session, "document.querySelectorAll('#draftlist .draft').length === 3"),
                   10, "the editor, starting from the configured regions")
        # A real drag on the picture: from 10 %, 60 % to 40 %, 90 % of it.
        rect = json.loads(browser.evaluate(session, """(() => { const v = document.getElementById('view');
            v.scrollIntoView({block: 'center'}); return JSON.stringify(v.getBoundingClientRect().toJSON()); })()"""))
        at = lambda fx, fy: (rect["x"] + fx * rect["width"], rect["y"] + fy * rect["height"])     # noqa: E731
        mouse(browser, session, "mousePressed", *at(0.1, 0.6))
        for f in (0.2, 0.3, 0.4):
            mouse(browser, session, "mouseMoved", *at(f, 0.6 + (f - 0.1)))
        mouse(browser, session, "mouseReleased", *at(0.4, 0.9))
        wait_until(lambda: browser.evaluate(session, "document.querySelectorAll('#draftlist .draft').length === 4"),
                   10, "the drawn region in the list")
        # Name it by typing, as a user does.
        browser.evaluate(session, "document.querySelector('#draftlist [data-index=\"3\"] input').select()")
        browser.call("Input.insertText", {"text": "porch"}, session)
        out = json.loads(browser.evaluate(session, """JSON.stringify({yaml: document.getElementById('yaml').value,
            flags: document.getElementById('flags').value, error: document.getElementById('editorerror').textContent,
            drafts: document.querySelectorAll('#drafts .draftbox').length})"""))
        assert out["error"] == "" and out["drafts"] == 4
        (tmp_path / "editor.png").write_bytes(base64.b64decode(browser.call(
            "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}, session)["data"]))

        # The YAML is a valid config for the project's own loader: the three regions and the new one.
        path = tmp_path / "pasted.yaml"
        path.write_text(out["yaml"])
        cfg = config_mod.load(str(path))
        names = [r.name for r in cfg.regions]
        assert names == NAMES + ["porch"]
        for region, box in zip(cfg.regions, (FEEDER_BOX, DOOR_BOX, PERCH_BOX, [0.1, 0.6, 0.3, 0.3]), strict=True):
            assert list(region.box) == pytest.approx(box, abs=0.01), region.name
        # The flags, through the daemon's own argument parser, give the same regions.
        args = cli_main.build_parser().parse_args(shlex.split(out["flags"]))
        flagged = config_mod.load(None, cli_main.overrides_from(args))
        assert flagged.regions == cfg.regions

        # A name the config would refuse: no output, one line saying why; a duplicate likewise.
        for bad, why in (("Porch Light", "a name is 1 to 32 of a-z 0-9 _ -"), ("door", "used twice")):
            browser.evaluate(session, "document.querySelector('#draftlist [data-index=\"3\"] input').select()")
            browser.call("Input.insertText", {"text": bad}, session)
            out = json.loads(browser.evaluate(session, """JSON.stringify({yaml: document.getElementById('yaml').value,
                error: document.getElementById('editorerror').textContent})"""))
            assert out["yaml"] == "" and why in out["error"] and "region 4" in out["error"], bad
        # Removing it gives the configured regions back; "redraw" then a drag moves the door's box.
        click(browser, session, '#draftlist [data-index="3"] button:last-child')
        wait_until(lambda: browser.evaluate(session, "document.querySelectorAll('#draftlist .draft').length === 3"),
                   10, "the drawn region removed")
        click(browser, session, '#draftlist [data-index="1"] button:first-of-type')
        rect = json.loads(browser.evaluate(session, """(() => { const v = document.getElementById('view');
            v.scrollIntoView({block: 'center'}); return JSON.stringify(v.getBoundingClientRect().toJSON()); })()"""))
        mouse(browser, session, "mousePressed", *at(0.8, 0.5))
        mouse(browser, session, "mouseMoved", *at(0.7, 0.3))
        mouse(browser, session, "mouseReleased", *at(0.6, 0.2))
        path.write_text(browser.evaluate(session, "document.getElementById('yaml').value"))
        moved = config_mod.load(str(path)).regions
        assert [r.name for r in moved] == NAMES and moved[0] == cfg.regions[0] and moved[2] == cfg.regions[2]
        assert list(moved[1].box) == pytest.approx([0.6, 0.2, 0.2, 0.3], abs=0.01)
    finally:
        browser.close()


# --- phone width --------------------------------------------------------------------------------

OVERFLOW = """JSON.stringify({width: document.documentElement.scrollWidth, inner: window.innerWidth,
  client: document.documentElement.clientWidth,
  groups: [...document.querySelectorAll('#labels .group')].map((g) => {
    const card = g.closest('.card').getBoundingClientRect(), state = g.querySelector('.state').getBoundingClientRect();
    return {name: g.dataset.region, text: g.querySelector('.state').textContent, left: state.left, right: state.right,
            width: state.width, cardLeft: card.left, cardRight: card.right}; }),
  wide: [...document.querySelectorAll('body *')]
    .filter((e) => e.getBoundingClientRect().right > document.documentElement.clientWidth + 0.5)
    .map((e) => e.tagName + '#' + e.id + '.' + e.className)})"""


def fits(browser: Chromium, session: str, names: list[str]) -> dict | None:
    raw = browser.evaluate(session, OVERFLOW)
    v = json.loads(raw) if raw else {}
    return v if [g["name"] for g in v.get("groups", [])] == names and all(
        g["text"] != "unknown" for g in v["groups"]) else None


def assert_fits(v: dict) -> None:
    # No sideways scrolling: nothing wider than the page's width within the window (360 px, less a scrollbar).
    assert v["inner"] == 360 and v["width"] <= v["client"] <= 360, v
    assert v["wide"] == [], v
    for g in v["groups"]:           # the state is on its card, visible, however long the label
        assert g["cardLeft"] <= g["left"] and g["right"] <= g["cardRight"] and g["width"] >= 30, g


def test_phone_width_keeps_the_state_on_its_card_with_a_long_label(tmp_path):
    regions = [parse_region_flag("door=0.5,0,0.5,1"), parse_region_flag("gate=0,0,0.5,1"),
               parse_region_flag("a_region_with_a_long_name_32ch=0,0,1,1")]
    names = [r.name for r in regions]
    sink = start_sink(regions)
    browser = browser_or_skip(tmp_path)
    try:
        labels = {"door": LONG, "gate": "shut", names[2]: LONG}
        feed(sink, 0, labels)
        for name in names:
            sink.event({"type": "event", "region": name, "from": None, "to": labels[name], "score": 0.9,
                        "frame": 0, "ts": time.time(), "previous_for_s": None, "snapshot": None})
        session = browser.open(sink.base + "/", 360, 740)
        v = wait_until(lambda: fits(browser, session, names), 30, "the regions at phone width", interval=0.25)
        assert_fits(v)
        assert LONG in [g["text"].rsplit(" ", 1)[0] for g in v["groups"]]      # the whole label, ellipsized by CSS
        (tmp_path / "phone.png").write_bytes(
            base64.b64decode(browser.call("Page.captureScreenshot", {"format": "png"}, session)["data"]))
        click(browser, session, "#edit")                                      # the editor fits too
        wait_until(lambda: browser.evaluate(session, "!document.getElementById('editor').hidden"), 10, "the editor")
        assert_fits(fits(browser, session, names))
    finally:
        browser.close()
        sink.close()


def test_phone_width_with_the_real_daemon(three, tmp_path):
    _, base, _ = three
    browser = browser_or_skip(tmp_path)
    try:
        session = browser.open(base + "/", 360, 740)
        assert_fits(wait_until(lambda: fits(browser, session, NAMES), 30, "the regions at phone width", interval=0.25))
        (tmp_path / "phone.png").write_bytes(base64.b64decode(browser.call(
            "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}, session)["data"]))
    finally:
        browser.close()
