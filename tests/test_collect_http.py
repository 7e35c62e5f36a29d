"""The live page's "save this frame as ..." control: POST /collect on the real HTTP sink over loopback.

The latest frame (or a region's crop at the source's resolution) is saved as `python -m edge_runtime
collect` saves it, into http.collect_dir/LABEL/; cross-site requests (a foreign Origin, or without one a
foreign Referer) get 403 and nothing is written; hostile labels and regions get 400; with collect_dir
unset the endpoint is 404. In headless Chromium: the page shows the control per region and the untrained
banner, its save button writes the file, and another site's form POST is refused.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import cv2
import numpy as np
import pytest

from harness import wait_until

from edge_runtime import config as config_mod
from edge_runtime.watch.regions import parse_region_flag
from edge_runtime.sinks import SinkContext
from edge_runtime.web.http import HttpSink
from edge_runtime.sources import Frame
from edge_runtime.core.stats import Stats

W, H = 320, 240
DOOR = parse_region_flag("door=0.5,0.2,0.4,0.5")          # 128x120 pixels at x 160, y 48
GATE = parse_region_flag("gate=0,0,0.25,0.25")


def frame_image() -> np.ndarray:
    """Blue everywhere, red in the door's box: a crop and a whole frame are told apart by their colour."""
    image = np.zeros((H, W, 3), np.uint8)
    image[..., 0] = 200
    image[48:168, 160:288] = (0, 0, 220)
    return image


def record(i: int, region: str | None = None, untrained: bool = False) -> dict:
    rec = {"type": "prediction", "frame": i, "ts": 1.0 + i, "source": "synthetic://320x240",
           "top": [{"index": 1, "label": "open", "score": 0.9}, {"index": 0, "label": "closed", "score": 0.1}],
           "latency_ms": {"preprocess": 1.0, "inference": 5.0, "total": 8.0}}
    if region:
        rec["region"] = region
    if untrained:
        rec["untrained"] = True
    return rec


def start_sink(collect_dir=None, regions=(DOOR, GATE), **http) -> HttpSink:
    cfg = config_mod.HttpConfig(listen="127.0.0.1:0", collect_dir=str(collect_dir) if collect_dir else None, **http)
    sink = HttpSink(cfg).start(SinkContext(stats=Stats(), regions=tuple(regions)))
    sink.origin = f"http://127.0.0.1:{sink.address[1]}"
    return sink


def feed(sink: HttpSink, index: int = 0, untrained: bool = False) -> None:
    image = frame_image()
    for region in [r.name for r in sink.context.regions] or [None]:
        sink.prediction(record(index, region, untrained), Frame(image=image, index=index, ts=0.0, mono=0.0))


def post(sink: HttpSink, query: str, headers: dict | None = None, path: str = "/collect") -> tuple[int, dict]:
    request = urllib.request.Request(f"{sink.origin}{path}?{query}", data=b"", method="POST", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def files(folder) -> list:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


@pytest.fixture
def sink(tmp_path):
    s = start_sink(tmp_path / "dataset")
    feed(s)
    yield s
    s.close()


def test_same_origin_post_saves_the_crop_or_the_frame(sink, tmp_path):
    data = tmp_path / "dataset"
    status, body = post(sink, "label=open&region=door", {"Origin": sink.origin})
    assert status == 200, body
    saved = data / body["saved"]
    assert saved.parent == data / "open" and saved.name.startswith("door_") and saved.suffix == ".jpg"
    crop = cv2.imread(str(saved))
    assert crop.shape == (120, 128, 3)                                  # the region at source resolution
    assert crop[..., 2].mean() > 200 and crop[..., 0].mean() < 15       # all red: the door's pixels only
    assert [body[k] for k in ("label", "region", "width", "height", "images")] == ["open", "door", 128, 120, 1]

    # No region: the whole frame. The page's own Referer (an old browser, no Origin) is fine too.
    status, body = post(sink, "label=closed", {"Referer": sink.origin + "/"})
    assert status == 200, body
    whole = cv2.imread(str(data / body["saved"]))
    assert whole.shape == (H, W, 3) and body["region"] is None and (data / body["saved"]).parent == data / "closed"

    # Not a browser (no Origin, no Referer: curl, a script); an Origin in capitals; the unlabeled folder.
    assert post(sink, "label=open&region=door")[0] == 200
    assert post(sink, "label=unlabeled&region=gate", {"Origin": sink.origin.upper()})[0] == 200
    assert [p.relative_to(data).parts[0] for p in files(data)] == ["closed", "open", "open", "unlabeled"]
    assert not [p for p in files(data) if p.suffix != ".jpg"]            # no temp file left behind

    live = json.loads(urllib.request.urlopen(sink.origin + "/stats.json", timeout=5).read())
    assert live["collect"] is True


@pytest.mark.parametrize("headers", [
    {"Origin": "http://evil.example"},
    {"Origin": "null"},                                     # a sandboxed frame, a file:// page
    {"Origin": "http://127.0.0.1:1"},                       # another port is another site
    {"Origin": "https://evil.example", "Referer": "PAGE/"},     # Origin decides, whatever the Referer
    {"Referer": "http://evil.example/attack.html"},          # no Origin: the Referer must be this page
    {"Referer": "not a url"},
])
def test_cross_site_requests_get_403_and_nothing_is_saved(sink, tmp_path, headers):
    headers = {k: v.replace("PAGE", sink.origin) for k, v in headers.items()}
    status, body = post(sink, "label=open&region=door", headers)
    assert status == 403 and "cross-site" in body["error"]
    assert files(tmp_path / "dataset") == []


@pytest.mark.parametrize("query", ["label=../escape", "label=..", "label=a/b", "label=%2e%2e%2fescape",
                                   "label=%2e%2e", "label=", "label=x%20y", "label=%00", "label=" + "a" * 65,
                                   "region=door", "label=ok&region=../door", "label=ok&region=nope",
                                   "label=ok&label=other", "label=ok&path=/etc", "label"])
def test_hostile_labels_and_regions_are_refused(sink, tmp_path, query):
    status, body = post(sink, query, {"Origin": sink.origin})
    assert status == 400 and body["error"], body
    assert files(tmp_path) == [] and not (tmp_path / "escape").exists()


def test_a_symlinked_label_folder_is_refused(sink, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "dataset").mkdir()
    (tmp_path / "dataset" / "open").symlink_to(outside)
    status, body = post(sink, "label=open&region=door", {"Origin": sink.origin})
    assert status == 500 and "symbolic link" in body["error"], body
    assert list(outside.iterdir()) == []


def test_saves_are_bounded_per_label_and_in_total(tmp_path, caplog):
    """http.collect_max_per_label / collect_max_total: refused with 507 and a JSON error, nothing written,
    one warning a minute; pictures already there count (listed once); others labels go on meanwhile."""
    import logging

    data = tmp_path / "dataset"
    (data / "open").mkdir(parents=True)
    for i in range(2):
        cv2.imwrite(str(data / "open" / f"old_{i}.jpg"), np.zeros((4, 4, 3), np.uint8))
    s = start_sink(data, collect_max_per_label=3, collect_max_total=5)
    try:
        feed(s)
        with caplog.at_level(logging.WARNING, logger="edge_runtime.web.http"):
            status, body = post(s, "label=open")
            assert status == 200 and body["images"] == 3, body            # the 2 there, and this one
            refused = [post(s, "label=open") for _ in range(4)]
            assert all(code == 507 and "collect_max_per_label (3)" in b["error"] for code, b in refused), refused
            assert [post(s, "label=closed")[0] for _ in range(2)] == [200, 200]
            status, body = post(s, "label=unlabeled")
            assert status == 507 and "collect_max_total (5)" in body["error"] and "nothing saved" in body["error"]
        assert len(files(data / "open")) == 3 and len(files(data / "closed")) == 2 and not (data / "unlabeled").exists()
        warned = [r.getMessage() for r in caplog.records if "POST /collect refused" in r.getMessage()]
        assert len(warned) == 1, warned                                   # 5 refusals, one warning
    finally:
        s.close()


def test_save_budget_counts_in_memory_rescans_at_a_bound_and_limits_the_rate(tmp_path):
    from edge_runtime.teach.budget import RATE_PER_S, RESCAN_EVERY_S, Refused, SaveBudget

    now = [0.0]
    (tmp_path / "a").mkdir()
    for i in range(3):
        (tmp_path / "a" / f"{i}.jpg").write_bytes(b"x")
    (tmp_path / "a" / ".hidden.jpg").write_bytes(b"x")              # temp files and links do not count
    (tmp_path / "a" / "link.jpg").symlink_to(tmp_path / "a" / "0.jpg")
    budget = SaveBudget(tmp_path, per_label=4, total=100, clock=lambda: now[0])
    assert budget.reserve("a") == 4
    (tmp_path / "a" / "3.jpg").write_bytes(b"x")                    # the reserved picture, written
    with pytest.raises(Refused) as exc:
        budget.reserve("a")                                         # at the bound: listed again, still 4
    assert exc.value.status == 507
    (tmp_path / "a" / "0.jpg").unlink()                             # removed by hand...
    (tmp_path / "a" / "1.jpg").unlink()
    with pytest.raises(Refused):
        budget.reserve("a")                                         # ...seen at the next rescan, not before
    now[0] += RESCAN_EVERY_S + 0.1
    assert budget.reserve("a") == 3                                 # 2 left, and this one
    budget.release("a")
    now[0] += 10
    codes = []
    for _ in range(RATE_PER_S + 5):                                 # a burst in no time at all
        try:
            budget.reserve(f"b{len(codes) % 3}")
            codes.append(200)
        except Refused as e:
            codes.append(e.status)
    assert codes.count(200) == RATE_PER_S and codes.count(429) == 5
    now[0] += 1.0
    assert budget.reserve("c") == 1                                 # the rate refills


def test_collect_dir_unset_is_404_and_no_frame_yet_is_503(tmp_path):
    off = start_sink(None)
    try:
        feed(off)
        status, body = post(off, "label=open&region=door", {"Origin": off.origin})
        assert status == 404 and "http.collect_dir" in body["error"]
        assert json.loads(urllib.request.urlopen(off.origin + "/stats.json", timeout=5).read())["collect"] is False
    finally:
        off.close()
    empty = start_sink(tmp_path / "dataset")
    try:
        assert post(empty, "label=open", {"Origin": empty.origin})[0] == 503
        assert post(empty, "label=open", {"Origin": empty.origin}, path="/other")[0] == 404
    finally:
        empty.close()
    assert files(tmp_path) == []


def test_collect_dir_is_relative_to_the_config_file(tmp_path):
    (tmp_path / "etc").mkdir()
    path = tmp_path / "etc" / "edge.yaml"
    path.write_text("http:\n  listen: 127.0.0.1:0\n  collect_dir: dataset\n")
    assert config_mod.load(str(path)).http.collect_dir == str(tmp_path / "etc" / "dataset")
    assert config_mod.load(None).http.collect_dir is None


# --- the page in headless Chromium ----------------------------------------------------------------

def browser_or_skip(tmp_path):
    from harness import CHROMIUM, Chromium

    if CHROMIUM is None:
        pytest.skip("needs Chromium: apt-get install chromium")
    return Chromium(tmp_path)


PROBE = """JSON.stringify({banner: !document.getElementById('untrained').hidden,
  bannerText: document.getElementById('untrained').textContent,
  collect: !document.getElementById('collect').hidden,
  rows: [...document.querySelectorAll('#collectrows .collect-row')].map(f => f.dataset.region || null),
  status: [...document.querySelectorAll('#collectrows .status')].map(s => s.textContent)})"""


def test_the_page_shows_the_control_and_the_untrained_banner_in_chromium(tmp_path):
    sink = start_sink(tmp_path / "dataset")
    plain = start_sink(None, regions=())
    browser = browser_or_skip(tmp_path)
    try:
        feed(sink, untrained=True)
        feed(plain)
        session = browser.open(sink.origin + "/", 1280, 800)

        def probe(s=session):
            raw = browser.evaluate(s, PROBE)
            return json.loads(raw) if raw else {}
        shown = wait_until(lambda: (v := probe()).get("collect") and v.get("banner") and v, 30,
                           "the save control and the untrained banner", interval=0.25)
        assert shown["rows"] == ["door", "gate"]
        assert "untrained model: its labels mean nothing" in shown["bannerText"]
        assert "python -m edge_runtime fetch-model" in shown["bannerText"]

        # Type a label and press save, as a user does: the browser's own POST (with its Origin) is accepted.
        browser.evaluate(session, """(() => { const f = document.querySelector('#collectrows [data-region="door"]');
            f.querySelector('input').value = 'open'; f.querySelector('button').click(); return true; })()""")
        status = wait_until(lambda: (s := probe().get("status") or [""])[0].startswith("saved") and s[0], 10,
                            "the save to be confirmed", interval=0.2)
        assert status.startswith("saved open/door_") and "(1 in open/)" in status
        saved = files(tmp_path / "dataset")
        assert len(saved) == 1 and cv2.imread(str(saved[0])).shape == (120, 128, 3)

        # A label the page's own check refuses is not sent at all.
        browser.evaluate(session, """(() => { const f = document.querySelector('#collectrows [data-region="gate"]');
            f.querySelector('input').value = '../x'; f.querySelector('button').click(); return true; })()""")
        time.sleep(0.5)
        assert len(files(tmp_path / "dataset")) == 1

        # A reload to a trained model: the records stop saying untrained, the banner goes.
        feed(sink, index=1)
        wait_until(lambda: probe().get("banner") is False, 10, "the banner to go")

        # Another site's page (here: the same server under another name, another origin) posting a form at it.
        evil = browser.open(f"http://localhost:{sink.address[1]}/", 800, 600)
        wait_until(lambda: browser.evaluate(evil, "document.readyState !== 'loading' && !!document.body"), 10,
                   "the other page")
        browser.evaluate(evil, f"""(() => {{ const f = document.createElement('form'); f.method = 'post';
            f.action = '{sink.origin}/collect?label=evil&region=door'; document.body.append(f); f.submit();
            return true; }})()""")
        answer = wait_until(lambda: "cross-site" in (browser.evaluate(evil, "document.body.innerText") or ""), 10,
                            "the form's answer")
        assert answer and len(files(tmp_path / "dataset")) == 1 and not (tmp_path / "dataset" / "evil").exists()

        # No regions: one control, for the whole frame; collect off: no control.
        whole = start_sink(tmp_path / "whole", regions=())
        try:
            feed(whole)
            page = browser.open(whole.origin + "/", 1280, 800)
            rows = wait_until(lambda: (v := probe(page)).get("collect") and v["rows"], 30, "the whole-frame control")
            assert rows == [None] and not probe(page)["banner"]
        finally:
            whole.close()
        other = browser.open(plain.origin + "/", 1280, 800)
        wait_until(lambda: "healthy" in (browser.evaluate(other, "document.getElementById('health').textContent")
                                         or "") or None, 30, "the page without collect_dir to poll")
        assert probe(other)["collect"] is False and probe(other)["rows"] == []
    finally:
        browser.close()
        sink.close()
        plain.close()
