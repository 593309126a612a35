"""Tiny end-to-end training: every stage, exact resume, SIGINT, evaluation, and the CLI's error contract."""

import copy
import json
import math
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from train_tiny_data import make_tiny_shapes

from s2i_runtime.errors import InputError
from s2i_train.train.config import builtin_config_path
from s2i_train.train.loop import LoopSettings, run_stage
from s2i_train.train.runner import train_stage
from s2i_train.train.state import load_state

TINY = builtin_config_path("tiny")


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return make_tiny_shapes(tmp_path_factory.mktemp("shapes"))


@pytest.fixture(scope="module")
def base_run(tmp_path_factory, tiny_data):
    """judge, teacher, its checker and encoder trained on the tiny config: what the generator tests start from."""
    run = tmp_path_factory.mktemp("run") / "base"
    for stage in ("judge", "teacher", "checkers", "encoder"):
        result = train_stage(stage, run, data=tiny_data, config_path=TINY if stage == "judge" else None,
                             progress=False)
        assert result.end_step == 3 and not result.interrupted
    return run


def _copy(base, tmp_path, name):
    target = tmp_path / name
    shutil.copytree(base, target)
    return target


@pytest.mark.slow
def test_all_stages_write_modules_state_and_metrics(base_run, tmp_path):
    run = _copy(base_run, tmp_path, "full")
    result = train_stage("generator", run, progress=False)
    assert result.end_step == 3
    for name in ("judge", "teacher", "encoder", "generator"):
        assert (run / f"{name}.safetensors").is_file()
        meta = json.loads((run / f"{name}.json").read_text())
        assert meta["summary"]["step"] == 3
    stages = [json.loads(line)["stage"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert stages.count("generator") == 3 and stages.count("encoder") == 3
    # The tiny config turns on the encoder's attribute heads: logged, trained, but not part of the saved encoder.
    encoder_lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()
                     if json.loads(x)["stage"] == "encoder"]
    assert {"attributes", "acc_colour", "acc_shape", "acc_size"} <= set(encoder_lines[-1])
    assert not any("attribute_heads" in key for key in load_file(str(run / "encoder.safetensors")))
    assert list((run / "samples").glob("step-*.png"))
    # The saved generator is the EMA, not the raw weights, with BatchNorm statistics measured again.
    step, tree = load_state(run, "generator")
    saved = load_file(str(run / "generator.safetensors"))
    ema = tree["stage"]["ema"]["module"]
    statistics = {k for k in saved if k.endswith(("running_mean", "running_var", "num_batches_tracked"))}
    assert statistics and all(torch.equal(saved[k], ema[k]) for k in saved.keys() - statistics)
    assert any(not torch.equal(saved[k], ema[k]) for k in statistics)
    assert any(not torch.equal(saved[k], tree["stage"]["generator"][k]) for k in saved if saved[k].is_floating_point())
    assert json.loads((run / "generator.json").read_text())["summary"]["ema_batchnorm_batches"] == 2


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["encoder", "generator"])
def test_resume_continues_exactly(base_run, tmp_path, stage):
    straight = _copy(base_run, tmp_path, "straight")
    split = _copy(base_run, tmp_path, "split")
    overrides = [f"{stage}.steps=4", "run.checkpoint_every=100"]
    train_stage(stage, straight, overrides=overrides, progress=False)
    first = train_stage(stage, split, overrides=[f"{stage}.steps=2"], progress=False)
    assert first.end_step == 2
    second = train_stage(stage, split, overrides=overrides, resume=True, progress=False)
    assert (second.start_step, second.end_step) == (2, 4)
    a = load_file(str(straight / f"{stage}.safetensors"))
    b = load_file(str(split / f"{stage}.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # Optimiser state too.
    sa, sb = load_state(straight, stage)[1]["stage"], load_state(split, stage)[1]["stage"]
    opt_key = "opt" if stage == "encoder" else "opt_g"
    for pid, values in sa[opt_key]["state"].items():
        for k, v in values.items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(sb[opt_key]["state"][pid][k]))
    lines = [json.loads(x) for x in (split / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if x["stage"] == stage] == [1, 2, 3, 4]


def test_checkers_are_teachers_of_their_own_width_and_seed(base_run, tmp_path):

    meta = json.loads((base_run / "checker-1.json").read_text())
    assert meta["config"]["width"] == 6 and meta["summary"]["step"] == 3
    assert json.loads((base_run / "teacher.json").read_text())["config"]["width"] == 4
    lines = [json.loads(x) for x in (base_run / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if x["stage"] == "checker-1"] == [1, 2, 3]
    # The generator needs every configured checker, and says how to get it.
    run = _copy(base_run, tmp_path, "nochecker")
    (run / "checker-1.json").unlink()
    with pytest.raises(InputError, match="s2i-train checkers"):
        train_stage("generator", run, progress=False)
    # None configured: nothing to train, not an error.
    none = train_stage("checkers", run, overrides=["teacher.checker_widths=[]"], progress=False)
    assert none.end_step == 0 and not (run / "checker-1.json").exists()


def test_teacher_scrambled_images_train_the_colour_free_heads_only(tiny_data, tmp_path):
    from s2i_train.train.runner import resolve_config
    from s2i_train.train.teacher import COLOUR_FREE, TeacherStage

    # Every image colour-scrambled: shape, size and background still learn, colour does not.
    run = tmp_path / "scrambled"
    run.mkdir()
    stage = TeacherStage(resolve_config(run, TINY, ["teacher.scramble_fraction=1.0"], tiny_data), run)
    heads = stage.model.attribute_heads
    before = {name: heads[name].weight.detach().clone() for name in (*COLOUR_FREE, "colour")}
    stage.train_step(0)
    for name in COLOUR_FREE:
        assert not torch.equal(before[name], heads[name].weight), name
    assert torch.equal(before["colour"], heads["colour"].weight)


@pytest.mark.slow
def test_checkers_resume_each_member(base_run, tmp_path):
    straight = _copy(base_run, tmp_path, "straight")
    split = _copy(base_run, tmp_path, "split")
    overrides = ["teacher.checker_widths=[6, 4]", "run.checkpoint_every=100"]
    train_stage("checkers", straight, overrides=overrides, progress=False)
    # Interrupted after the first checker: the second has no state yet and starts on resume.
    train_stage("checkers", split, overrides=["teacher.checker_widths=[6]", "run.checkpoint_every=100"],
                progress=False)
    resumed = train_stage("checkers", split, overrides=overrides, resume=True, progress=False)
    assert (resumed.start_step, resumed.end_step) == (3, 6)  # summed over both checkers; the first was done
    for name in ("checker-1", "checker-2"):
        a, b = load_file(str(straight / f"{name}.safetensors")), load_file(str(split / f"{name}.safetensors"))
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert json.loads((split / "checker-2.json").read_text())["config"]["width"] == 4


class _CountingStage:
    """A stand-in stage: one parameter, SIGINT to itself at a chosen step."""

    name = "counting"

    def __init__(self, interrupt_at=None):
        self.weight = torch.zeros(1)
        self.interrupt_at = interrupt_at
        self.saved = []

    def train_step(self, step):
        self.weight += torch.rand(1)
        if step == self.interrupt_at:
            os.kill(os.getpid(), signal.SIGINT)
        return {"w": float(self.weight)}

    def state(self):
        return {"w": self.weight.clone()}

    def load_state(self, tree):
        self.weight = tree["w"].clone()

    def save_outputs(self, step):
        self.saved.append(step)


def test_sigint_saves_and_stops_then_resume_matches(tmp_path):
    straight = _CountingStage()
    run_stage(straight, tmp_path / "a", LoopSettings(steps=6, progress=False, checkpoint_every=0))
    stage = _CountingStage(interrupt_at=2)
    result = run_stage(stage, tmp_path / "b", LoopSettings(steps=6, progress=False, checkpoint_every=0))
    assert result.interrupted and result.end_step == 3 and stage.saved == [3]
    resumed = _CountingStage()
    again = run_stage(resumed, tmp_path / "b", LoopSettings(steps=6, progress=False, resume=True))
    assert (again.start_step, again.end_step, again.interrupted) == (3, 6, False)
    assert torch.equal(resumed.weight, straight.weight)


@pytest.mark.slow
def test_eval_reports_every_figure(base_run, tiny_data, tmp_path):
    from s2i_train.eval import evaluate
    from s2i_train.silhouette import SilhouetteConfig, train_silhouette_judge

    run = _copy(base_run, tmp_path, "evald")
    train_stage("generator", run, progress=False)
    train_silhouette_judge(run, tiny_data, SilhouetteConfig(steps=3, batch_size=8, width=4), progress=False)
    result = evaluate(None, run)
    assert set(result["judge_real"]) >= {"colour", "shape", "size", "images"}
    assert {"speech_to_image", "speech_to_speech", "image_to_image"} <= set(result["retrieval"])
    assert set(result["retrieval"]["image_to_image_by_attribute"]) == {"colour", "shape", "size"}
    assert result["retrieval"]["teacher"] == "teacher"
    by_attribute = result["retrieval"]["speech_to_speech_by_attribute"]
    assert set(by_attribute) == {"colour", "shape", "size"} and all(0.0 < v <= 1.0 for v in by_attribute.values())
    assert set(result["encoder_probe"]) == {"colour", "shape", "size"}
    assert all(0.0 <= v <= 1.0 for v in result["encoder_probe"].values())
    gen = result["generated"]
    assert gen["images_per_caption"] == 2 and gen["captions"] == 8
    assert set(gen["judge_accuracy"]) == {"colour", "shape", "size", "background"}
    assert set(gen["teacher_accuracy"]) == {"colour", "shape", "size"}
    read_as = gen["judge_shape_read_as"]
    assert read_as and all(sum(row.values()) == pytest.approx(1.0) for row in read_as.values())
    assert all(0.0 <= v <= 1.0 for v in gen["teacher_accuracy"].values())
    for key in ("judge_fid", "judge_is", "diversity"):
        assert key in result
    named = gen["judge_background_where_named"]
    assert named is None or 0.0 <= named <= 1.0
    diversity = result["diversity"]
    assert diversity["real_matching_caption"] > 0 and diversity["ratio_vs_matching_caption"] >= 0
    # The ceiling is the spread of real images matching each caption over that of real images of its class.
    assert diversity["ratio_ceiling_for_faithful_generator"] == pytest.approx(
        diversity["real_matching_caption"] / diversity["real_same_class"])
    assert (run / "eval.json").is_file() and (run / "eval_grid.png").is_file()
    # The table by voice and condition: both held-out voice groups, every condition, both judges and the probe.
    table = result["conditions"]
    assert set(table) == {"espeak", "recorded"}
    for cells in table.values():
        assert set(cells) == {"clean", "noisy_room", "telephone"}
        for cell in cells.values():
            assert cell["captions"] == 8 and cell["images_per_caption"] == 2
            for name in ("colour", "shape", "size", "all_three", "silhouette_shape"):
                assert 0.0 <= cell[name] <= 1.0
            assert set(cell["probe"]) == {"colour", "shape", "size"}
            # Each asked word's row of the probe's confusions sums to one.
            for rows in cell["probe_read_as"].values():
                assert all(sum(row.values()) == pytest.approx(1.0) for row in rows.values())
            assert cell["shape_judges_disagree"] == (abs(cell["shape"] - cell["silhouette_shape"]) > 0.1)
    assert result["test_captions"] == 32  # the headline figures: the held-out espeak-ng voices


def test_shape_confusions_on_a_hand_case():
    from s2i_train.eval_conditions import read_as, top_confusions

    names = ("circle", "square", "hexagon")
    asked = torch.tensor([2, 2, 2, 2, 1, 1, 0])
    read = torch.tensor([0, 0, 2, 1, 1, 1, 0])
    confusions = read_as(asked, read, names)
    assert confusions == {"circle": {"circle": 1.0}, "square": {"square": 1.0},
                          "hexagon": {"circle": 0.5, "square": 0.25, "hexagon": 0.25}}
    assert top_confusions(confusions, 1) == [("hexagon", "circle", 0.5)]
    assert top_confusions(confusions) == [("hexagon", "circle", 0.5), ("hexagon", "square", 0.25)]


@pytest.mark.slow
def test_eval_of_the_exported_bundle_matches_the_run(base_run, tmp_path):
    """The served artefact, read by the run's judge: the bundle's front end, encoder and generator under
    ONNX Runtime draw what the torch modules draw (same z and eps), so the figures agree."""
    from s2i_export.onnx_export import export_bundle
    from s2i_train.eval import evaluate, report_names

    run = _copy(base_run, tmp_path, "served")
    train_stage("generator", run, progress=False)
    bundle = export_bundle(run, tmp_path / "bundle")
    own = evaluate(None, run, progress=False)
    served = evaluate(None, run, progress=False, bundle=bundle)
    assert served["bundle"] == {"path": str(bundle), "precision": "fp32", "backend": "onnxruntime (cpu)"}
    assert served["retrieval"]["objective"] == "bundle" and "speech_to_image" not in served["retrieval"]
    # A tiny encoder's embeddings lie close together: the numpy and torch front ends' last-digit differences can
    # swap two neighbours in a ranking of 8 captions.
    assert served["retrieval"]["speech_to_speech"]["mAP"] == pytest.approx(
        own["retrieval"]["speech_to_speech"]["mAP"], abs=0.05)
    for name, value in own["generated"]["judge_accuracy"].items():
        assert served["generated"]["judge_accuracy"][name] == pytest.approx(value, abs=1 / 16 + 1e-9)
    assert served["judge_fid"] == pytest.approx(own["judge_fid"], rel=1e-2)
    assert served["diversity"]["generated_same_utterance"] == pytest.approx(
        own["diversity"]["generated_same_utterance"], rel=1e-2)
    report, grid = report_names(bundle)
    assert (report, grid) == ("eval-bundle-fp32.json", "eval-bundle-fp32-grid.png")
    assert (run / report).is_file() and (run / grid).is_file()
    assert json.loads((run / "eval.json").read_text())["judge_fid"] == own["judge_fid"]  # the run's own report kept


def test_eval_bundle_errors_are_one_line(base_run, tmp_path):
    no_fp16 = _cli("eval", "--run", str(base_run), "--precision", "fp16")
    assert no_fp16.returncode == 2 and no_fp16.stderr.strip().splitlines()[-1].endswith(
        "--precision applies to --bundle only")
    missing = _cli("eval", "--run", str(base_run), "--bundle", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_text_encoder_trains_and_the_two_stage_eval_runs_end_to_end(base_run, tmp_path):
    pytest.importorskip("pocketsphinx")
    from s2i_train.eval_cascade import REPORT_FILE, evaluate_two_stage, two_stage_lines

    run = _copy(base_run, tmp_path, "cascade")
    train_stage("generator", run, progress=False)
    result = train_stage("text-encoder", run, progress=False)
    assert result.end_step == 3  # the speech encoder's budget
    meta = json.loads((run / "text-encoder.json").read_text())
    speech = json.loads((run / "encoder.json").read_text())
    assert meta["arch"] == "text-gru" and meta["config"]["embedding_dim"] == speech["config"]["embedding_dim"]
    assert meta["summary"]["teacher"] == speech["summary"]["teacher"]
    logged = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert {"jel", "acc_colour"} <= set([x for x in logged if x["stage"] == "text-encoder"][-1])
    report = evaluate_two_stage(None, run, captions_per_group=3, images_per_caption=2)
    assert report["text_encoder"] and report["parsed"]
    for group in ("espeak", "recorded"):
        for condition in ("clean", "noisy_room", "telephone"):
            cell = report["conditions"][group][condition]
            assert cell["captions"] == 3 and {"colour", "shape", "size", "word_error_rate"} <= set(cell["asr"])
            for system in ("direct", "cascade", "parsed"):
                assert 0.0 <= cell[system]["colour"] <= 1.0
    assert json.loads((run / REPORT_FILE).read_text())["captions_per_group"] == 3
    lines = two_stage_lines(report)
    assert any("ASR + text encoder" in line for line in lines) and any("ASR + parse" in line for line in lines)
    # The latency benchmark's four contenders run on the same run and its bundle.
    from benchmarks.cascade import run_cascade_latency
    from s2i_export.onnx_export import export_bundle

    bundle = export_bundle(run, tmp_path / "bundle")
    timed = run_cascade_latency(run, bundle, Path(json.loads((run / REPORT_FILE).read_text())["dataset"]), clips=2,
                                repeats=1, warmup=0)
    assert len(timed["contenders"]) == 4 and all(row["repeats"] == 2 for row in timed["contenders"].values())
    # The optional extra term: the generator's own read-outs must read the text embedding too.
    train_stage("text-encoder", run, overrides=["text_encoder.readout_weight=1.0"], progress=False)
    assert json.loads((run / "text-encoder.json").read_text())["summary"]["readout_weight"] == 1.0
    last = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()][-1]
    assert {"readout", "readout_acc_shape"} <= set(last)


def test_two_stage_errors_are_one_line(base_run, tiny_data, tmp_path):
    with_bundle = _cli("eval", "--run", str(base_run), "--two-stage", "--bundle", str(tmp_path))
    assert with_bundle.returncode == 2 and len(with_bundle.stderr.strip().splitlines()) == 1
    no_encoder = _cli("text-encoder", "--run", str(tmp_path / "r"), "--data", str(tiny_data))
    assert no_encoder.returncode == 2 and "no speech encoder" in no_encoder.stderr
    assert len(no_encoder.stderr.strip().splitlines()) == 1


def test_diversity_factors_reads_real_images_with_each_factor_fixed(base_run, tmp_path):
    from s2i_train.diversity_factors import FACTORS, factor_spread

    result = factor_spread(base_run, images_per_group=3, progress=False)
    spread = result["spread_with_factor_fixed"]
    assert result["groups"] == 32 and set(spread) == {"nothing", "all", *FACTORS}
    assert spread["nothing"] > 0 and all(v >= 0 for v in spread.values())
    # With every factor fixed the three images of a group are one image drawn three times.
    assert spread["all"] == pytest.approx(0.0, abs=1e-6) and result["share_of_spread_left"]["nothing"] == 1.0
    no_judge = _cli("diversity-factors", "--run", str(tmp_path / "empty"), "--json")
    assert no_judge.returncode == 2 and len(no_judge.stderr.strip().splitlines()) == 1


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "s2i_train.cli", *args], capture_output=True, text=True,
                          timeout=120)


def _as_saved_before_the_renames(run: Path) -> None:
    """Rewrite a run as versions before the renames left it: critic-N files and state, old config keys, a
    generator.json that says drawn_blocks."""
    from s2i_train.train.config import RENAMED_FIELDS

    for suffix in (".safetensors", ".json"):
        (run / f"checker-1{suffix}").rename(run / f"critic-1{suffix}")
    (run / "state" / "checker-1").rename(run / "state" / "critic-1")
    text = (run / "config.toml").read_text()
    for names in RENAMED_FIELDS.values():
        for old, new in names.items():
            assert f"\n{new} = " in text
            text = text.replace(f"\n{new} = ", f"\n{old} = ")
    (run / "config.toml").write_text(text)
    meta = json.loads((run / "generator.json").read_text())
    meta["config"]["drawn_blocks"] = meta["config"].pop("sampled_code_blocks")
    (run / "generator.json").write_text(json.dumps(meta))


@pytest.mark.slow
def test_a_run_saved_before_the_renames_evaluates_exports_and_resumes(base_run, tmp_path):
    from s2i_export.onnx_export import export_bundle
    from s2i_train.eval import evaluate
    from s2i_train.train.config import load_run_config

    run = _copy(base_run, tmp_path, "old-names")
    train_stage("generator", run, overrides=["generator.model.sampled_code_blocks=[3]",
                                             "generator.unsaid_attributes_uniform=true"], progress=False)
    _as_saved_before_the_renames(run)
    assert "critic_widths" in (run / "config.toml").read_text() and not (run / "checker-1.json").exists()
    config = load_run_config(run)
    assert config.teacher.checker_widths == (6,) and config.generator.model.sampled_code_blocks == (3,)
    assert config.generator.unsaid_attributes_uniform
    result = evaluate(None, run)
    assert 0.0 <= result["generated"]["judge_accuracy"]["shape"] <= 1.0
    manifest = json.loads((export_bundle(run, tmp_path / "bundle") / "s2i.json").read_text())
    # The bundle records the generator's config as its checkpoint stored it, so re-exporting an old run gives
    # the manifest it gave before.
    assert manifest["model"]["generator_config"] == json.loads((run / "generator.json").read_text())["config"]
    assert manifest["model"]["generator_config"]["drawn_blocks"] == [3]
    # The generator resumes, reading the checker from critic-1; the checker resumes from state/critic-1.
    resumed = train_stage("generator", run, overrides=["generator.steps=4"], resume=True, progress=False)
    assert (resumed.start_step, resumed.end_step) == (3, 4)
    with pytest.raises(InputError, match="resume with teacher.steps=3"):
        train_stage("checkers", run, overrides=["teacher.steps=4"], resume=True, progress=False)
    checker = train_stage("checkers", run, overrides=["teacher.steps=3"], resume=True, progress=False)
    assert (checker.start_step, checker.end_step) == (3, 3)  # found done, saved again under the new name
    assert json.loads((run / "checker-1.json").read_text())["summary"]["step"] == 3
    assert (run / "state" / "checker-1" / "latest.json").is_file()
    # The run's config is saved again under the new names.
    saved = (run / "config.toml").read_text()
    assert "checker_widths" in saved and "critic_widths" not in saved and "drawn_blocks" not in saved
    # An old name on the command line is refused with the new one.
    with pytest.raises(InputError, match="use teacher.checker_widths"):
        train_stage("checkers", run, overrides=["teacher.critic_widths=[6]"], progress=False)


def test_the_old_checkers_command_is_a_hidden_alias():
    listed = _cli("--help")
    assert listed.returncode == 0 and "checkers" in listed.stdout and "critics" not in listed.stdout
    alias = _cli("critics", "--help")
    assert alias.returncode == 0 and "--run" in alias.stdout


def test_cli_errors_are_one_line_and_exit_2(tmp_path, tiny_data):
    no_data = _cli("judge", "--run", str(tmp_path / "r"))
    assert no_data.returncode == 2 and no_data.stderr.strip().startswith("error:")
    assert "Traceback" not in no_data.stderr
    bad_set = _cli("judge", "--run", str(tmp_path / "r"), "--data", str(tiny_data), "--set", "judge.nope=1")
    assert bad_set.returncode == 2 and "unknown field" in bad_set.stderr
    no_resume = _cli("encoder", "--run", str(tmp_path / "r"), "--data", str(tiny_data), "--resume")
    assert no_resume.returncode == 2 and "resume" in no_resume.stderr


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["classifier", "sen"])
def test_other_encoder_objectives_train_and_evaluate(base_run, tmp_path, objective):
    from s2i_train.eval import evaluate

    run = _copy(base_run, tmp_path, objective)
    result = train_stage("encoder", run, overrides=[f"encoder.objective={objective}"], progress=False)
    assert result.end_step == 3 and "loss" in result.last_metrics
    meta = json.loads((run / "encoder.json").read_text())
    assert meta["summary"]["objective"] == objective
    (run / "generator.safetensors").unlink(missing_ok=True)
    report = evaluate(None, run)
    assert report["retrieval"]["objective"] == objective
    assert ("speech_to_image" in report["retrieval"]) == (objective == "sen")
    assert "generated" not in report


def test_encoder_weight_average_is_what_is_saved_and_resumes_exactly(base_run, tmp_path):
    straight = _copy(base_run, tmp_path, "ema_straight")
    split = _copy(base_run, tmp_path, "ema_split")
    overrides = ["encoder.steps=4", "encoder.ema_decay=0.5", "run.checkpoint_every=100"]
    train_stage("encoder", straight, overrides=overrides, progress=False)
    train_stage("encoder", split, overrides=["encoder.steps=2", "encoder.ema_decay=0.5"], progress=False)
    train_stage("encoder", split, overrides=overrides, resume=True, progress=False)
    saved = load_file(str(straight / "encoder.safetensors"))
    assert saved.keys() == load_file(str(split / "encoder.safetensors")).keys()
    for key, value in load_file(str(split / "encoder.safetensors")).items():
        assert torch.equal(saved[key], value), key
    tree = load_state(straight, "encoder")[1]["stage"]
    average, last = tree["ema"]["module"], tree["model"]
    assert tree["ema"]["updates"] == 4
    assert all(torch.equal(saved[key], average[key]) for key in saved)
    assert any(not torch.equal(saved[key], last[f"encoder.{key}"]) for key in saved if saved[key].is_floating_point())
    assert json.loads((straight / "encoder.json").read_text())["summary"]["ema_decay"] == 0.5
    # A run saved without the average cannot be resumed into one that keeps it, nor can the decay be 1.
    plain = _copy(base_run, tmp_path, "ema_plain")
    with pytest.raises(InputError, match="no weight average"):
        train_stage("encoder", plain, overrides=["encoder.steps=4", "encoder.ema_decay=0.5"], resume=True,
                    progress=False)
    with pytest.raises(InputError, match=r"encoder.ema_decay must be in \[0, 1\)"):
        train_stage("encoder", _copy(base_run, tmp_path, "ema_one"), overrides=["encoder.ema_decay=1.0"],
                    progress=False)


def test_augmented_batches_are_the_runtime_features_of_the_augmented_sound(base_run):
    import numpy as np

    from s2i_train.frontend import logmel_torch
    from s2i_train.train.config import load_run_config
    from s2i_train.train.encoder import EncoderStage

    stage = EncoderStage(load_run_config(base_run), base_run)
    first = torch.tensor(stage.sampler.indices(0))
    mel, lengths = stage.augmented_batch(first, 0)
    assert mel.dtype == torch.float32 and lengths.dtype == torch.int64
    assert mel.shape == (len(first), 40, max(int(lengths.max()), 64))
    # The same features the torch front end gives the same augmented sound, within the front end's 1e-3 dB.
    waves = [torch.from_numpy(np.asarray(stage.augmented_wave(caption, 0, row), dtype=np.float32))
             for row, caption in enumerate(first.tolist())]
    padded = torch.nn.utils.rnn.pad_sequence(waves, batch_first=True)
    reference, frames = logmel_torch(padded, torch.tensor([len(w) for w in waves]))
    assert torch.equal(frames, lengths)
    assert float((reference - mel).abs().max()) < 1e-3


def test_teacher_student_towards_the_spoken_mean_trains(base_run, tmp_path):
    run = _copy(base_run, tmp_path, "spoken_mean")
    result = train_stage("encoder", run, overrides=["encoder.teacher_target=spoken_mean"], progress=False)
    assert result.end_step == 3 and math.isfinite(result.last_metrics["jel"])


def _with_shape_open_captions(tiny_data, root: Path, count: int) -> int:
    """A copy of the tiny data with `count` more training captions that leave the shape open; their number."""
    shutil.copytree(tiny_data, root)
    records = [json.loads(line) for line in (root / "captions.jsonl").read_text().splitlines()]
    extra = [{**r, "caption_index": 1, "audio": r["audio"].replace("_0.wav", "_1.wav"), "shape_said": False,
              "text": "something small and red"} for r in records if r["split"] == "train"][:count]
    for r in extra:
        shutil.copy(root / r["audio"].replace("_1.wav", "_0.wav"), root / r["audio"])
    (root / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records + extra))
    return sum(r["split"] == "train" for r in records)


def test_only_the_spoken_mean_target_trains_on_captions_that_leave_the_shape_open(base_run, tiny_data, tmp_path):
    data = tmp_path / "data"
    full = _with_shape_open_captions(tiny_data, data, 10)
    waves = ["encoder.wave_augment.noise_prob=0.5"]
    for target, captions in (("spoken_mean", full + 10), ("image", full)):
        run = _copy(base_run, tmp_path, target)
        result = train_stage("encoder", run, data=data, overrides=[f"encoder.teacher_target={target}", *waves],
                             progress=False)
        assert result.end_step == 3 and math.isfinite(result.last_metrics["jel"])
        summary = json.loads((run / "encoder.json").read_text())
        assert summary["summary"]["captions"] == captions, summary


def test_encoder_teacher_best_picks_by_class_retrieval_on_training_images(base_run, tmp_path):
    from s2i_train.checkpoint import encoder_teacher_name, load_module
    from s2i_train.train.banks import load_image_bank
    from s2i_train.train.config import load_run_config
    from s2i_train.train.encoder import class_retrieval_map, teacher_features

    run = _copy(base_run, tmp_path, "best")
    train_stage("encoder", run, overrides=["encoder.teacher=best"], progress=False)
    summary = json.loads((run / "encoder.json").read_text())["summary"]
    scores = summary["teacher_class_map"]
    assert set(scores) == {"teacher", "checker-1"}
    chosen = summary["teacher"]
    assert chosen == max(scores, key=scores.get) == encoder_teacher_name(run)
    config = load_run_config(run)
    size = config.teacher.image_size
    images = load_image_bank(config.data.root, "train", (size,), run)
    features = teacher_features(load_module(run, chosen), images, size)
    assert scores[chosen] == pytest.approx(class_retrieval_map(features, images.class_ids), abs=1e-4)

    named = _copy(base_run, tmp_path, "checker")
    train_stage("encoder", named, overrides=["encoder.teacher=checker-1"], progress=False)
    assert encoder_teacher_name(named) == "checker-1"
    assert "teacher_class_map" not in json.loads((named / "encoder.json").read_text())["summary"]
    # The generator's speech-image matching reads generated images with the network the encoder was taught by.
    from s2i_train.train.config import load_config
    from s2i_train.train.generator import GeneratorStage

    terms = ["generator.speech_matching_weight=1.0", "generator.relation_weight=1.0"]
    config = load_config(named / "config.toml", terms)
    stage = GeneratorStage(config, named)
    checker = load_file(str(named / "checker-1.safetensors"))
    assert all(torch.equal(checker[k], v) for k, v in stage.speech_space.state_dict().items())
    figures = stage.train_step(0)
    assert math.isfinite(figures["g_matching"]) and math.isfinite(figures["g_relation"])
    with pytest.raises(InputError, match="checker-2"):
        train_stage("encoder", _copy(base_run, tmp_path, "missing"), overrides=["encoder.teacher=checker-2"],
                    progress=False)


def test_whitened_targets_are_saved_and_read_back_as_the_encoders_image_space(base_run, tmp_path):
    from s2i_train.checkpoint import encoder_image_space, load_module
    from s2i_train.models import FeatureWhitening
    from s2i_train.train.banks import load_image_bank
    from s2i_train.train.config import load_config, load_run_config
    from s2i_train.train.encoder import teacher_features
    from s2i_train.train.generator import GeneratorStage

    run = _copy(base_run, tmp_path, "white")
    train_stage("encoder", run, overrides=["encoder.teacher_whiten=class", "encoder.teacher_whiten_shrink=0.5"],
                progress=False)
    assert json.loads((run / "encoder.json").read_text())["summary"]["teacher_whiten"] == "class"
    config = load_run_config(run)
    size = config.teacher.image_size
    images = load_image_bank(config.data.root, "train", (size,), run)
    teacher = load_module(run, "teacher")
    raw = teacher_features(teacher, images, size)
    refit = FeatureWhitening.fit(raw, images.class_ids, 0.5)
    saved = load_module(run, "teacher-whitening")
    assert saved.config.shrink == 0.5
    assert torch.allclose(saved.matrix, refit.matrix) and torch.allclose(saved.mean, refit.mean)
    space = encoder_image_space(run)
    batch = images.images(torch.arange(4), size)
    with torch.no_grad():
        assert torch.allclose(space(batch).features, saved(teacher(batch).features), atol=1e-5)
    # The generator's speech-image matching reads its images in the same whitened space.
    stage = GeneratorStage(load_config(run / "config.toml", ["generator.speech_matching_weight=1.0"]), run)
    assert stage.speech_space.whitening.config.shrink == 0.5
    assert math.isfinite(stage.train_step(0)["g_matching"])
    # An encoder trained again without whitening leaves the stale file unused.
    train_stage("encoder", run, overrides=["encoder.teacher_whiten=none", "encoder.steps=4"], progress=False)
    assert type(encoder_image_space(run)).__name__ == "ShapesTeacher"


def test_unknown_objective_is_an_input_error(base_run, tmp_path):

    run = _copy(base_run, tmp_path, "bad")
    with pytest.raises(InputError, match="objective"):
        train_stage("encoder", run, overrides=["encoder.objective=magic"], progress=False)


def test_judge_resume_with_other_step_count_is_refused(tiny_data, tmp_path):

    run = tmp_path / "judge"
    train_stage("judge", run, data=tiny_data, config_path=TINY, overrides=["judge.steps=2"], progress=False)
    with pytest.raises(InputError, match="one-cycle"):
        train_stage("judge", run, overrides=["judge.steps=4"], resume=True, progress=False)
    resumed = train_stage("judge", run, overrides=["judge.steps=2"], resume=True, progress=False)
    assert (resumed.start_step, resumed.end_step) == (2, 2)


@pytest.mark.slow
def test_generator_mode_seeking_and_extra_samples(base_run, tmp_path):
    run = _copy(base_run, tmp_path, "ms")
    result = train_stage("generator", run, overrides=["generator.mode_seeking_weight=0.5",
                                                      "generator.sample_every=1"], progress=False)
    assert result.last_metrics["mode_seeking"] > 0
    assert len(list((run / "samples").glob("step-*.png"))) == 3


@pytest.mark.slow
def test_papers_terms_train_and_the_relation_supervisor_resumes_exactly(base_run, tmp_path):
    whole, halves = _copy(base_run, tmp_path, "papers"), _copy(base_run, tmp_path, "papers-halves")
    terms = ["generator.class_aware_weight=1.0", "generator.speech_matching_weight=1.0",
             "generator.relation_weight=1.0", "run.checkpoint_every=100"]
    result = train_stage("generator", whole, overrides=[*terms, "generator.steps=4"], progress=False)
    for name in ("g_class_aware", "g_matching", "g_relation", "relation"):
        assert math.isfinite(result.last_metrics[name]) and result.last_metrics[name] >= 0.0, name
    train_stage("generator", halves, overrides=[*terms, "generator.steps=2"], progress=False)
    train_stage("generator", halves, overrides=[*terms, "generator.steps=4"], resume=True, progress=False)
    a, b = load_file(str(whole / "generator.safetensors")), load_file(str(halves / "generator.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    sa, sb = load_state(whole, "generator")[1]["stage"], load_state(halves, "generator")[1]["stage"]
    assert all(torch.equal(v, sb["relation"][k]) for k, v in sa["relation"].items())
    # The relation supervisor reads the teacher's features, so it trains without teacher consistency too.
    alone = train_stage("generator", whole, overrides=["generator.relation_weight=1.0", "generator.steps=1",
                                                       "generator.teacher_consistency=false"], progress=False)
    assert "g_relation" in alone.last_metrics and "g_teacher" not in alone.last_metrics
    # A checkpoint from a run without it cannot continue with it.
    plain = _copy(base_run, tmp_path, "plain")
    train_stage("generator", plain, overrides=["generator.steps=2", "run.checkpoint_every=100"], progress=False)
    refused = _cli("generator", "--run", str(plain), "--resume", "--set", "generator.relation_weight=1.0",
                   "--set", "generator.steps=4")
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        "error: cannot resume with generator.relation_weight > 0: the checkpoint was trained without the relation "
        "supervisor"]


@pytest.mark.slow
def test_saved_generator_measures_its_own_batchnorm_statistics(base_run, tmp_path):
    from s2i_train.train.config import load_run_config
    from s2i_train.train.generator import GeneratorStage

    run = _copy(base_run, tmp_path, "recalibrated")
    config = load_run_config(run)
    config.generator.ema_batchnorm_batches = 1
    stage = GeneratorStage(config, run)
    stage.train_step(0)
    copied = {k: v.clone() for k, v in stage.ema.module.state_dict().items()}
    model = stage.recalibrated_ema()
    assert not model.training
    # With one batch, the first BatchNorm's statistics are those of its input on that batch: the EMA's own
    # activations on the step's captions and novel codes.
    norm_name, norm = next((n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm1d))
    seen = []
    probe = copy.deepcopy(stage.ema.module).train()
    dict(probe.named_modules())[norm_name].register_forward_hook(lambda m, args, out: seen.append(args[0]))
    gen = stage.step_generator(0, stream=5)
    idx = torch.randint(len(stage.captions), (config.generator.batch_size,), generator=gen)
    inputs = stage.generator_inputs(idx, stage.captions.image_index[idx], 0, gen)
    assert len(inputs.z) == 6  # batch 4 and two novel codes
    with torch.no_grad():
        probe(inputs.embedding, inputs.z, inputs.eps, inputs.code)
    torch.testing.assert_close(norm.running_mean, seen[0].mean(0))
    torch.testing.assert_close(norm.running_var, seen[0].var(0, unbiased=True))
    # The EMA keeps what it had, so a resumed run continues exactly.
    assert all(torch.equal(v, copied[k]) for k, v in stage.ema.module.state_dict().items())
    config.generator.ema_batchnorm_batches = 0
    kept = stage.recalibrated_ema().state_dict()
    assert all(torch.equal(v, copied[k]) for k, v in kept.items())


@pytest.mark.slow
def test_novel_codes_are_drawn_per_step_and_need_a_code_only_condition(base_run, tmp_path):
    from s2i_train.train.config import load_run_config
    from s2i_train.train.generator import GeneratorStage

    run = _copy(base_run, tmp_path, "novel")
    stage = GeneratorStage(load_run_config(run), run)  # the tiny config: batch 4, novel_code_fraction 0.5
    first = stage.novel_labels(7)
    assert first.shape == (2, 4) and torch.equal(first, stage.novel_labels(7))
    assert not torch.equal(torch.cat([stage.novel_labels(s) for s in range(8)]), first.repeat(8, 1))
    assert bool((first >= 0).all()) and bool((first[:, 2:] < 2).all())
    figures = stage.train_step(0)
    assert figures["g_teacher"] > 0 and figures["g_d_attr"] > 0
    result = _cli("generator", "--run", str(run), "--set", "generator.model.condition_on_embedding=true")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: generator.novel_code_fraction needs generator.model.attribute_code and "
        "generator.model.condition_on_embedding = false"]


@pytest.mark.slow
def test_background_head_and_drawn_background_train(base_run, tmp_path):
    run = _copy(base_run, tmp_path, "background")
    encoded = train_stage("encoder", run, overrides=["encoder.background_weight=1.0"], progress=False)
    assert 0.0 <= encoded.last_metrics["acc_background"] <= 1.0 and encoded.last_metrics["background"] > 0
    result = train_stage("generator", run, overrides=["generator.unsaid_attributes_uniform=true"], progress=False)
    assert result.end_step == 3 and math.isfinite(result.last_metrics["g_teacher"])
    # The background drawn per image: training feeds the real image's background in the code.
    drawn = train_stage("generator", run, overrides=["generator.model.sampled_code_blocks=[3]", "generator.steps=2"],
                        progress=False)
    assert math.isfinite(drawn.last_metrics["g_teacher"])
    from s2i_train.train.config import load_run_config
    from s2i_train.train.generator import GeneratorStage

    stage = GeneratorStage(load_run_config(run), run)
    rows = torch.arange(6)
    code = stage.caption_code(stage.embeddings[rows], stage.images.attributes[stage.captions.image_index[rows]])
    assert torch.equal(code[3].argmax(1), stage.captions.attributes[rows, 3]) and torch.equal(code[3].sum(1),
                                                                                               torch.ones(6))
    assert torch.allclose(code[0], stage.generator.ca.attribute_code(stage.embeddings[rows])[0])


@pytest.mark.slow
def test_word_term_trains_and_the_saved_encoder_has_no_word_read_out(base_run, tmp_path):
    from s2i_train.checkpoint import ENCODER, load_module

    run = _copy(base_run, tmp_path, "words")
    with pytest.raises(InputError, match="^encoder.word_weight needs encoder steps shorter than a word; cnn-rnn's"):
        train_stage("encoder", run, overrides=["encoder.word_weight=1.0"], progress=False)
    s2igan = ["encoder.model.arch=s2igan", "encoder.model.conv_channels=[8, 16]"]
    encoded = train_stage("encoder", run, overrides=["encoder.word_weight=1.0", *s2igan], progress=False)
    assert math.isfinite(encoded.last_metrics["words"]) and encoded.last_metrics["words"] > 0
    assert not any("word" in name for name in load_file(run / "encoder.safetensors"))
    assert load_module(run, ENCODER).config.arch == "s2igan"


@pytest.mark.slow
def test_cooccurrence_priors_train_the_heads_and_fit_the_readouts(base_run, tiny_data, tmp_path):
    with pytest.raises(InputError, match="needs encoder.attribute_weight > 0"):
        train_stage("encoder", _copy(base_run, tmp_path, "no-heads"), progress=False,
                    overrides=["encoder.attribute_cooccurrence_prior=true", "encoder.attribute_weight=0"])
    run = _copy(base_run, tmp_path, "prior")
    encoded = train_stage("encoder", run, overrides=["encoder.attribute_cooccurrence_prior=true"], progress=False)
    assert math.isfinite(encoded.last_metrics["attributes"])
    drawn = train_stage("generator", run, overrides=["generator.readout_cooccurrence_prior=true"], progress=False)
    assert drawn.end_step == 3 and math.isfinite(drawn.last_metrics["g_teacher"])
    # The eval's probe fitted the same way: another read-out of the same embeddings.
    from s2i_train.checkpoint import ENCODER, load_module
    from s2i_train.eval import _attribute_probe
    from s2i_train.train.config import load_run_config, save_config

    encoder = load_module(run, ENCODER).eval()
    embeddings = torch.randn(5, encoder.config.embedding_dim)
    plain = _attribute_probe(encoder, tiny_data, run)(embeddings)
    config = load_run_config(run)
    config.eval.probe_cooccurrence_prior = True
    save_config(run, config)
    adjusted = _attribute_probe(encoder, tiny_data, run)(embeddings)
    assert torch.equal(plain["size"], adjusted["size"]) and not torch.equal(plain["colour"], adjusted["colour"])


@pytest.mark.slow
def test_split_rows_deal_each_generated_image_to_one_classifier(base_run, tmp_path):
    from s2i_train.losses import teacher_consistency_loss
    from s2i_train.train.config import load_run_config
    from s2i_train.train.generator import GeneratorStage, Reading, _over_classifiers

    run = _copy(base_run, tmp_path, "split-classifiers")
    config = load_run_config(run)
    config.generator.teacher_split_rows = True
    stage = GeneratorStage(config, run)  # the tiny config: the teacher and one checker
    shares = stage.classifier_shares(6, 3)
    assert len(shares) == 2 and [weight for _, weight in shares] == [0.5, 0.5]
    assert sorted(torch.cat([rows for rows, _ in shares]).tolist()) == list(range(6))
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(shares, stage.classifier_shares(6, 3), strict=True))
    deals = {tuple(stage.classifier_shares(6, step)[0][0].tolist()) for step in range(8)}
    assert len(deals) > 1  # dealt anew each step
    with pytest.raises(InputError, match="at least 2 generated images"):
        stage.classifier_shares(1, 0)
    figures = stage.train_step(0)
    assert math.isfinite(figures["g_teacher"])
    config.generator.teacher_split_rows = False
    assert stage.classifier_shares(6, 3) == [(None, None)] * 2

    # Weighted by share, the classifiers' term is the mean over rows of the loss of the classifier that read each row.
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0], [3.0, -1.0]])
    labels = torch.tensor([0, 0, 1, 1])
    per_row = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    dealt = [Reading({"shape": logits[:1]}, torch.tensor([0]), 0.25),
             Reading({"shape": logits[1:]}, torch.tensor([1, 2, 3]), 0.75)]
    term = _over_classifiers(dealt, lambda r: teacher_consistency_loss(r.logits, {"shape": labels[r.rows]}))
    torch.testing.assert_close(term, per_row.mean())
    # Unsplit, every classifier read every row and they are averaged.
    both = [Reading({"shape": logits}, None, None), Reading({"shape": -logits}, None, None)]
    mean = (per_row.mean() + torch.nn.functional.cross_entropy(-logits, labels)) / 2
    torch.testing.assert_close(_over_classifiers(both, lambda r: teacher_consistency_loss(r.logits, {"shape": labels})),
                               mean)


def test_bf16_is_refused_on_a_cpu_without_hardware_bf16(tiny_data, tmp_path, monkeypatch):
    from s2i_train.train import precision

    monkeypatch.setattr(precision, "hardware_bf16", lambda: False)
    with pytest.raises(InputError, match=r'run.precision = "bf16" needs a CPU with AVX512-BF16 or AMX'):
        train_stage("judge", tmp_path / "run", data=tiny_data, config_path=TINY, overrides=['run.precision="bf16"'],
                    progress=False)
    # "auto" there trains in fp32, and the run's config says so.
    result = train_stage("judge", tmp_path / "auto", data=tiny_data, config_path=TINY,
                         overrides=['run.precision="auto"'], progress=False)
    assert result.end_step == 3
    assert 'precision = "fp32"' in (tmp_path / "auto" / "config.toml").read_text()


@pytest.mark.slow
def test_every_stage_trains_in_bf16_and_saves_fp32_weights(tiny_data, tmp_path):
    from s2i_train.train.precision import hardware_bf16

    if hardware_bf16() is False:
        pytest.skip("this CPU has no hardware bf16 (AVX512-BF16 or AMX), where training refuses bf16")
    run = tmp_path / "bf16"
    for stage in ("judge", "teacher", "checkers", "encoder", "generator"):
        result = train_stage(stage, run, data=tiny_data, config_path=TINY if stage == "judge" else None,
                             overrides=['run.precision="bf16"'] if stage == "judge" else None, progress=False)
        assert result.end_step == 3 and not result.interrupted
        assert all(math.isfinite(v) for v in result.last_metrics.values()), (stage, result.last_metrics)
    assert 'precision = "bf16"' in (run / "config.toml").read_text()
    for name in ("judge", "teacher", "checker-1", "encoder", "generator"):
        assert {t.dtype for t in load_file(run / f"{name}.safetensors").values()} <= {torch.float32, torch.int64}


@pytest.mark.slow
def test_precision_benchmark_times_every_stage_on_a_trained_run(base_run, capsys, monkeypatch):
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
        monkeypatch.setenv(name, os.environ.get(name, ""))  # the benchmark pins them in this process
    threads = str(torch.get_num_threads())
    root = str(Path(__file__).resolve().parent.parent)
    if root not in sys.path:  # `benchmarks` is a top-level folder, not an installed package
        sys.path.insert(0, root)
    from benchmarks import train_precision

    assert train_precision.main(["--run", str(base_run), "--steps", "1", "--threads", threads, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["stages"]) == {"judge", "teacher", "encoder", "generator"}
    for figures in report["stages"].values():
        assert figures["fp32_s_per_step"] > 0
        if report["hardware_bf16"] is False:  # bf16 is not timed where training refuses it
            assert figures["bf16_s_per_step"] is None and figures["speedup"] is None
        else:
            assert figures["bf16_s_per_step"] > 0
            assert figures["speedup"] == pytest.approx(figures["fp32_s_per_step"] / figures["bf16_s_per_step"])
    assert train_precision.main(["--run", str(base_run), "--stages", "checkers"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: --stages takes a comma list of judge, teacher, encoder, generator; got 'checkers'")


def test_encoder_features_benchmark_times_both_ways_to_the_features(base_run, capsys, monkeypatch):
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
        monkeypatch.setenv(name, os.environ.get(name, ""))  # the benchmark pins them in this process
    root = str(Path(__file__).resolve().parent.parent)
    if root not in sys.path:
        sys.path.insert(0, root)
    from benchmarks import encoder_features

    threads = str(torch.get_num_threads())
    assert encoder_features.main(["--run", str(base_run), "--rounds", "1", "--steps", "3", "--threads", threads,
                                  "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["seconds_per_step"]) == {"torch, padded batch", "runtime front end, per caption"}
    assert all(0 < t["min"] <= t["median"] <= t["max"] for t in report["seconds_per_step"].values())
    assert encoder_features.main(["--run", str(base_run), "--steps", "2"]) == 2
    assert capsys.readouterr().err.strip() == "error: --steps must be at least 3 and --rounds at least 1"
