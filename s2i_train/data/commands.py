"""`s2i-train data ...`: thin typer commands over the data library (registered on cli.data_app)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

SPLIT_CHOICES = ("train", "test", "all")


def _splits(split: str) -> tuple[str, ...]:
    from s2i_runtime.errors import InputError

    if split not in SPLIT_CHOICES:
        raise InputError(f"--split must be one of {', '.join(SPLIT_CHOICES)}")
    return ("train", "test") if split == "all" else (split,)


def shapes(
    out: Path = typer.Option(..., "--out", help="Folder to write the dataset into."),
    images_per_class: int = typer.Option(60, help="Images per (colour, shape) class."),
    captions_per_image: int = typer.Option(2, help="Spoken captions per image."),
    image_size: int = typer.Option(256, help="Image side in pixels (64/128/256 branches can train from 256)."),
    seed: int = typer.Option(0, help="Same seed and options give byte-identical files."),
    recorded_fraction: float = typer.Option(
        0.5, help="Share of training captions spoken by flite/festival voices (the rest by espeak-ng)."),
    shape_open_per_image: int = typer.Option(
        0, help="Extra training captions per image that name colour and size but leave the shape unsaid."),
    workers: int = typer.Option(0, help="Worker processes (0 = one per CPU core, at most 8)."),
    overwrite: bool = typer.Option(False, help="Replace a dataset this command wrote before."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as one JSON object."),
) -> None:
    """Generate Spoken-Shapes: images, spoken captions, split files and a dataset card."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .shapes import ShapesConfig, generate

    config = ShapesConfig(images_per_class, captions_per_image, image_size, seed, recorded_fraction,
                          shape_open_per_image)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, transient=True, disable=as_json) as progress:
        task = progress.add_task("Spoken-Shapes classes", total=64)
        summary = generate(
            out, config, workers=workers or None, overwrite=overwrite, on_class_done=lambda _: progress.advance(task)
        )
    if as_json:
        typer.echo(json.dumps(summary.to_dict()))
        return
    typer.echo(
        f"wrote {summary.root}: {summary.images['train']} train / {summary.images['test']} test images, "
        f"{summary.captions['train']} / {summary.captions['test']} captions, "
        f"{summary.bytes_on_disk / 1e6:.1f} MB in {summary.seconds:.1f} s"
    )


def check(
    root: Path = typer.Argument(..., help="Dataset folder."),
    layout: str = typer.Option("auto", help="auto, shapes, s2igan, li or places."),
    split: str = typer.Option("all", help="train, test or all."),
    skip_bad: bool = typer.Option(False, help="Skip bad items (and count them) instead of failing on the first."),
    verify_audio: bool = typer.Option(True, help="Decode every audio file."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON object."),
) -> None:
    """Check a dataset: every listed image and audio file present and readable, classes consistent."""
    from .published import load_split

    report = {}
    for name in _splits(split):
        loaded = load_split(root, name, layout=layout, skip_bad=skip_bad, verify_audio=verify_audio)
        report[name] = {
            "dataset": loaded.name,
            "items": len(loaded.records),
            "captions": sum(len(r.audio) for r in loaded.records),
            "classes": len({r.class_id for r in loaded.records}),
            "skipped": len(loaded.skipped),
            "first_skipped": loaded.skipped[:5],
        }
    if as_json:
        typer.echo(json.dumps(report))
        return
    for name, r in report.items():
        typer.echo(
            f"{name}: {r['dataset']}, {r['items']} images, {r['captions']} captions, {r['classes']} classes"
            + (f", {r['skipped']} skipped" if r["skipped"] else "")
        )
        for line in r["first_skipped"]:
            typer.echo(f"  skipped {line}")


def features(
    root: Path = typer.Argument(..., help="Dataset folder."),
    layout: str = typer.Option("auto", help="auto, shapes, s2igan, li or places."),
    split: str = typer.Option("all", help="train, test or all."),
    cache_dir: Path = typer.Option(None, help="Feature cache folder (default ROOT/cache)."),
    skip_bad: bool = typer.Option(False, help="Skip bad items instead of failing on the first."),
) -> None:
    """Compute the log-Mel feature cache now, so the first training epoch does not have to."""
    from .features import FeatureCache
    from .published import load_split

    cache = FeatureCache(cache_dir or root / "cache")
    total = 0
    for name in _splits(split):
        loaded = load_split(root, name, layout=layout, skip_bad=skip_bad, verify_audio=False)
        total += cache.fill([p for r in loaded.records for p in r.audio], progress=True)
    typer.echo(f"{total} files cached in {cache.folder}")


def examples(
    out: Path = typer.Option(None, help="Folder (default: the runtime package's examples/)."),
) -> None:
    """Regenerate the example WAVs shipped with the runtime (spoken by held-out test voices)."""
    from .examples import DEFAULT_FOLDER, write_examples

    for path in write_examples(out or DEFAULT_FOLDER):
        typer.echo(f"wrote {path} ({path.stat().st_size} bytes)")


def register_data_commands(data_app: typer.Typer) -> None:
    data_app.command("shapes")(shapes)
    data_app.command("check")(check)
    data_app.command("features")(features)
    data_app.command("examples")(examples)
