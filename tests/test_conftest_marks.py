"""The fast set (`-m "not slow"`) starts no process: conftest.py marks a test slow when it, or one of its
own module's helpers or fixtures, to any depth, starts one (a browser behind a helper escaped once)."""

from __future__ import annotations

from types import SimpleNamespace

import test_collect_http
import test_collect
from conftest import SLOW_CALLS, _source_with_helpers


def test_a_browser_or_daemon_behind_a_helper_makes_the_test_slow():
    browser = SimpleNamespace(
        function=test_collect_http.test_the_page_shows_the_control_and_the_untrained_banner_in_chromium)
    assert "Chromium(" in _source_with_helpers(browser)          # through browser_or_skip
    daemon = SimpleNamespace(function=test_collect.test_hostile_labels_are_refused)
    assert "run_daemon(" in _source_with_helpers(daemon)          # through collect()


def test_an_in_process_test_stays_fast():
    item = SimpleNamespace(function=test_collect_http.test_same_origin_post_saves_the_crop_or_the_frame)
    source = _source_with_helpers(item)
    assert not any(call in source for call in SLOW_CALLS)
