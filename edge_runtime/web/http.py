"""HTTP: Prometheus metrics, health, the latest prediction and frame, and a live view page.

  GET /              the live view (web/static/: live.html, live.css, live.js; assets.py, with a strict CSP)
  GET /static/F      the page's CSS and JS (assets.ROUTES: those files only)
  GET /metrics       Prometheus exposition (metrics.py)
  GET /healthz       200 while frames flow; 503 + JSON reason when the source is lost, frames stop or
                     the pipeline failed (Pipeline.health())
  GET /latest        the last prediction JSON (the stdout line); with regions also `regions`: each
                     region's last record, in config order
  GET /stats.json    the last stats line plus live FPS/latency/temperature, for the page
  GET /snapshot.jpg  the last frame as JPEG
  GET /stream.mjpg   MJPEG (multipart/x-mixed-replace) at http.mjpeg_fps
  GET /events        the last 100 events (state changes), newest first
  GET /snapshots/F   an event's snapshot JPEG (only the snapshot folder's own files)
  POST /collect?label=L[&region=R]   with http.collect_dir set: the latest frame (or region R's crop) as a
                     training image in collect_dir/L/, as `python -m edge_runtime collect` saves it;
                     cross-site requests (Origin, else Referer, not this page's host) get 403; bounded per
                     label and in total (507) and in rate (429) by teach/budget.py

From the inference loop, prediction() only stores references (record, frame image) and feeds the
latency histograms: no copies, no encoding, no I/O. JPEG encoding happens in the request threads,
only while someone asks for a snapshot or watches the stream, at most http.mjpeg_fps times a
second whatever the number of viewers. Request heads are read by one selector thread with a total
deadline (see _Server); a complete request has its own thread and a socket timeout, so a client that
never reads blocks only its own thread, and only until the timeout; requests beyond
http.max_connections get a 503 at once (/healthz and /metrics have a small reserve). The Host header
is checked (DNS rebinding) and the Server header names no Python version.
"""

from __future__ import annotations

import io
import ipaddress
import logging
import selectors
import socket
import socketserver
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from edge_runtime.util import system
from edge_runtime.util.addresses import hostname, parse_listen, redact
from edge_runtime.util.jsonline import dumps
from edge_runtime.util.ratelimit import RateLimited
from edge_runtime.util.errors import UserError
from edge_runtime.core.sink import Sink, SinkContext
from edge_runtime.web import assets

log = logging.getLogger(__name__)

SOCKET_TIMEOUT_S = 10.0
MAX_EVENTS = 100        # kept for GET /events
BOUNDARY = "frame"
HEAD_DEADLINE_S = 10.0      # a request's line and headers must all arrive within this, in total
HEAD_MAX_BYTES = 32768      # a GET's head is a few hundred bytes (a browser's cookies for localhost: a few KB)
MAX_PENDING_HEADS = 128     # connections still sending their head; beyond this the oldest is dropped
LIGHT_PATHS = ("/healthz", "/metrics")
LIGHT_RESERVE = 4           # extra slots for the light paths: monitoring sees the truth when all are held


def same_origin(headers) -> bool:
    """Browsers name the page that sends a POST in Origin (always on a cross-site POST; some older ones
    send only Referer on a same-site one). It must be this server as the request's Host names it, so
    another site's page (a form or fetch aimed at 127.0.0.1) cannot make the device save frames.
    Neither header: not a browser (curl, a script), allowed like every other endpoint."""
    host = (headers.get("Host") or "").strip().lower()
    for name in ("Origin", "Referer"):
        value = headers.get(name)
        if value is None:
            continue
        try:
            url = urlsplit(value.strip())
        except ValueError:
            return False
        return url.scheme in ("http", "https") and bool(host) and \
            _authority(url.netloc.lower(), url.scheme) == _authority(host, "http")
    return True


def _authority(netloc: str, scheme: str) -> str:
    """host[:port] without the scheme's default port: `cam.lan:80` and `cam.lan` are one page."""
    default = ":443" if scheme == "https" else ":80"
    return netloc[:-len(default)] if netloc.endswith(default) else netloc


def _redacted(record: dict) -> dict:
    """A record with the password of its source URI (rtsp://user:pw@...) masked."""
    source = record.get("source")
    return {**record, "source": redact(source)} if isinstance(source, str) and "@" in source else record


class _Server(ThreadingHTTPServer):
    """Connections are only read (by one selector thread, no thread each) until their request head is
    complete, within HEAD_DEADLINE_S in total: clients trickling a header line every few seconds hold no
    slot and are dropped at the deadline. A complete request then takes one of max_connections slots;
    /healthz and /metrics (small, quick answers) may use LIGHT_RESERVE more, so a page full of viewers
    or stuck readers does not make monitoring declare the device down."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 32

    def __init__(self, address, handler, sink: "HttpSink", max_connections: int):
        self.sink = sink
        self.max_connections = max_connections
        self.active = 0
        self._active_lock = threading.Lock()
        self.heads: dict[int, bytes] = {}          # fileno -> the complete head, for the handler
        self._pending: dict[socket.socket, tuple[float, bytearray, tuple]] = {}   # oldest first
        self._pending_lock = threading.Lock()
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._closing = False
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self._head_thread: threading.Thread | None = None
        super().__init__(address, handler)      # on a bind error it calls server_close(), which cleans up
        self._head_thread = threading.Thread(target=self._read_heads, name="http-heads", daemon=True)
        self._head_thread.start()

    def process_request(self, request, client_address):
        """From the accept loop: queue the connection for its head (never blocks)."""
        request.setblocking(False)
        with self._pending_lock:
            if len(self._pending) >= MAX_PENDING_HEADS:    # the oldest has been slowest: drop it
                oldest = next(iter(self._pending))
                self._drop(oldest)
            self._pending[request] = (time.monotonic() + HEAD_DEADLINE_S, bytearray(), client_address)
            self._selector.register(request, selectors.EVENT_READ)
        self._wake_w.send(b"x")

    def _drop(self, sock: socket.socket) -> None:
        """Forget a pending connection and close it (caller holds _pending_lock)."""
        self._pending.pop(sock, None)
        try:
            self._selector.unregister(sock)
        except (KeyError, ValueError):
            pass
        self.shutdown_request(sock)

    def _read_heads(self) -> None:
        while not self._closing:
            with self._pending_lock:
                first = next(iter(self._pending.values()), None)
            timeout = 0.5 if first is None else max(0.0, min(0.5, first[0] - time.monotonic()))
            try:
                events = self._selector.select(timeout)
            except (OSError, ValueError):
                if self._closing:
                    return
                continue
            for key, _ in events:
                if key.fileobj is self._wake_r:
                    try:
                        while self._wake_r.recv(4096):
                            pass
                    except OSError:
                        pass
                    continue
                try:
                    self._read_head(key.fileobj)
                except Exception:       # this thread serves every connection: it must not die
                    log.warning("http: error reading a request", exc_info=True)
                    with self._pending_lock:
                        self._drop(key.fileobj)
            now = time.monotonic()
            with self._pending_lock:
                expired = [sock for sock, (deadline, _, _) in self._pending.items() if deadline <= now]
                for sock in expired:
                    self._drop(sock)
            if expired:
                log.debug("http: dropped %d connection(s) that did not send a request within %.0f s",
                          len(expired), HEAD_DEADLINE_S)

    def _read_head(self, sock: socket.socket) -> None:
        with self._pending_lock:
            entry = self._pending.get(sock)
            if entry is None:
                return
            try:
                data = sock.recv(4096)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._drop(sock)
                return
            buf = entry[1]
            buf += data
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                end = buf.find(b"\n\n")
            if end < 0 and len(buf) <= HEAD_MAX_BYTES:
                return
            self._pending.pop(sock)
            self._selector.unregister(sock)
        if end < 0:
            self._reply_and_close(sock, b"431 Request Header Fields Too Large", b"request head too large\n")
            return
        self._dispatch(sock, entry[2], bytes(buf))

    def _dispatch(self, sock: socket.socket, client_address, head: bytes) -> None:
        """A complete head: a slot and a thread, or a quick 503."""
        words = head.split(b"\n", 1)[0].split()
        path = words[1].split(b"?", 1)[0].decode("latin-1") if len(words) >= 2 else ""
        limit = self.max_connections + (LIGHT_RESERVE if path in LIGHT_PATHS else 0)
        with self._active_lock:
            full = self.active >= limit
            if not full:
                self.active += 1
        if full:
            self._reply_and_close(sock, b"503 Service Unavailable", b"too many clients\n")
            return
        sock.setblocking(True)
        self.heads[sock.fileno()] = head
        try:
            socketserver.ThreadingMixIn.process_request(self, sock, client_address)
        except Exception as exc:      # no thread to be had (a thread limit): refuse this one, serve on
            self.heads.pop(sock.fileno(), None)
            with self._active_lock:
                self.active -= 1
            self.shutdown_request(sock)
            log.warning("http: cannot serve %s: %s", client_address[0], exc)

    def _reply_and_close(self, sock: socket.socket, status: bytes, body: bytes) -> None:
        try:
            sock.settimeout(1.0)
            sock.sendall(b"HTTP/1.0 " + status + b"\r\nContent-Type: text/plain\r\nContent-Length: "
                         + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
        except OSError:
            pass
        self.shutdown_request(sock)

    def handle_error(self, request, client_address):
        log.warning("http: error serving %s", client_address[0], exc_info=True)

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._active_lock:
                self.active -= 1

    def server_close(self):
        self._closing = True
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        if self._head_thread is not None:
            self._head_thread.join(1.0)
        with self._pending_lock:
            for sock in list(self._pending):
                self._drop(sock)
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()
        super().server_close()

    def allowed_host(self, host_header: str | None) -> bool:
        """DNS rebinding: a page on evil.example whose name now resolves to 127.0.0.1 sends `Host:
        evil.example`. Accepted: no Host (not a browser), an IP literal that is the bound address (any IP
        when bound to all interfaces), localhost and the loopback addresses when bound to loopback, this
        machine's name (and name.local) when reachable from the network, and http.allowed_hosts."""
        if host_header is None:
            return True
        host = host_header.strip().lower()
        if host.startswith("["):
            host = host[1:].partition("]")[0]
        elif host.count(":") == 1:
            host = host.partition(":")[0]
        host = host.rstrip(".")
        allowed = {h.lower().rstrip(".") for h in (getattr(self.sink.cfg, "allowed_hosts", None) or ())}
        if host in allowed:
            return True
        bound = self.server_address[0]
        try:
            bound_ip = ipaddress.ip_address(bound)
        except ValueError:
            bound_ip = None
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            ip = None
        if bound_ip is None:                       # bound by name: that name
            return host == bound.lower()
        if bound_ip.is_loopback:
            return host == "localhost" or (ip is not None and ip.is_loopback)
        if ip is not None:
            return bound_ip.is_unspecified or ip == bound_ip or ip.is_loopback
        name = hostname().lower()
        return host in ("localhost", name, f"{name}.local")


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = SOCKET_TIMEOUT_S          # applies to reads and writes on the connection
    server_version = "edge_runtime"

    def setup(self):
        super().setup()
        head = self.server.heads.pop(self.connection.fileno(), None)
        if head is not None:                # read by the server within its deadline (a GET has no body)
            self.rfile.close()
            self.rfile = io.BytesIO(head)

    def version_string(self):             # not the Python version
        return self.server_version

    def log_message(self, fmt, *args):    # requests go to debug, not the journal
        log.debug("http %s: %s", self.client_address[0], fmt % args)

    def _send(self, status: int, body: bytes, content_type: str, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj) -> None:
        self._send(status, (dumps(obj) + "\n").encode(), "application/json")

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        sink = self.server.sink
        sink.count_request()
        path = self.path.split("?", 1)[0]
        if not self.server.allowed_host(self.headers.get("Host")):
            self.close_connection = True
            self._json(421, {"error": "unknown Host; add it to http.allowed_hosts to serve it"})
            return
        try:
            if (page := assets.route(path)) is not None:           # /, the page's CSS and JS
                self._send(*page)
            elif path == "/metrics":
                self._send(200, sink.metrics.exposition(), sink.metrics.content_type)
            elif path == "/healthz":
                health = sink.health()
                self._json(200 if health["healthy"] else 503, health)
            elif path == "/latest":
                record = sink.latest_record()
                if record is None:
                    self._json(503, {"error": "no prediction yet"})
                else:
                    self._json(200, record)
            elif path == "/stats.json":
                self._json(200, sink.live_stats())
            elif path == "/snapshot.jpg":
                jpeg = sink.jpeg()
                if jpeg is None:
                    self._json(503, {"error": "no frame yet"})
                else:
                    self._send(200, jpeg[1], "image/jpeg")
            elif path == "/stream.mjpg":
                self._stream(sink)
            elif (reply := sink.watch_route(path)) is not None:      # /events, /snapshots/<file>
                self._send(*reply)
            elif sink.teach and (reply := sink.teach.route("GET", path, self.path.partition("?")[2],
                                                           self.headers)) is not None:   # web/teach.py
                self._send(*reply)
            else:
                self._json(404, {"error": "not found",
                                 "endpoints": ["/", "/metrics", "/healthz", "/latest", "/stats.json",
                                               "/snapshot.jpg", "/stream.mjpg", "/events", "/snapshots/"]})
        except OSError:            # the client went away or stopped reading (socket timeout)
            self.close_connection = True

    def do_POST(self):
        sink = self.server.sink
        sink.count_request()
        self.close_connection = True        # a body, if one was sent, is not read: parameters are in the query
        if not self.server.allowed_host(self.headers.get("Host")):
            self._json(421, {"error": "unknown Host; add it to http.allowed_hosts to serve it"})
            return
        path, _, query = self.path.partition("?")
        try:
            if path == "/collect":
                self._json(*sink.collect_request(query, self.headers))
            elif sink.teach and (reply := sink.teach.route("POST", path, query, self.headers)) is not None:
                self._send(*reply)
            else:
                self._json(404, {"error": "not found", "endpoints": ["POST /collect"]})
        except OSError:
            pass

    def _stream(self, sink: "HttpSink") -> None:
        self.send_response(200)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command == "HEAD":
            return
        self.close_connection = True
        interval = 1.0 / sink.cfg.mjpeg_fps
        sent_seq = 0
        sink.stream_clients_add(1)
        try:
            while not sink.closed:
                due = time.monotonic() + interval
                jpeg = sink.jpeg()
                if jpeg is not None and jpeg[0] != sent_seq:
                    sent_seq, data = jpeg
                    self.wfile.write(b"--" + BOUNDARY.encode() + b"\r\nContent-Type: image/jpeg\r\n"
                                     b"Content-Length: " + str(len(data)).encode() + b"\r\n\r\n" + data + b"\r\n")
                sink.closed_event.wait(max(0.0, due - time.monotonic()))
        finally:
            sink.stream_clients_add(-1)


class HttpSink(Sink):
    name = "http"
    wants_images = True     # /snapshot.jpg and the live view

    def __init__(self, cfg):
        """`cfg`: config.HttpConfig (listen set). Nothing is bound until start()."""
        self.cfg = cfg
        self.host, self.port = parse_listen(cfg.listen)
        self.closed = False
        self.closed_event = threading.Event()
        self.requests = 0
        self.frames_encoded = 0
        self.stream_clients = 0
        self._latest: tuple[int, dict, object] | None = None      # (seq, record, image)
        self._seq = 0
        self._times: deque[float] = deque(maxlen=4096)          # processing times, for the live FPS
        self._started = time.perf_counter()
        self._last_line: dict | None = None
        self._enc_lock = threading.Lock()
        self._jpeg: tuple[int, bytes] | None = None
        self._jpeg_at = 0.0
        self._clients_lock = threading.Lock()
        self._server: _Server | None = None
        self._events: deque[dict] = deque(maxlen=MAX_EVENTS)   # newest last
        self._region_latest: dict[str, dict] = {}               # region -> its last record
        self._last_frame = -1
        self._collect_lock = threading.Lock()       # makes the SaveBudget once
        self._collect_budget = None
        self._collect_warnings = RateLimited(60.0)
        self.teach = None           # web/teach.py's Teach page, with collect_dir

    def start(self, context: SinkContext) -> "HttpSink":
        """Bind, serve in a thread of its own. The context gives health and model info."""
        from edge_runtime.core.metrics import Metrics

        super().start(context)
        self.stats_obj = context.stats
        self.metrics = Metrics(self.stats_obj, model_info=context.model_info or None, health=self.health)
        self.metrics.extra_collect = self._collect
        self._started = time.perf_counter()
        if self.cfg.collect_dir:
            from edge_runtime.web.teach import Teach
            self.teach = Teach(self, same_origin)
        try:
            self._server = _Server((self.host, self.port), _Handler, self, self.cfg.max_connections)
        except OSError as exc:
            raise UserError(f"http: cannot listen on {self.cfg.listen}: {exc.strerror or exc}") from None
        self.address = self._server.server_address[:2]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.25},
                                        name="http-server", daemon=True)
        self._thread.start()
        shown = f"[{self.address[0]}]" if ":" in self.address[0] else self.address[0]
        self.url = f"http://{shown}:{self.address[1]}/"
        log.info("http: live view on %s (also /metrics, /healthz, /latest, /snapshot.jpg)", self.url)
        self._update_extra()
        return self

    # -- from the inference loop --

    def prediction(self, record, frame):
        region = record.get("region")
        if region is not None:          # regions: one record each per frame; the frame counts once
            self._region_latest[region] = record
            if frame.index == self._last_frame:
                return
            self._last_frame = frame.index
        self._seq += 1
        self._latest = (self._seq, record, frame.image)
        self._times.append(time.perf_counter())
        self.metrics.observe(record["latency_ms"])

    def model_changed(self, model_info):
        self.metrics.model_info = dict(model_info)

    def event(self, event):
        self._events.append(event)

    def stats(self, line):
        self._last_line = line
        self.metrics.last_stats = line
        self._update_extra()

    # -- for the request threads --

    def health(self) -> dict:
        health = self.context.health(self.cfg.unhealthy_after)
        if health is not None:
            health = dict(health)
        else:       # no pipeline (tests, tools): judge by the predictions seen
            age = time.perf_counter() - self._times[-1] if self._times else None
            since = age if age is not None else time.perf_counter() - self._started
            healthy = since <= self.cfg.unhealthy_after
            health = {"healthy": healthy, "status": ("ok" if age is not None else "starting") if healthy
                      else "stalled", "reason": None if healthy else f"no frame for {since:.0f} s",
                      "source_connected": age is not None, "last_frame_age_s": age}
        if health.get("reason"):
            health["reason"] = redact(str(health["reason"]))
        return health

    def latest_record(self) -> dict | None:
        """The last prediction (the stdout line). With regions, the line is the frame's first region, as it
        always was, and `regions` adds every region's last record in config order (a region with none yet,
        e.g. its scores refused, is left out): the page and scripts see all of them, not the first only."""
        latest = self._latest
        if latest is None:
            return None
        record = _redacted(latest[1])
        if self.context.regions:
            last = [self._region_latest.get(region.name) for region in self.context.regions]
            record = {**record, "regions": [_redacted(r) for r in last if r is not None]}
        return record

    def live_fps(self, window: float = 2.0) -> float:
        """Predictions per second over the last `window` seconds (0 when frames stop)."""
        now = time.perf_counter()
        window = min(window, max(now - self._started, 1e-3))
        n = sum(1 for t in list(self._times) if t >= now - window)
        return round(n / window, 2)

    def live_stats(self) -> dict:
        record = self.latest_record()
        return {"host": hostname(), "fps": self.live_fps(), "frames": self._seq,
                "latency_ms": record["latency_ms"] if record else None,
                "cpu_temp_c": system.cpu_temp_c(), "health": self.health(), "mjpeg_fps": self.cfg.mjpeg_fps,
                "stats": self._last_line, "regions": self.region_view(), "collect": bool(self.cfg.collect_dir)}

    # -- regions and events (watch.py) --

    def region_view(self) -> list[dict]:
        """Each watched region's box, current state (its last event) and last top-1, for the live page."""
        states: dict[str, dict] = {}
        for event in reversed(list(self._events)):
            states.setdefault(event["region"], event)
        view = []
        for region in self.context.regions:
            record = self._region_latest.get(region.name)
            top = record["top"][0] if record and record["top"] else None
            state = states.get(region.name)
            view.append({"name": region.name, "box": list(region.box),
                         "state": state["to"] if state else None, "state_score": state["score"] if state else None,
                         "label": top["label"] if top else None, "score": top["score"] if top else None})
        return view

    def watch_route(self, path: str) -> tuple[int, bytes, str] | None:
        """(status, body, content type) for /events and /snapshots/<file>; None for other paths."""
        if path == "/events":
            events = list(self._events)         # a copy first: the publisher appends meanwhile
            events.reverse()
            return 200, (dumps(events) + "\n").encode(), "application/json"
        if not path.startswith("/snapshots/"):
            return None
        reader = self.context.snapshot_reader
        # The reader accepts only its own file names (no '/', no '..'): nothing outside the folder.
        data = reader(unquote(path[len("/snapshots/"):])) if reader is not None else None
        if data is None:
            return 404, b'{"error":"no such snapshot"}\n', "application/json"
        return 200, data, "image/jpeg"

    # -- POST /collect: the live page's "save this frame as ..." --

    def collect_request(self, query: str, headers) -> tuple[int, dict]:
        """(status, JSON) for POST /collect?label=L[&region=R]: the latest frame, or region R's crop at the
        source's resolution, saved as `collect` saves it (its label check, its writer) in collect_dir/L/."""
        from edge_runtime.teach import collect
        from edge_runtime.util.errors import ConfigError
        from edge_runtime.watch.regions import crop

        if not same_origin(headers):
            return 403, {"error": "cross-site request refused: its Origin (or Referer) is not this page"}
        if not self.cfg.collect_dir:
            return 404, {"error": "saving frames is off: set http.collect_dir in the config"}
        try:
            params = parse_qs(query, keep_blank_values=True, max_num_fields=4, strict_parsing=bool(query))
        except ValueError:
            return 400, {"error": "expected ?label=LABEL[&region=REGION]"}
        if any(len(v) > 1 for v in params.values()) or set(params) - {"label", "region"}:
            return 400, {"error": "expected ?label=LABEL[&region=REGION], each once"}
        label = params.get("label", [""])[0]
        name = params.get("region", [None])[0]
        try:
            label = label if label == collect.UNLABELED else collect.check_label(label)
        except ConfigError as exc:
            return 400, {"error": f"label: {exc.detail}"}
        region = next((r for r in self.context.regions if r.name == name), None)
        if name is not None and region is None:
            names = ", ".join(r.name for r in self.context.regions) or "none"
            return 400, {"error": f"no region {name!r}; configured regions: {names}"}
        latest = self._latest
        if latest is None or latest[2] is None:
            return 503, {"error": "no frame yet"}
        image = latest[2] if region is None else crop(latest[2], region.box)
        if image.ndim == 3 and image.shape[2] == 4:
            import cv2
            image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
        # Bounded per label and in total, counted in memory (teach/budget.py); refused before any encoding.
        from edge_runtime.teach.budget import Refused, SaveBudget
        with self._collect_lock:
            if self._collect_budget is None:
                self._collect_budget = SaveBudget(self.cfg.collect_dir, self.cfg.collect_max_per_label,
                                                  self.cfg.collect_max_total)
        budget = self._collect_budget
        try:
            count = budget.reserve(label)
        except Refused as exc:
            self._collect_warnings.warn(log, "http: POST /collect refused (%d): %s", exc.status, exc)
            return exc.status, {"error": str(exc)}
        try:
            collect.output_folder(self.cfg.collect_dir, label)
            folder = Path(self.cfg.collect_dir).expanduser() / label
            path = collect.Writer(folder, f"{name}_" if region is not None else "").save(image)
        except collect.CollectError as exc:
            budget.release(label)       # nothing was written: not counted, no name given out
            self._collect_warnings.warn(log, "http: could not save a frame: %s", exc)
            return 500, {"error": str(exc)}
        log.info("http: saved %s (%dx%d) for label %s", path, image.shape[1], image.shape[0], label)
        return 200, {"saved": f"{label}/{path.name}", "label": label, "region": name, "frame": latest[1].get("frame"),
                     "width": int(image.shape[1]), "height": int(image.shape[0]), "images": count}

    def jpeg(self) -> tuple[int, bytes] | None:
        """(seq, JPEG of the latest frame), encoded here at most mjpeg_fps times a second, shared by all viewers."""
        import cv2
        import numpy as np

        with self._enc_lock:
            latest = self._latest
            if latest is None:
                return None
            seq, _, image = latest
            now = time.monotonic()
            if self._jpeg is not None and (self._jpeg[0] == seq or now - self._jpeg_at < 1.0 / self.cfg.mjpeg_fps):
                return self._jpeg
            if image.ndim == 3 and image.shape[2] == 4:
                image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
            ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(image),
                                   [cv2.IMWRITE_JPEG_QUALITY, int(self.cfg.jpeg_quality)])
            if not ok:
                return self._jpeg
            self._jpeg, self._jpeg_at = (seq, buf.tobytes()), now
            self.frames_encoded += 1
            return self._jpeg

    def count_request(self) -> None:
        with self._clients_lock:
            self.requests += 1
        self._update_extra()

    def stream_clients_add(self, n: int) -> None:
        with self._clients_lock:
            self.stream_clients += n
        self._update_extra()

    def _collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        yield GaugeMetricFamily("edge_runtime_http_stream_clients", "Clients watching the MJPEG stream",
                                value=self.stream_clients)
        c = CounterMetricFamily("edge_runtime_http_frames_encoded", "JPEG frames encoded for snapshots and the stream")
        c.add_metric([], self.frames_encoded)
        yield c

    def _update_extra(self) -> None:
        self.stats_obj.set_extra("http", {"requests": self.requests, "stream_clients": self.stream_clients,
                                           "frames_encoded": self.frames_encoded})

    def close(self) -> None:
        self.closed = True
        self.closed_event.set()
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(1.0)
        log.debug("http: closed")
