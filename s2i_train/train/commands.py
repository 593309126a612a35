"""Typer layers for `s2i-train judge|teacher|checkers|encoder|generator|eval`, over `runner.train_stage` and
`s2i_train.eval.evaluate`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import typer

from s2i_runtime.cliutil import fail

# `--run-dir` too: under torchrun, `--run` is an ambiguous prefix of torchrun's own --run-path.
RUN_HELP = "Run directory (created if needed; all stages of one model share it). Alias --run-dir."
DataOption = typer.Option(None, "--data", help="Spoken-Shapes directory (default: the run's data.root).")
ConfigOption = typer.Option(
    None, "--config", help="TOML config file, or a built-in name (shapes64, tiny); default: RUN/config.toml."
)
SetOption = typer.Option(None, "--set", help="Override one field, e.g. --set generator.steps=500 (repeatable).")
ResumeOption = typer.Option(False, "--resume", help="Continue exactly from the stage's last checkpoint.")
JsonOption = typer.Option(False, "--json", help="Print one JSON object on stdout.")


def _config_path(config: Optional[str]) -> Optional[Path]:  # noqa: UP045
    if config is None:
        return None
    path = Path(config)
    if path.is_file() or path.suffix == ".toml":
        return path
    from .config import builtin_config_path

    return builtin_config_path(config)


def _train(stage: str, run: Path, data, config, overrides, resume: bool, json_output: bool) -> None:
    from .runner import train_stage

    result = train_stage(stage, run, data=data, config_path=_config_path(config), overrides=list(overrides or []),
                         resume=resume, progress=not json_output)
    figures = {
        "stage": stage,
        "run": str(run),
        "start_step": result.start_step,
        "end_step": result.end_step,
        "interrupted": result.interrupted,
        "seconds": round(result.seconds, 2),
        "seconds_per_step": round(result.seconds_per_step, 4),
        "last": result.last_metrics,
    }
    if int(os.environ.get("RANK", "0")) != 0:
        pass  # under torchrun rank 0 reports for all (the process group is gone by now)
    elif json_output:
        typer.echo(json.dumps(figures, sort_keys=True))
    elif stage == "checkers" and result.end_step == 0:
        typer.echo("checkers: none configured (teacher.checker_widths is empty), nothing to train")
    else:
        typer.echo(f"{stage}: steps {result.start_step}->{result.end_step} in {result.seconds:.1f} s "
                   f"({result.seconds_per_step:.3f} s/step), saved in {run}")
    if result.interrupted:
        raise fail(f"{stage} interrupted at step {result.end_step}; state saved, continue with --resume", 130)


def _stage_command(stage: str):
    def command(
        run: Path = typer.Option(..., "--run", "--run-dir", help=RUN_HELP),
        data: Optional[Path] = DataOption,  # noqa: UP045
        config: Optional[str] = ConfigOption,  # noqa: UP045
        overrides: Optional[list[str]] = SetOption,  # noqa: UP045
        resume: bool = ResumeOption,
        json_output: bool = JsonOption,
    ) -> None:
        _train(stage, run, data, config, overrides, resume, json_output)

    return command


def register_train_commands(app: typer.Typer) -> None:
    for stage, help_text in (
        ("judge", "Train the evaluation judge (colour/shape/size/background classifier) on real images."),
        ("teacher", "Train the image teacher on training-class images (colour-decorrelated heads)."),
        ("checkers", "Train the checkers: extra frozen image classifiers trained like the teacher from other seeds "
         "and widths (teacher.checker_widths), which check the generator's images beside the teacher."),
        ("encoder", "Train the speech encoder (teacher-student, classifier or SEN objective)."),
        ("generator", "Train the StackGAN-v2 generator on the frozen encoder's embeddings."),
        ("text-encoder", "Train the two-stage baseline's text encoder on caption text, into the speech encoder's "
         "space (after `encoder`; same teacher, targets and budget)."),
    ):
        app.command(name=stage, help=help_text)(_stage_command(stage))
    # The checkers' old name, kept so earlier scripts still run; not listed in --help.
    app.command(name="critics", hidden=True, help="Old name of `checkers`.")(_stage_command("checkers"))

    @app.command(name="eval")
    def eval_command(
        run: Path = typer.Option(..., "--run", help="Trained run directory."),
        data: Optional[Path] = DataOption,  # noqa: UP045
        images_per_caption: Optional[int] = typer.Option(None, "--images-per-caption", min=2),  # noqa: UP045
        max_captions: Optional[int] = typer.Option(None, "--max-captions", min=0,  # noqa: UP045
                                                   help="Evaluate at most this many test captions (0 = all)."),
        grid: Optional[Path] = typer.Option(None, "--grid", help="Grid PNG path (default RUN/eval_grid.png)."),  # noqa: UP045
        seed: int = typer.Option(0, "--seed"),
        bundle: Optional[Path] = typer.Option(  # noqa: UP045
            None, "--bundle", help="Evaluate this exported bundle (run by ONNX Runtime on the CPU) with RUN's judge "
            "instead of RUN's generator; writes RUN/eval-bundle-<precision>.json."),
        precision: str = typer.Option("fp32", "--precision", help="Bundle precision: fp32 or fp16 (--bundle only)."),
        two_stage: bool = typer.Option(
            False, "--two-stage", help="Compare the direct model with the two-stage baseline (pocketsphinx, then the "
            "run's text encoder or a rule-based parse, then the same generator) on the table by voice and condition; "
            "--max-captions is then the captions per voice group (default eval.condition_captions). Needs the `asr` "
            "extra; writes RUN/eval-two-stage.json."),
        json_output: bool = JsonOption,
    ) -> None:
        """Evaluate a run on the test split: retrieval, judge accuracies, judge-FID/IS, diversity, grid."""
        from ..eval import evaluate, summary_lines

        if bundle is None and precision != "fp32":
            raise fail("--precision applies to --bundle only")
        if two_stage:
            if bundle is not None or grid is not None:
                raise fail("--two-stage evaluates the run's own modules and draws no grid: drop --bundle and --grid")
            _two_stage(run, data, max_captions, images_per_caption, seed, json_output)
            return
        result = evaluate(data, run, images_per_caption=images_per_caption, max_captions=max_captions,
                          grid_path=grid, seed=seed, progress=not json_output, bundle=bundle, precision=precision)
        if json_output:
            typer.echo(json.dumps(result, sort_keys=True))
        else:
            for line in summary_lines(result):
                typer.echo(line)

    def _two_stage(run, data, max_captions, images_per_caption, seed: int, json_output: bool) -> None:
        from ..eval_cascade import evaluate_two_stage, two_stage_lines

        def progress(text: str) -> None:
            typer.echo(f"two-stage: {text}", err=True)

        result = evaluate_two_stage(data, run, captions_per_group=max_captions, images_per_caption=images_per_caption,
                                    seed=seed, progress=None if json_output else progress)
        if json_output:
            typer.echo(json.dumps(result, sort_keys=True))
        else:
            for line in two_stage_lines(result):
                typer.echo(line)

    @app.command(name="silhouette-judge")
    def silhouette_judge_command(
        run: Path = typer.Option(..., "--run", help="Run directory (its config names the dataset)."),
        data: Optional[Path] = DataOption,  # noqa: UP045
        steps: Optional[int] = typer.Option(  # noqa: UP045
            None, "--steps", min=1, help="Training steps (default: the built-in schedule)."
        ),
        json_output: bool = JsonOption,
    ) -> None:
        """Train the second shape reader: a CNN that sees only the figure's silhouette (real images only)."""
        from ..silhouette import SilhouetteConfig, train_silhouette_judge
        from .config import load_run_config

        root = data if data is not None else Path(load_run_config(run).data.root)
        config = SilhouetteConfig(steps=steps) if steps else SilhouetteConfig()
        summary = train_silhouette_judge(run, root, config, progress=not json_output)
        if json_output:
            typer.echo(json.dumps(summary, sort_keys=True))
        else:
            typer.echo(f"silhouette-judge: real test images shape {summary['real_test']['shape']:.3f}, "
                       f"size {summary['real_test']['size']:.3f} in {summary['seconds']:.1f} s, saved in {run}")

    @app.command(name="diversity-factors")
    def diversity_factors_command(
        run: Path = typer.Option(..., "--run", help="Run directory with a trained judge."),
        images_per_group: int = typer.Option(24, "--images-per-group", min=2,
                                             help="Real images rendered per colour, shape, size and background."),
        seed: int = typer.Option(0, "--seed"),
        json_output: bool = JsonOption,
    ) -> None:
        """How much of real images' judge-feature spread each rendering factor (position, rotation, ...) makes."""
        from ..diversity_factors import factor_spread

        result = factor_spread(run, images_per_group=images_per_group, seed=seed, progress=not json_output)
        if json_output:
            typer.echo(json.dumps(result, sort_keys=True))
            return
        typer.echo(f"judge-feature spread of real images of one colour, shape, size and background "
                   f"({result['groups']} groups x {result['images_per_group']}), by what is held fixed:")
        for name, value in result["spread_with_factor_fixed"].items():
            typer.echo(f"  {name:<14} {value:7.2f}  ({result['share_of_spread_left'][name]:.2f} of free)")
