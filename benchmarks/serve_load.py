"""Load test of `s2i-run serve` against the same model called in-process.

    python -m benchmarks.serve_load                  # shipped model; 1, 8, 32, 128 clients; then the soak
    python -m benchmarks.serve_load --quick          # a look, not a result

Contenders, each doing the same work per request (decode a WAV upload, log-Mel, encoder, generator, one PNG):
  http, batched      `s2i-run serve` (dynamic batcher: batches of up to 32, 5 ms wait), our own async client
  http, batch 1      the same server with --batch-size 1: every request is its own model batch
  in-process, batched / batch 1   the service's work (`ImageService.run`) called from N threads, no HTTP
Closed loop: N clients, each sending its next request when the last is answered; the contenders take turns
at each level. Then the soak: 128 clients for 30 s on a fresh server, counting every request's fate (5xx,
lost = no complete response) and sampling the server's RSS.

Writes OUT/<date>-<host>/serve.json and serve.md. Loopback only; every loop is bounded in time and count.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .common import machine_info, percentile, pin_thread_env, results_dir_name
from .loadgen import LOST, Outcome, run_closed_loop, statuses

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "s2i_runtime" / "examples"
DEFAULT_OUT = Path(__file__).resolve().parent / "results"
README = Path(__file__).resolve().parent / "README.md"
README_START, README_END = "<!-- bench:serve:start -->", "<!-- bench:serve:end -->"
HTTP_BATCHED, HTTP_SINGLE = "http, batched", "http, batch 1"
INPROC_BATCHED, INPROC_SINGLE = "in-process, batched", "in-process, batch 1"
# --contenders keys -> the names in the tables
CONTENDERS = {"http": HTTP_BATCHED, "http-b1": HTTP_SINGLE, "inproc": INPROC_BATCHED, "inproc-b1": INPROC_SINGLE}
SERVE_LIBRARIES = ("starlette", "uvicorn", "python-multipart", "onnxruntime", "numpy", "pillow")


def parser() -> argparse.ArgumentParser:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    p = argparse.ArgumentParser(prog="python -m benchmarks.serve_load", description=__doc__.splitlines()[0])
    p.add_argument("--bundle", type=Path, default=None, help="model bundle (default: the shipped model)")
    p.add_argument("--threads", type=int, default=usable, help=f"ONNX Runtime / BLAS threads (default {usable})")
    p.add_argument("--levels", default="1,8,32,128", help="concurrent clients, comma-separated")
    p.add_argument("--seconds", type=float, default=10.0, help="measured seconds per level and contender")
    p.add_argument("--rounds", type=int, default=3, help="turns per level that the measured seconds are split into")
    p.add_argument("--warmup-seconds", type=float, default=2.0, help="unmeasured seconds before each")
    p.add_argument("--max-requests", type=int, default=20000, help="cap on requests per measurement")
    p.add_argument("--batch-size", type=int, default=32, help="the batched contenders' largest batch")
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="the batched contenders' batch wait")
    p.add_argument("--soak-clients", type=int, default=128, help="clients in the soak (0: no soak)")
    p.add_argument("--soak-seconds", type=float, default=30.0, help="length of the soak")
    p.add_argument("--contenders", default=",".join(CONTENDERS), help=f"some of {','.join(CONTENDERS)}")
    p.add_argument("--quick", action="store_true", help="levels 1,8; 3 s each; soak 32 clients x 5 s")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results root")
    p.add_argument("--update-readme", action="store_true", help="put the tables into benchmarks/README.md")
    p.add_argument("--note", default="", help="a remark stored with the results")
    return p


# -- what one request is ----------------------------------------------------------------------------------

def example_bodies() -> list[bytes]:
    return [path.read_bytes() for path in sorted(EXAMPLES.glob("*.wav"))]


def http_request(bodies: list[bytes]) -> Callable[[int], tuple[str, bytes, dict[str, str]]]:
    def make(index: int) -> tuple[str, bytes, dict[str, str]]:
        return (f"/v1/images?seed={index}", bodies[index % len(bodies)],
                {"Content-Type": "audio/wav", "Accept": "image/png"})

    return make


def summary(outcomes: list[Outcome], seconds: float) -> dict[str, Any]:
    ok = [o.seconds for o in outcomes if o.status == 200]
    return {
        "requests": len(outcomes),
        "ok": len(ok),
        "statuses": statuses(outcomes),
        "server_errors": sum(1 for o in outcomes if o.status >= 500),
        "lost": sum(1 for o in outcomes if o.status == LOST),
        "throughput_rps": len(ok) / seconds if seconds > 0 else 0.0,
        "p50_ms": percentile(ok, 50) * 1e3 if ok else None,
        "p99_ms": percentile(ok, 99) * 1e3 if ok else None,
        "max_ms": max(ok) * 1e3 if ok else None,
        "errors": sorted({o.error for o in outcomes if o.error})[:5],
    }


# -- contenders -----------------------------------------------------------------------------------------

class HttpContender:
    def __init__(self, bundle: Path | None, threads: int, batch_size: int, max_wait_ms: float) -> None:
        from s2i_runtime.serve.process import ServerProcess

        args = ["--threads", threads, "--batch-size", batch_size, "--max-wait-ms", max_wait_ms]
        if bundle is not None:
            args += ["--bundle", bundle]
        self.server = ServerProcess(args, env={"PYTHONPATH": str(ROOT)}).start()
        self.bodies = example_bodies()

    def batch_counts(self) -> dict[str, float]:
        """Batches and inputs batched so far, from the server's /metrics histogram (cumulative buckets)."""
        text = _get(self.server.url + "metrics")
        return {"sum": _metric(text, "s2i_batch_size_sum"), "count": _metric(text, "s2i_batch_size_count")}

    def measure(self, clients: int, seconds: float, max_requests: int) -> list[Outcome]:
        return run_closed_loop(self.server.url, clients, seconds, max_requests, http_request(self.bodies))

    def close(self) -> int:
        return self.server.stop()


class InProcessContender:
    """The service's own per-request work, called from N threads: the same model and code, minus HTTP."""

    def __init__(self, bundle: Path | None, threads: int, batch_size: int, max_wait_ms: float | None) -> None:
        from s2i_runtime.pipeline import Pipeline
        from s2i_runtime.serve import ServeConfig
        from s2i_runtime.serve.service import ImageService

        pipe = Pipeline.load(bundle, backend="onnxruntime", device="cpu", batch_size=batch_size,
                             max_wait_ms=max_wait_ms, threads=threads)
        self.service = ImageService(pipe, ServeConfig(bundle=bundle, batch_size=batch_size))
        self.service.warm_up()
        self.bodies = example_bodies()

    def batch_counts(self) -> dict[str, float]:
        counts = self.service.batch_counts()
        return {"sum": float(sum(size * n for size, n in enumerate(counts))), "count": float(sum(counts))}

    def measure(self, clients: int, seconds: float, max_requests: int) -> list[Outcome]:
        deadline = time.monotonic() + seconds
        outcomes: list[Outcome] = []
        lock = threading.Lock()
        sent = iter(range(max_requests))

        def client() -> None:
            while time.monotonic() < deadline:
                with lock:
                    index = next(sent, None)
                if index is None:
                    return
                started = time.monotonic()
                try:
                    self.service.run(self.bodies[index % len(self.bodies)], "clip", seed=index)
                    status, error = 200, ""
                except Exception as exc:  # counted, like an HTTP error, never raised past the benchmark
                    status, error = 500, f"{type(exc).__name__}: {exc}"
                with lock:
                    outcomes.append(Outcome(status, time.monotonic() - started, started, error))

        workers = [threading.Thread(target=client) for _ in range(clients)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        return outcomes

    def close(self) -> int:
        self.service.close()
        return 0


def open_contender(name: str, args: argparse.Namespace):
    batched = name in (HTTP_BATCHED, INPROC_BATCHED)
    size = args.batch_size if batched else 1
    if name.startswith("http"):
        return HttpContender(args.bundle, args.threads, size, args.max_wait_ms)
    return InProcessContender(args.bundle, args.threads, size, args.max_wait_ms)


def run_levels(args: argparse.Namespace, levels: list[int], chosen: list[str], progress) -> list[dict[str, Any]]:
    """Every contender at every level: `--rounds` turns each of `--seconds / --rounds`, A B C A B C ..., so a
    busy spell on a shared machine falls on all of them alike."""
    rows = []
    contenders = {}
    try:
        for name in chosen:
            progress(f"starting {name}")
            contenders[name] = open_contender(name, args)
        for clients in levels:
            for name, contender in contenders.items():
                progress(f"{clients} clients: warming up {name}")
                contender.measure(clients, args.warmup_seconds, args.max_requests)
            taken: dict[str, dict[str, Any]] = {name: {"outcomes": [], "seconds": 0.0, "sum": 0.0, "count": 0.0}
                                                for name in contenders}
            for round_index in range(args.rounds):
                for name, contender in contenders.items():
                    progress(f"{clients} clients: {name} (round {round_index + 1}/{args.rounds})")
                    before = contender.batch_counts()
                    started = time.monotonic()
                    taken[name]["outcomes"] += contender.measure(clients, args.seconds / args.rounds,
                                                                 args.max_requests // args.rounds)
                    taken[name]["seconds"] += time.monotonic() - started
                    after = contender.batch_counts()
                    taken[name]["sum"] += after["sum"] - before["sum"]
                    taken[name]["count"] += after["count"] - before["count"]
            for name, got in taken.items():
                rows.append({"clients": clients, "contender": name, **summary(got["outcomes"], got["seconds"]),
                             "mean_batch": got["sum"] / got["count"] if got["count"] else None,
                             "seconds": round(got["seconds"], 3)})
    finally:
        for contender in contenders.values():
            contender.close()
    return rows


# -- the soak ---------------------------------------------------------------------------------------------

class RssSampler:
    """The server's resident memory every `interval` seconds, read from /proc/<pid>/status."""

    def __init__(self, pid: int, interval: float = 0.5) -> None:
        self.pid, self.interval = pid, interval
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def read(self, field: str) -> int | None:
        try:
            with open(f"/proc/{self.pid}/status", encoding="ascii") as handle:
                for line in handle:
                    if line.startswith(field + ":"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
        return None

    def _run(self) -> None:
        start = time.monotonic()
        while not self._stop.wait(self.interval):
            rss = self.read("VmRSS")
            if rss is not None:
                self.samples.append((time.monotonic() - start, rss))

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run_soak(args: argparse.Namespace, progress) -> dict[str, Any]:
    contender = HttpContender(args.bundle, args.threads, args.batch_size, args.max_wait_ms)
    try:
        progress(f"soak: warming up {contender.server.url}")
        contender.measure(min(8, args.soak_clients), args.warmup_seconds, args.max_requests)
        counted_before = _metric(_get(contender.server.url + "metrics"), IMAGES_200)
        sampler = RssSampler(contender.server.pid)
        rss_before = sampler.read("VmRSS")
        progress(f"soak: {args.soak_clients} clients x {args.soak_seconds:g} s")
        with sampler:
            started = time.monotonic()
            outcomes = contender.measure(args.soak_clients, args.soak_seconds, 10**7)
            elapsed = time.monotonic() - started
        peak = sampler.read("VmHWM")
        rss_after = sampler.read("VmRSS")
        metrics = _get(contender.server.url + "metrics")
        healthy = json.loads(_get(contender.server.url + "healthz")).get("status") == "ok"
        command = " ".join(["s2i-run", "serve", *contender.server.args])
    finally:
        exit_code = contender.close()
    mb = 1 / 2**20
    samples = [rss for _, rss in sampler.samples]
    half = len(samples) // 2
    return {
        "clients": args.soak_clients,
        "server_command": command,
        **summary(outcomes, elapsed),
        "seconds": round(elapsed, 3),
        "rss_mb_after_warmup": rss_before * mb if rss_before else None,
        "rss_mb_max_first_half": max(samples[:half]) * mb if half else None,
        "rss_mb_max_second_half": max(samples[half:]) * mb if samples else None,
        "rss_mb_at_end": rss_after * mb if rss_after else None,
        "peak_rss_mb": peak * mb if peak else None,
        "rss_samples": len(samples),
        "server_in_flight_after": _metric(metrics, "s2i_requests_in_flight"),
        "server_counted_200": _metric(metrics, IMAGES_200) - counted_before,
        "mean_batch": _metric(metrics, "s2i_batch_size_sum") / max(1.0, _metric(metrics, "s2i_batch_size_count")),
        "healthy_after": healthy,
        "server_exit_code": exit_code,
    }


IMAGES_200 = 's2i_http_requests_total{method="POST",route="/v1/images",status="200"}'


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read().decode()


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


# -- report -----------------------------------------------------------------------------------------------

def _fmt(value: Any, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        f"## `s2i-run serve` under load — {results['date']} on {m['host']}",
        "",
        f"- CPU: {m['cpu']}; logical cores {m['logical_cores']}, usable {m['usable_cores']}; load average at "
        f"start {m['load_average_1_5_15']}, at end {results['load_average_at_end']}",
        f"- model: {results['bundle']}; {results['settings']['threads']} ONNX Runtime threads; batched contenders: "
        f"batches of up to {results['settings']['batch_size']}, {results['settings']['max_wait_ms']:g} ms wait",
        f"- each request: one WAV upload (the three example captions in turn, 2.2-2.4 s), a new seed, one 64x64 PNG "
        f"back; closed loop, {results['settings']['seconds']:g} s per level and contender after "
        f"{results['settings']['warmup_seconds']:g} s warm-up, in {results['settings']['rounds']} turns "
        f"(A B C D A B C D ...)",
        f"- libraries: {', '.join(f'{k} {v}' for k, v in results['libraries'].items())}",
        f"- command: `{results['command']}`",
    ]
    if results.get("note"):
        lines.append(f"- note: {results['note']}")
    if results["levels"]:
        lines += ["", "| clients | contender | req/s | p50 ms | p99 ms | mean batch | not 200 | lost |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in results["levels"]:
            lines.append(f"| {r['clients']} | {r['contender']} | {_fmt(r['throughput_rps'])} | {_fmt(r['p50_ms'])} | "
                         f"{_fmt(r['p99_ms'])} | {_fmt(r['mean_batch'])} | {r['requests'] - r['ok']} | {r['lost']} |")
        gains = batching_gains(results["levels"])
        if gains:
            lines += ["", "Throughput ratios at each level: " + "; ".join(
                f"{g['clients']} clients: batched/batch-1 over HTTP {_fmt(g['http_batching'], 2)}, "
                f"HTTP/in-process (batched) {_fmt(g['http_vs_inprocess'], 2)}" for g in gains) + "."]
    soak = results.get("soak")
    if soak:
        lines += [
            "", f"### Soak: {soak['clients']} clients for {soak['seconds']:.0f} s",
            "", f"Server: `{soak['server_command']}`", "",
            "| requests | 200 | 5xx | lost | other | req/s | p50 ms | p99 ms | mean batch | RSS after warm-up MB | "
            "RSS max 1st half / 2nd half MB | RSS at end MB | peak RSS MB |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
            f"| {soak['requests']} | {soak['ok']} | {soak['server_errors']} | {soak['lost']} | "
            f"{soak['requests'] - soak['ok'] - soak['server_errors'] - soak['lost']} | "
            f"{_fmt(soak['throughput_rps'])} | "
            f"{_fmt(soak['p50_ms'])} | {_fmt(soak['p99_ms'])} | {_fmt(soak['mean_batch'])} | "
            f"{_fmt(soak['rss_mb_after_warmup'])} | {_fmt(soak['rss_mb_max_first_half'])} / "
            f"{_fmt(soak['rss_mb_max_second_half'])} | {_fmt(soak['rss_mb_at_end'])} | {_fmt(soak['peak_rss_mb'])} |",
            "",
            f"Every request sent was answered (sent {soak['requests']}; the server counted "
            f"{soak['server_counted_200']:.0f} answered 200 in that time, the clients {soak['ok']}); "
            f"in flight after: {soak['server_in_flight_after']:.0f}; /healthz after: "
            f"{'ok' if soak['healthy_after'] else 'FAILED'}; server exit code on Ctrl-C: {soak['server_exit_code']}."
            if soak["lost"] == 0 else
            f"LOST {soak['lost']} requests: {soak['errors']}",
        ]
    return "\n".join(lines) + "\n"


def batching_gains(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by = {(r["clients"], r["contender"]): r["throughput_rps"] for r in rows}
    gains = []
    for clients in sorted({r["clients"] for r in rows}):
        http, single, inproc = (by.get((clients, n)) for n in (HTTP_BATCHED, HTTP_SINGLE, INPROC_BATCHED))
        if http and single and inproc:
            gains.append({"clients": clients, "http_batching": http / single, "http_vs_inprocess": http / inproc})
    return gains


def update_readme(text: str, relative: str) -> None:
    from s2i_runtime.fsutil import atomic_write_text

    readme = README.read_text(encoding="utf-8")
    body = "\n".join("#" + line if line.startswith("#") else line for line in text.splitlines())
    block = f"{README_START}\n_From `{relative}`._\n\n{body}\n{README_END}"
    if README_START in readme and README_END in readme:
        head, rest = readme.split(README_START, 1)
        readme = head + block + rest.split(README_END, 1)[1]
    else:
        readme = readme.rstrip("\n") + "\n\n## Serving under load\n\n" + block + "\n"
    atomic_write_text(README, readme)


def main(argv: list[str] | None = None) -> int:
    options = parser()
    if "--quick" in (argv if argv is not None else sys.argv[1:]):  # smaller defaults; explicit options still win
        options.set_defaults(levels="1,8", seconds=3.0, warmup_seconds=1.0, rounds=1, soak_clients=32,
                             soak_seconds=5.0)
    args = options.parse_args(argv)
    levels = [int(v) for v in args.levels.split(",") if v.strip()]
    chosen = [c.strip() for c in args.contenders.split(",") if c.strip()]
    unknown = sorted(set(chosen) - set(CONTENDERS))
    if unknown or any(n < 1 for n in levels) or args.threads < 1 or args.rounds < 1:
        raise SystemExit(f"error: bad arguments (unknown contenders {unknown}, levels {levels}, "
                         f"threads {args.threads})")
    pin_thread_env(args.threads)

    def progress(message: str) -> None:
        print(f"[serve-load] {message}", file=sys.stderr, flush=True)

    from importlib import metadata

    from s2i_runtime.bundle import default_bundle_path

    now = dt.datetime.now()
    results: dict[str, Any] = {
        "date": now.isoformat(timespec="seconds"),
        "machine": machine_info(args.threads),
        "libraries": {name: _version(metadata, name) for name in SERVE_LIBRARIES},
        "bundle": str((args.bundle or default_bundle_path()).resolve()),
        "command": "python -m benchmarks.serve_load " + " ".join(argv if argv is not None else sys.argv[1:]),
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "update_readme", "bundle")},
        "note": args.note,
    }
    results["levels"] = run_levels(args, levels, [CONTENDERS[key] for key in chosen], progress)
    results["soak"] = run_soak(args, progress) if args.soak_clients > 0 and args.soak_seconds > 0 else None
    results["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results["gains"] = batching_gains(results["levels"])

    out_dir = args.out / results_dir_name(when=now)
    out_dir.mkdir(parents=True, exist_ok=True)
    from s2i_runtime.fsutil import atomic_write_text

    text = markdown(results)
    atomic_write_text(out_dir / "serve.json", json.dumps(results, indent=2) + "\n")
    atomic_write_text(out_dir / "serve.md", text)
    print(text)
    if args.update_readme:
        update_readme(text, os.path.relpath(out_dir, README.parent))
    print(f"results: {out_dir}", file=sys.stderr)
    soak = results["soak"]
    return 1 if soak and (soak["server_errors"] or soak["lost"]) else 0


def _version(metadata, name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "absent"


if __name__ == "__main__":
    sys.exit(main())
