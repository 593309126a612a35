"""Results -> the files a person reads: results.json, results.md (tables) and e2e.png (latency vs batch)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from s2i_runtime.fsutil import atomic_path, atomic_write_text

from .common import spread
from .end_to_end import EAGER
from .frontend import BATCH, ONE_CLIP, ONE_CLIP_ALL

JSON_NAME, MARKDOWN_NAME, PLOT_NAME = "results.json", "results.md", "e2e.png"

# The targets: (label, where the figure and its spread live, comparison, threshold). A figure is the
# ratio of medians; its spread is min / median / max of the per-round ratios of the interleaved run.
TARGETS = (
    ("front end, one 10 s clip at a time, 1 thread: >= 2x librosa", ("frontend", ONE_CLIP), ">=", 2.0),
    ("front end, one 10 s clip at a time, all cores: >= 2x librosa", ("frontend", ONE_CLIP_ALL), ">=", 2.0),
    ("front end, batched: >= 3x librosa", ("frontend", BATCH), ">=", 3.0),
    ("end to end, batch 1: runtime >= 2x PyTorch eager (latency)", ("e2e", "1", "eager"), ">=", 2.0),
    ("end to end, batch 32: throughput >= 1.5x eager", ("e2e", "32", "eager"), ">=", 1.5),
    ("end to end, batch 32: throughput >= 1.2x torch.compile", ("e2e", "32", "compile"), ">=", 1.2),
    ("end to end, batch 32, INT8 generator: throughput >= 1.2x torch.compile", ("e2e", "32", "int8"), ">=", 1.2),
    ("cold start wall <= 0.25x the torch script", ("cold", "wall"), "<=", 0.25),
    ("cold start peak RSS <= 0.3x the torch script", ("cold", "rss"), "<=", 0.3),
    ("cold start wall <= 0.25x `import torch`", ("cold", "wall", "import_torch"), "<=", 0.25),
    ("cold start peak RSS <= 0.3x `import torch`", ("cold", "rss", "import_torch"), "<=", 0.3),
)


def _figure(results: dict[str, Any], where: tuple[str, ...]) -> tuple[float | None, dict[str, float] | None]:
    """(ratio of medians, spread of per-round ratios) for one target; (None, None) when not measured."""
    section, *rest = where
    if section == "frontend":
        frontend = results.get("frontend") or {}
        return (frontend.get("speedup_vs_librosa", {}).get(rest[0]),
                frontend.get("vs_librosa_spread", {}).get(rest[0]))
    if section == "e2e":
        entry = results.get("end_to_end_ratios", {}).get(rest[0], {})
        if rest[1] == "int8":
            return entry.get("int8_vs_compile_throughput"), entry.get("int8_vs_compile_spread")
        value = entry.get("runtime_vs_eager_latency" if rest[1] == "eager" else "runtime_vs_compile_throughput")
        return value, entry.get(f"runtime_vs_{rest[1]}_spread")
    ratios = (results.get("cold_start") or {}).get("ratios", {})
    if rest[1:] == ["import_torch"]:
        return ratios.get(f"{rest[0]}_runtime_over_import_torch"), ratios.get(f"{rest[0]}_import_torch_spread")
    return ratios.get(f"{rest[0]}_runtime_over_baseline"), ratios.get(f"{rest[0]}_spread")


def target_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target with its measured ratio, the spread over rounds, and whether it was met (None when not
    measured); met is judged on the ratio of medians."""
    rows = []
    for label, where, op, threshold in TARGETS:
        value, spread = _figure(results, where)
        met = None if value is None else (value >= threshold if op == ">=" else value <= threshold)
        rows.append({"target": label, "measured": value, "spread": spread, "threshold": threshold, "op": op,
                     "met": met})
    return rows


def write_results(results: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """results.json, results.md and (when matplotlib imports and there is an end-to-end section) e2e.png."""
    out_dir.mkdir(parents=True, exist_ok=True)
    results = {**results, "targets": target_rows(results)}
    written = {"json": out_dir / JSON_NAME, "markdown": out_dir / MARKDOWN_NAME}
    atomic_write_text(written["json"], json.dumps(results, indent=2, sort_keys=False) + "\n")
    if results.get("end_to_end"):
        plot = plot_latency(results["end_to_end"], out_dir / PLOT_NAME)
        if plot is not None:
            written["plot"] = plot
    atomic_write_text(written["markdown"], markdown(results, plot_name=PLOT_NAME if "plot" in written else None))
    return written


def plot_latency(e2e: dict[str, Any], path: Path) -> Path | None:
    """p50 latency and throughput against batch size, one line per contender (log-log)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    batches = sorted(int(b) for b in e2e["batches"])
    names: list[str] = []
    for block in e2e["batches"].values():
        names += [n for n in block["contenders"] if n not in names]
    figure, (latency_ax, throughput_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name in names:
        xs = [b for b in batches if name in e2e["batches"][str(b)]["contenders"]]
        rows = [e2e["batches"][str(b)]["contenders"][name] for b in xs]
        latency_ax.errorbar(xs, [r["p50_ms"] for r in rows],
                            yerr=[[0] * len(rows), [r["p95_ms"] - r["p50_ms"] for r in rows]],
                            marker="o", capsize=3, label=name)
        throughput_ax.plot(xs, [r["images_per_s"] for r in rows], marker="o", label=name)
    for axis, title, unit in ((latency_ax, "latency per batch call (p50, bar to p95)", "ms"),
                              (throughput_ax, "throughput", "images / s")):
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xticks(batches, [str(b) for b in batches])
        axis.set_xlabel("batch size (WAV files per call)")
        axis.set_ylabel(unit)
        axis.set_title(title)
        axis.grid(True, which="both", alpha=0.3)
    latency_ax.legend(fontsize=8)
    threads = e2e.get("threads")
    figure.suptitle(f"s2i end to end, CPU, {threads} threads, {e2e.get('clip_seconds')} s clips")
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=110, format="png")
    plt.close(figure)
    return path


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _spread_text(spread: dict[str, float] | None) -> str:
    return "n/a" if not spread else " / ".join(f"{spread[k]:.2f}" for k in ("min", "median", "max"))


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return lines


def markdown(results: dict[str, Any], plot_name: str | None = None) -> str:
    m = results.get("machine", {})
    lines = [f"# s2i benchmarks — {results.get('date', '')} on {m.get('host', '?')}", ""]
    lines += [
        f"- CPU: {m.get('cpu')}; logical cores {m.get('logical_cores')}, usable {m.get('usable_cores')}; "
        f"load average at start {m.get('load_average_1_5_15')}",
        f"- threads: {m.get('threads')} for ONNX Runtime (intra-op), torch (intra-op; inter-op 1) and BLAS "
        f"({', '.join(f'{k}={v}' for k, v in m.get('thread_env', {}).items())})",
        f"- libraries: {', '.join(f'{k} {v}' for k, v in m.get('libraries', {}).items())}; Python {m.get('python')}",
        f"- model: {results.get('model', {}).get('description', '?')}",
        "- method: warm-up first, contenders alternate (A B A B ...), medians over repeats",
    ]
    if results.get("note"):
        lines.append(f"- note: {results['note']}")
    lines.append("")

    lines += ["## Targets", ""]
    lines += _table(["target", "measured (ratio of medians)", "per-round min / median / max", "met"],
                    [[t["target"], t["measured"], _spread_text(t.get("spread")),
                      {True: "yes", False: "NO", None: "not measured"}[t["met"]]]
                     for t in results.get("targets", target_rows(results))])
    lines.append("")

    frontend = results.get("frontend")
    if frontend:
        lines += [f"## Front end: {frontend['clips']} clips x {frontend['seconds_per_clip']:g} s "
                  f"(median of {frontend['repeats']})", ""]
        implementation = frontend.get("runtime_frontend")
        if implementation:
            lines += [f"Runtime front end: {implementation['implementation']}"
                      + (f" ({implementation['reason']})" if implementation.get("reason") else "") + ".", ""]
        spreads = frontend.get("ms_per_clip_spread", {})
        lines += _table(["contender", "ms / clip (median)", "min / median / max", "vs librosa",
                         "vs torch (training)"],
                        [[name, ms, _spread_text(spreads.get(name)), frontend["speedup_vs_librosa"].get(name),
                          frontend["speedup_vs_torch"].get(name)]
                         for name, ms in frontend["ms_per_clip"].items()])
        lines.append("")

    e2e = results.get("end_to_end")
    if e2e:
        lines += [f"## End to end, warm: WAV -> PNG-ready images ({e2e['clip_seconds']:g} s clips, "
                  f"{e2e['repeats']} repeats, {e2e['threads']} threads)", ""]
        rows = []
        for batch, block in sorted(e2e["batches"].items(), key=lambda kv: int(kv[0])):
            eager = block["contenders"].get(EAGER)
            for name, r in block["contenders"].items():
                speedup = eager["p50_ms"] / r["p50_ms"] if eager else None
                rows.append([batch, name, r["min_ms"], r["p50_ms"], r["max_ms"] if "max_ms" in r else None,
                             r["images_per_s"], speedup])
        lines += _table(["batch", "contender", "min ms", "p50 ms", "max ms", "images/s (p50)", "speed-up vs eager"],
                        rows)
        lines.append("")
        checks = ", ".join(f"batch {b}: {blk['max_pixel_diff_runtime_vs_eager']}"
                           for b, blk in e2e["batches"].items())
        lines.append(f"Same work check — largest pixel difference runtime vs eager (8-bit levels): {checks}.")
        compiled = ", ".join(f"batch {b}: {blk['max_pixel_diff_compile_vs_eager']}"
                             for b, blk in e2e["batches"].items() if "max_pixel_diff_compile_vs_eager" in blk)
        if compiled:
            lines.append(f"torch.compile vs eager: {compiled}.")
        if e2e.get("compile_seconds"):
            lines.append("torch.compile compilation time per batch shape (s, excluded above): "
                         + ", ".join(f"{b}: {s}" for b, s in e2e["compile_seconds"].items()) + ".")
        if plot_name:
            lines += ["", f"![latency and throughput vs batch size]({plot_name})"]
        lines.append("")

    in_graph = results.get("frontend_in_graph")
    if in_graph:
        from .frontend_in_graph import markdown_lines

        lines += markdown_lines(in_graph)

    int8 = results.get("int8")
    if int8:
        lines += ["## INT8 generator (static QDQ quantisation)", "", f"- status: {int8.get('status')}"]
        for key in ("fp32_judge_accuracy", "int8_judge_accuracy", "image_mae_max", "calibration", "reason"):
            if key in int8:
                lines.append(f"- {key.replace('_', ' ')}: {_fmt(int8[key], 4)}")
        lines.append("")

    cold = results.get("cold_start")
    if cold:
        lines += [f"## Cold start: one WAV -> one PNG in a new process (median of {cold['repeats']})", ""]
        walls = cold.get("walls_s", {})
        lines += _table(["contender", "wall s (p50)", "wall s min / median / max", "peak RSS MB (p50)"],
                        [[n, r["wall_p50_s"], _spread_text(spread(walls[n])) if n in walls else "n/a",
                          r["peak_rss_p50_mb"]]
                         for n, r in cold["contenders"].items()])
        ratios = cold["ratios"]
        lines += ["", f"runtime / baseline script: wall {_fmt(ratios['wall_runtime_over_baseline'])}, "
                      f"peak RSS {_fmt(ratios['rss_runtime_over_baseline'])}; runtime / `import torch`: wall "
                      f"{_fmt(ratios.get('wall_runtime_over_import_torch'))}, "
                      f"peak RSS {_fmt(ratios.get('rss_runtime_over_import_torch'))}.", ""]
        lines += ["Commands:", ""] + [f"- `{r['command']}`" for r in cold["contenders"].values()] + [""]

    gpu = results.get("gpu")
    if gpu is not None:
        lines += ["## GPU", ""]
        if isinstance(gpu.get("skipped"), str):
            lines += [f"Skipped: {gpu['skipped']}.", ""]
        else:
            lines += [f"Device: {gpu.get('device')}", ""]
            rows = [[b, n, r["p50_ms"], r["p95_ms"], r["images_per_s"]]
                    for b, blk in sorted(gpu["batches"].items(), key=lambda kv: int(kv[0]))
                    for n, r in blk["contenders"].items()]
            lines += _table(["batch", "contender", "p50 ms", "p95 ms", "images/s"], rows) + [""]
            fe = gpu.get("frontend")
            if fe:
                lines += _table(["front end on GPU", "ms / clip"], [[n, v] for n, v in fe["ms_per_clip"].items()])
                lines.append("")
            lines += _gpu_check_lines(gpu.get("checks"))
            for name, why in gpu.get("skipped", {}).items():
                lines.append(f"- {name}: skipped ({why})")
            lines.append("")
    skipped = results.get("skipped_sections", {})
    if skipped:
        lines += ["## Not run", ""] + [f"- {k}: {v}" for k, v in skipped.items()] + [""]
    return "\n".join(lines)


def _gpu_check_lines(checks: dict | None) -> list[str]:
    """The GPU correctness checks (benchmarks/gpu_checks.py), one line each."""
    if not checks:
        return []
    parity, exact, memory = checks["parity"], checks["exact_clip"], checks["memory"]
    mark = {True: "pass", False: "FAIL"}
    return [
        f"- fp32 engines, TF32 {'on' if parity['tf32'] else 'off'}, against ONNX Runtime: embeddings "
        f"{parity['embedding_max_abs_diff']:.1e}, images {parity['image_max_abs_diff']:.1e} "
        f"(<= {parity['atol']:g}): {mark[parity['ok']]}",
        f"- clips up to exactly --max-seconds ({max(exact['frames'])} frames, engine profile "
        f"{exact['engine_frame_range'][1]}): {mark[exact['ok']]}",
        f"- {memory['calls']} calls from {memory['threads']} threads: free device memory "
        f"{memory['drift_bytes'] / 2**20:+.1f} MiB less after (<= {memory['slack_bytes'] / 2**20:.0f}): "
        f"{mark[memory['ok']]}",
        "",
    ]
