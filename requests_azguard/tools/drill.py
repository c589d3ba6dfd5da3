"""``azguard drill``: the migration drill, plain requests vs guarded, side by side.

An embedded keep-alive server answers both sides; plain ``requests`` and a
guarded Session drive the same load at the same time, the fault hits every
existing flow of both at one moment, and the drill reports what each side saw:
requests, failures by error, retries, evictions, p50 / p99 / worst stall.

Faults:

* ``blackhole``: the conntrack migration (see ``netns``): the whole process
  moves into a private network namespace first, so it needs root and the
  kernel tools.
* ``reset`` / ``fin``: unprivileged; a local proxy between client and server
  aborts (RST) or closes (FIN) every existing flow.

The guarded side is configured from ``AZGUARD_*`` exactly as in production, so
``AZGUARD_ACK_TIMEOUT=500ms azguard drill --fault reset`` tries a setting.
"""

from __future__ import annotations

import argparse
import errno as errno_mod
import json
import ssl
import sys
import threading
import time
from typing import Any, Dict, List, Optional, Sequence, TextIO, Tuple

import requests
from requests.adapters import HTTPAdapter

from .._config import GuardConfig, parse_duration
from .._errors import ConfigError
from .._failure import failure_of
from .._instrument import NoopInstrumentation, add_instrumentation, remove_instrumentation
from .._policy import FLOW, root_cause
from . import netns
from .drill_result import (
    DEAD_FLOW,
    SIDE_FIELDS,
    STUCK,
    DrillOptions,
    DrillResult,
    Record,
    SideResult,
)
from .drill_server import SIDE_HEADER, DrillServer

__all__ = ["error_label", "format_report", "main", "run_drill"]

EXIT_UNAVAILABLE = 2
FAULTS = ("blackhole", "reset", "fin")
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
SIDES = ("plain", "guarded")


# ---------------------------------------------------------------------------
# Error labels


def error_label(exc: BaseException) -> str:
    """A short, stable label: the requests-level type and the root cause.

    ``ConnectionError(ECONNRESET)``, ``ConnectionError(RemoteDisconnected)``,
    ``ReadTimeout``, ``CircuitOpenError``...
    """
    top = type(exc).__name__
    if isinstance(exc, requests.exceptions.Timeout):
        return top
    root = root_cause(exc)
    if root is exc:
        return top
    # An SSLError's errno is OpenSSL's error code, not an errno.
    code = root.errno if isinstance(root, OSError) and not isinstance(root, ssl.SSLError) else None
    if code is not None and code in errno_mod.errorcode:
        inner = errno_mod.errorcode[code]
    else:
        inner = type(root).__name__
    return f"{top}({inner})"


# ---------------------------------------------------------------------------
# The guard's own reports (guarded side only)


class _Counter(NoopInstrumentation):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.retries: Dict[str, int] = {}
        self.evictions: Dict[str, int] = {}
        self.blackholes = 0

    def retry(self, host: str, reason: str) -> None:
        with self._lock:
            self.retries[reason] = self.retries.get(reason, 0) + 1

    def connection_evicted(self, host: str, reason: str) -> None:
        with self._lock:
            self.evictions[reason] = self.evictions.get(reason, 0) + 1

    def blackhole(self, host: str) -> None:
        with self._lock:
            self.blackholes += 1


# ---------------------------------------------------------------------------
# Load


class _Side:
    def __init__(self, name: str, session: requests.Session, threads: int) -> None:
        self.name = name
        self.session = session
        self.records: List[List[Record]] = [[] for _ in range(threads)]
        self.inflight: List[Optional[float]] = [None] * threads
        self.urllib3_retries = [0] * threads
        self.threads: List[threading.Thread] = []

    def counts(self) -> Tuple[int, int]:
        done = failed = 0
        for recs in self.records:
            done += len(recs)
            failed += sum(1 for r in recs if r[2] is not None)
        return done, failed


def _worker(
    side: _Side,
    idx: int,
    url: str,
    options: DrillOptions,
    origin: List[float],
    go: threading.Event,
    stop: threading.Event,
) -> None:
    records = side.records[idx]
    session = side.session
    method = options.method
    send_body = method in ("POST", "PUT", "PATCH")
    headers = {SIDE_HEADER: side.name}
    go.wait()
    start = origin[0]
    n = 0
    while not stop.is_set():
        n += 1
        path = f"/{side.name}/{idx}/{n}"
        body = f'{{"drill": {n}}}'.encode() if send_body else None
        t0 = time.monotonic()
        side.inflight[idx] = t0
        err: Optional[str] = None
        try:
            resp = session.request(
                method, url + path, data=body, headers=headers, timeout=options.timeout
            )
            history = getattr(getattr(resp.raw, "retries", None), "history", ())
            side.urllib3_retries[idx] += len(history)
            if resp.status_code >= 400:
                err = f"HTTP {resp.status_code}"
            elif method != "HEAD" and resp.content != path.encode():
                err = "wrong response body"
            resp.close()
        except Exception as exc:  # every failure is a data point, not a crash
            err = error_label(exc)
            failure = failure_of(exc)
            if failure is not None and failure.blame == FLOW:
                err += DEAD_FLOW  # the guard's evidence: the path, not the host
        t1 = time.monotonic()
        side.inflight[idx] = None
        records.append((t0 - start, t1 - t0, err))


def _plain_session(threads: int) -> requests.Session:
    s = requests.Session()
    # Mounted explicitly so the control stays plain even under AZGUARD_AUTO.
    adapter = HTTPAdapter(pool_connections=1, pool_maxsize=threads)
    s.mount("http://", adapter)
    s.mount("https://", adapter)
    return s


def _guarded_session(config: GuardConfig, threads: int) -> requests.Session:
    from .._adapter import mount

    return mount(requests.Session(), config, pool_connections=1, pool_maxsize=threads)


def _grace(options: DrillOptions) -> float:
    """How long to wait after the run for requests still in flight."""
    if options.timeout is None:
        return 5.0
    connect, read = options.timeout
    # One timed-out attempt plus one retry on a fresh connection.
    return min(60.0, 2 * (connect + read) + 1.0)


def _progress(out: Optional[TextIO], msg: str) -> None:
    if out is not None:
        print(f"azguard drill: {msg}", file=out, flush=True)


def run_drill(
    options: DrillOptions,
    config: GuardConfig,
    progress: Optional[TextIO] = None,
) -> DrillResult:
    """Run the drill (the caller has already entered a netns for ``blackhole``)."""
    from .fault_proxy import FaultProxy

    server = DrillServer(delay=options.server_delay)
    proxy: Optional[FaultProxy] = None
    counter = _Counter()
    sides: List[_Side] = []
    try:
        if options.fault in ("reset", "fin"):
            proxy = FaultProxy(("127.0.0.1", server.port))
            url = proxy.url
        else:
            url = server.url
        sides = [
            _Side("plain", _plain_session(options.threads), options.threads),
            _Side("guarded", _guarded_session(config, options.threads), options.threads),
        ]
        # One unrecorded request per side first: lazy imports and the first
        # connect are start-up costs, not part of what the fault does.
        for side in sides:
            warm = side.session.get(
                url + "/warm-up", headers={SIDE_HEADER: side.name}, timeout=options.timeout
            )
            warm.close()
        add_instrumentation(counter)
        go, stop = threading.Event(), threading.Event()
        origin: List[float] = []
        for side in sides:
            for i in range(options.threads):
                t = threading.Thread(
                    target=_worker,
                    args=(side, i, url, options, origin, go, stop),
                    name=f"azguard-drill-{side.name}-{i}",
                    daemon=True,  # a request stuck without a timeout must not hold the exit
                )
                side.threads.append(t)
                t.start()
        # Both sides start together, and measure from the same origin.
        start = time.monotonic()
        origin.append(start)
        go.set()
        fault_at_target = options.fault_time
        fault_at = -1.0
        flows = 0
        next_tick = 1.0
        end = options.duration
        while True:
            now = time.monotonic() - start
            if now >= end:
                break
            if fault_at < 0 and now >= fault_at_target:
                fault_at = time.monotonic() - start
                flows = _inject(options.fault, proxy, server.port)
                _progress(
                    progress,
                    f"t={fault_at:5.1f}s  FAULT {options.fault}: {flows} flow(s) hit",
                )
            if now >= next_tick:
                _progress(progress, f"t={now:5.1f}s  " + _tick_line(sides))
                next_tick += 1.0
            wake = min(end, next_tick, fault_at_target if fault_at < 0 else end)
            time.sleep(max(0.0, min(0.1, wake - (time.monotonic() - start))))
        stop.set()
        deadline = time.monotonic() + _grace(options)
        for side in sides:
            for t in side.threads:
                t.join(max(0.0, deadline - time.monotonic()))
        # Whatever is still in flight now is recorded as stuck, with the stall so far.
        now_abs = time.monotonic()
        for side in sides:
            for i, t in enumerate(side.threads):
                began = side.inflight[i]
                if t.is_alive() and began is not None:
                    side.records[i].append((began - start, now_abs - began, STUCK))
        _progress(progress, "done   " + _tick_line(sides))
        if fault_at < 0:
            fault_at = options.fault_time
        plain, guarded = sides
        result = DrillResult(
            options=options,
            fault_at=fault_at,
            flows_hit=flows,
            plain=_side_result(plain, server, None),
            guarded=_side_result(guarded, server, counter),
            config=config,
        )
        return result
    finally:
        remove_instrumentation(counter)
        for side in sides:
            side.session.close()
        if proxy is not None:
            proxy.close()
        server.close()


def _inject(fault: str, proxy: Any, port: int) -> int:
    if fault == "reset":
        return int(proxy.reset_all())
    if fault == "fin":
        return int(proxy.fin_all())
    return netns.blackhole_port(port)


def _tick_line(sides: Sequence[_Side]) -> str:
    parts = []
    for side in sides:
        done, failed = side.counts()
        parts.append(f"{side.name} {done - failed} ok / {failed} failed")
    return " | ".join(parts)


def _side_result(side: _Side, server: DrillServer, counter: Optional[_Counter]) -> SideResult:
    records = sorted((r for recs in side.records for r in recs), key=lambda r: r[0])
    return SideResult(
        records=records,
        connections=server.connections_by_side.get(side.name, 0),
        urllib3_retries=sum(side.urllib3_retries),
        retries_by_reason=None if counter is None else dict(counter.retries),
        evictions_by_reason=None if counter is None else dict(counter.evictions),
        blackholes_detected=None if counter is None else counter.blackholes,
    )


# ---------------------------------------------------------------------------
# Report


def _fmt_s(value: Optional[float]) -> str:
    if value is None:
        return "-"
    if value < 1.0:
        return f"{value * 1000:.1f} ms"
    return f"{value:.2f} s"


def _fmt_n(value: Optional[int]) -> str:
    return "-" if value is None else str(value)


def format_report(result: DrillResult) -> str:
    o = result.options
    data = result.to_json()
    p, g = data["plain"], data["guarded"]
    timeout = (
        "none" if o.timeout is None else f"connect {o.timeout[0]:g} s / read {o.timeout[1]:g} s"
    )
    how = {
        "reset": "the proxy aborted them with RST",
        "fin": "the proxy closed them with FIN",
        "blackhole": "conntrack forgot them; their packets are now dropped",
    }[o.fault]
    lines = [
        f"azguard drill: {o.fault} fault at t={result.fault_at:.1f} s of a {o.duration:g} s run; "
        f"{o.threads} thread(s) per side, {o.method}, timeout {timeout}, "
        f"server delay {o.server_delay * 1000:g} ms",
        f"the fault hit {result.flows_hit} flow(s): {how}",
        "",
    ]
    rows: List[Tuple[str, str, str]] = [
        ("requests", _fmt_n(p["requests"]), _fmt_n(g["requests"])),
        ("failed", _fmt_n(p["failed"]), _fmt_n(g["failed"])),
        ("  on dead flows", "-", _fmt_n(g["dead_flow_failures"])),
        ("  circuit open", _fmt_n(p["circuit_open"]), _fmt_n(g["circuit_open"])),
    ]
    labels = list(dict.fromkeys([*p["failures_by_error"], *g["failures_by_error"]]))
    for label in labels:
        rows.append(
            (
                "  " + label,
                str(p["failures_by_error"].get(label, 0)),
                str(g["failures_by_error"].get(label, 0)),
            )
        )
    rows += [
        ("retries", _fmt_n(p["retries"]), _fmt_n(g["retries"])),
        ("evictions", _fmt_n(p["evictions"]), _fmt_n(g["evictions"])),
        (
            "black holes detected",
            _fmt_n(p["blackholes_detected"]),
            _fmt_n(g["blackholes_detected"]),
        ),
        ("connections opened", _fmt_n(p["connections"]), _fmt_n(g["connections"])),
        ("p50", _fmt_s(p["p50_s"]), _fmt_s(g["p50_s"])),
        ("p99", _fmt_s(p["p99_s"]), _fmt_s(g["p99_s"])),
        ("worst stall", _fmt_s(p["max_s"]), _fmt_s(g["max_s"])),
    ]
    width = max(len(r[0]) for r in rows)
    col = max(10, *(len(r[1]) for r in rows), *(len(r[2]) for r in rows))
    lines.append(f"{'':{width}}  {'plain':>{col}}  {'guarded':>{col}}")
    for name, a, b in rows:
        lines.append(f"{name:{width}}  {a:>{col}}  {b:>{col}}")
    notes = []
    if p["evictions"] is None:
        notes.append("'-': plain requests has no guard to report evictions or black holes")
    if g["failed"] and o.method not in ("GET", "HEAD", "PUT", "DELETE", "OPTIONS"):
        notes.append(
            f"{o.method} is not idempotent: the guard replays it only when not one byte was "
            "written (AZGUARD_RETRY_NON_IDEMPOTENT=always opts in)"
        )
    if p["stuck"] or g["stuck"]:
        notes.append(f"'{STUCK}': counted as failed with the stall measured so far")
    if notes:
        lines.append("")
        lines += [f"note: {n}" for n in notes]
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Command line


def _positive(name: str, accepted: str, minimum: float = 0.0, maximum: float = 1e9) -> Any:
    def parse(raw: str) -> float:
        try:
            value = parse_duration(name, raw)
        except ConfigError:
            raise argparse.ArgumentTypeError(f"{raw!r}: expected {accepted}") from None
        assert value is not None
        if not minimum <= value <= maximum:
            raise argparse.ArgumentTypeError(f"{raw!r}: expected {accepted}")
        return value

    return parse


def _threads(raw: str) -> int:
    if not raw.strip().isdigit() or not 1 <= int(raw) <= 256:
        raise argparse.ArgumentTypeError(f"{raw!r}: expected a whole number from 1 to 256")
    return int(raw)


def _delay(raw: str) -> float:
    if raw.strip() in ("0", "0s", "0ms", "off"):
        return 0.0
    return float(_positive("--server-delay", "0 or a duration up to 10s, e.g. 5ms", 0.0, 10.0)(raw))


def _timeout(raw: str) -> Optional[Tuple[float, float]]:
    from .._config import _parse_timeout_pair

    try:
        return _parse_timeout_pair("--timeout", raw)
    except ConfigError:
        raise argparse.ArgumentTypeError(
            f"{raw!r}: expected one duration (e.g. 5), 'connect,read' (e.g. 2,5) "
            "or none (no timeout, like a legacy script)"
        ) from None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="azguard drill",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="--json prints one object: fault, options, guard_config, and for each side\n"
        "(plain, guarded):\n"
        + "\n".join(f"  {name:<20} {meaning}" for name, meaning in SIDE_FIELDS.items()),
        description=(
            "The migration drill: plain requests and a guarded Session drive the same load "
            "against an embedded keep-alive server; a fault hits every existing flow mid-run. "
            "The guarded side reads AZGUARD_* like production, so try your settings here."
        ),
    )
    p.add_argument(
        "--fault",
        choices=FAULTS,
        default="reset",
        help="blackhole: conntrack forgets the flows (root, nft, conntrack, ip); "
        "reset / fin: a local proxy aborts (RST) or closes (FIN) them (default: reset)",
    )
    p.add_argument("--threads", type=_threads, default=4, help="threads per side (default 4)")
    p.add_argument(
        "--duration",
        type=_positive("--duration", "a duration from 1s to 1h, e.g. 10 or 30s", 1.0, 3600.0),
        default=10.0,
        help="length of the run (default 10s)",
    )
    p.add_argument(
        "--fault-at",
        type=_positive("--fault-at", "a duration, e.g. 3 or 2500ms"),
        default=None,
        help="when the fault hits (default: a third of the way in)",
    )
    p.add_argument(
        "--method",
        type=str.upper,
        choices=METHODS,
        default="GET",
        help="HTTP method (default GET; POST shows the 'nothing written' replay rule)",
    )
    p.add_argument(
        "--timeout",
        type=_timeout,
        default=(2.0, 5.0),
        help="'connect,read' or one duration for both, or none (default 2,5)",
    )
    p.add_argument(
        "--server-delay",
        type=_delay,
        default=0.005,
        help="how long the server works on each request (default 5ms)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument(
        "--plot",
        metavar="FILE.png",
        help="write a per-request latency timeline with the fault marked (needs the 'plot' extra)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    if args.fault_at is not None and args.fault_at >= args.duration:
        parser.print_usage(sys.stderr)
        print(
            f"azguard drill: --fault-at {args.fault_at:g}s is not inside the "
            f"{args.duration:g}s run: expected a moment before --duration",
            file=sys.stderr,
        )
        return 2
    if args.plot:
        from .timeline import PlotUnavailable, require_matplotlib

        try:
            require_matplotlib()
        except PlotUnavailable as exc:
            print(f"azguard drill: {exc}", file=sys.stderr)
            return 2
    if args.fault == "blackhole":
        # Before anything else and before any thread: the namespace switch
        # applies to the calling thread, and only threads started later follow.
        reason = netns.unavailable_reason()
        if reason is None:
            try:
                netns.enter_private_netns()
            except (OSError, RuntimeError) as exc:
                reason = str(exc)
        if reason is not None:
            print(
                f"azguard drill: --fault blackhole {reason}; "
                "try --fault reset (or fin), which needs no privileges",
                file=sys.stderr,
            )
            return EXIT_UNAVAILABLE
    try:
        config = GuardConfig.from_env()
    except ConfigError as exc:
        print(f"azguard drill: {exc}", file=sys.stderr)
        return 2
    options = DrillOptions(
        fault=args.fault,
        threads=args.threads,
        duration=args.duration,
        fault_at=args.fault_at,
        method=args.method,
        timeout=args.timeout,
        server_delay=args.server_delay,
    )
    result = run_drill(options, config, progress=None if args.quiet else sys.stderr)
    if args.plot:
        from .timeline import write_timeline

        write_timeline(result, args.plot)
        _progress(None if args.quiet else sys.stderr, f"timeline written to {args.plot}")
    if args.json:
        print(json.dumps(result.to_json(), indent=2, sort_keys=True))
    else:
        print(format_report(result))
    return 0
