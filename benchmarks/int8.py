"""INT8 variant of the generator in the benchmarks: `s2i-export int8` on a copy of the bundle, kept only if the judge
agrees.

The quantisation, its calibration and its check are s2i_export.int8's (`s2i-export int8 --run RUN --data DATA`):
static QDQ, calibrated on speech embeddings of the even-numbered picked test captions, checked on the
odd-numbered ones. The benchmark counts the variant as a contender only when the judge check ran and passed
(colour, shape and size each at most 1 point below fp32 with the same embeddings and noise). Without a trained
judge, or without the dataset, the variant is reported "not evaluated" and left out of the tables.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from s2i_export.int8 import NO_JUDGE, Int8CheckFailed, dataset_root, export_int8
from s2i_runtime.errors import InputError


def _link_or_copy(source: str, target: str) -> None:
    """Hard links: export_int8 only adds files and replaces s2i.json by renaming, so the original stays as it was."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def prepare_int8(run_dir: Path | str, bundle: Path | str, work_dir: Path, *, data: Path | None = None,
                 threads: int = 2, max_captions: int = 512) -> dict[str, Any]:
    """Quantise and check a copy of the bundle; {"status", "accepted", "bundle"? (the copy, with its INT8
    generator: timed when it passed its checks), accuracies ...}. "accepted" only when the judge ran and agreed;
    without a judge the copy passes the image check alone and is timed for speed only."""
    from s2i_train.checkpoint import JUDGE, has_module

    run_dir = Path(run_dir)
    root, why_not = None, NO_JUDGE
    if has_module(run_dir, JUDGE):
        try:
            root, why_not = dataset_root(run_dir, data)
        except InputError as exc:
            why_not = str(exc)
    copy = Path(work_dir) / "bundle"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(bundle, copy, copy_function=_link_or_copy)
    try:
        if root is None:  # timed for speed (which the weights do not change), judged elsewhere or not at all
            section = export_int8(copy, threads=threads)
        else:
            section = export_int8(copy, run_dir=run_dir, data=root, threads=threads, max_captions=max_captions)
    except Int8CheckFailed as exc:
        check = exc.check.to_dict()
        result = {"status": f"rejected ({exc})", "accepted": False}
    else:
        check = section["check"]
        result = {"bundle": str(copy), "calibration": section["calibration"]}
        if root is None:
            result.update(status=f"speed only: image check passed, judge not run ({why_not})", accepted=False,
                          reason=why_not)
        else:
            result.update(status="accepted (within 1 point of fp32)", accepted=True)
    judge = check["judge"] or {}
    return {**result, "fp32_judge_accuracy": judge.get("fp32"), "int8_judge_accuracy": judge.get("int8"),
            "image_mae_max": check["image_mae_max"]}
