"""`s2i-export fp16`: conversion with float32 I/O and a float32 block list, checked against fp32 on ORT CPU."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
from export_fixtures import make_tiny_run
from typer.testing import CliRunner

from s2i_export.cli import app
from s2i_export.fp16 import (
    FP32_OPS,
    Fp16Check,
    Fp16CheckFailed,
    compare_fp16,
    convert_file,
    export_fp16,
    op_block_list,
)
from s2i_export.onnx_export import export_bundle
from s2i_export.probes import default_real_sources, find_audio
from s2i_export.verify import verify_bundle
from s2i_runtime.bundle import (
    ENCODER_FILE,
    ENCODER_FP16_FILE,
    GENERATOR_FILE,
    GENERATOR_FP16_FILE,
    load_bundle,
    write_manifest,
)


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    run = make_tiny_run(tmp_path_factory.mktemp("run") / "run")
    return export_bundle(run, tmp_path_factory.mktemp("export") / "bundle")


def test_block_list_keeps_unsafe_ops_in_fp32():
    blocked = set(op_block_list())
    for op in ("GRU", "LSTM", "Exp", "Softmax", "BatchNormalization", "ReduceL2", "Cast", "LessOrEqual", "CumSum"):
        assert op in blocked


def test_fp16_added_to_bundle_and_checked(bundle_dir):
    real = find_audio(default_real_sources(), 8)
    section = export_fp16(bundle_dir, real_audio=real)
    check = section["check"]
    assert check["passed"] and check["all_finite"]
    assert check["embedding_cosine_min"] >= 0.999
    assert check["image_mae_max"] <= 1e-2
    assert any("real" in case["inputs"] for case in check["cases"])
    # frame counts up to 3000 never pass through float16 (exact only to 2048): the lengths path stays fp32
    assert check["activation_peak"] < 2048
    bundle = load_bundle(bundle_dir)  # hashes of the new files are in s2i.json
    assert bundle.fp16["files"] == {"encoder": ENCODER_FP16_FILE, "generator": GENERATOR_FP16_FILE}
    assert {ENCODER_FP16_FILE, GENERATOR_FP16_FILE} <= set(bundle.manifest["files"])
    assert not [p.name for p in bundle_dir.iterdir() if p.name.startswith(".")]

    for name in (ENCODER_FP16_FILE, GENERATOR_FP16_FILE):
        model = onnx.load(str(bundle_dir / name))
        io = list(model.graph.input) + list(model.graph.output)
        float_io = [v for v in io if v.type.tensor_type.elem_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)]
        assert all(v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for v in float_io)
        assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)
        # blocked ops still see float32 weights (e.g. the GRU's)
        by_name = {t.name: t for t in model.graph.initializer}
        for node in model.graph.node:
            if node.op_type in ("GRU", "LSTM"):
                assert by_name[node.input[1]].data_type == onnx.TensorProto.FLOAT
    # the generator's weights (convolutions) halve; the encoder is mostly GRU weights, which stay float32
    def weight_bytes(name):
        return sum(t.ByteSize() for t in onnx.load(str(bundle_dir / name)).graph.initializer)

    assert weight_bytes(GENERATOR_FP16_FILE) < 0.6 * weight_bytes(GENERATOR_FILE)


def test_fp16_cli_json(bundle_dir):
    result = CliRunner().invoke(app, ["fp16", str(bundle_dir), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["check"]["passed"] is True
    assert data["check"]["thresholds"] == {"embedding_cosine_min": 0.999, "image_mae_max": 0.01,
                                           "activation_peak": 65504.0}


def test_failed_check_changes_nothing(bundle_dir, tmp_path, monkeypatch):
    before = (bundle_dir / "s2i.json").read_text()

    def failing(*_args, **_kwargs):
        return Fp16Check(embedding_cosine_min=0.5)

    monkeypatch.setattr("s2i_export.fp16.compare_fp16", failing)
    with pytest.raises(Fp16CheckFailed, match="fp16 check failed"):
        export_fp16(bundle_dir)
    assert (bundle_dir / "s2i.json").read_text() == before
    assert not [p.name for p in bundle_dir.iterdir() if p.name.startswith(".")]


def test_float16_overflow_fails_the_check(bundle_dir, tmp_path):
    """A generator whose float16 activations overflow (the image scaled by 1e4, then cubed) fails the check."""
    from onnx import helper

    copy = tmp_path / "bundle"
    shutil.copytree(bundle_dir, copy)
    source = onnx.load(str(copy / GENERATOR_FILE))
    graph = source.graph
    out = graph.output[0].name
    graph.node[-1].output[0] = "pre_image"
    graph.initializer.append(onnx.numpy_helper.from_array(np.array(1e4, np.float32), "big"))
    graph.node.extend([helper.make_node("Mul", ["pre_image", "big"], ["scaled"]),
                       helper.make_node("Mul", ["scaled", "scaled"], ["squared"]),
                       helper.make_node("Mul", ["squared", "scaled"], [out])])
    onnx.save(source, str(copy / GENERATOR_FILE))
    write_manifest(copy, load_bundle(copy, verify_hashes=False).manifest)
    convert_file(copy / GENERATOR_FILE, tmp_path / "gen.fp16.onnx")
    check = compare_fp16(load_bundle(copy), copy / ENCODER_FILE, tmp_path / "gen.fp16.onnx")
    # ONNX Runtime CPU runs these float16 Muls in float32 behind casts, so its output may stay finite;
    # the activation range check sees the overflow regardless.
    assert check.passed is False
    assert check.activation_peak > 65504 and check.activation_peak_tensor.startswith("generator")


@pytest.mark.parametrize("arch", ["cnn-rnn"])
def test_other_encoder_architecture_exports_verifies_and_converts(arch, tmp_path):
    run = make_tiny_run(tmp_path / "run", arch=arch, branches=1)
    bundle = export_bundle(run, tmp_path / "bundle")
    report = verify_bundle(bundle, batch_sizes=(1, 3), frame_lengths=(64, 3000))
    assert report.passed, report.to_dict()
    assert load_bundle(bundle).manifest["model"]["encoder_arch"] == arch
    assert export_fp16(bundle)["check"]["passed"]


def test_fp32_ops_listed_once():
    assert len(FP32_OPS) == len(set(FP32_OPS))


def test_drawn_code_blocks_stay_float32_and_draw_as_in_fp32(tmp_path):
    """The comparisons that draw a code block, and all that feeds only them, stay float32: a draw near an
    interval's edge must not come out differently in the fp16 graph."""
    import onnxruntime as ort
    import torch

    from s2i_export.fp16 import comparison_feeding_nodes
    from s2i_train.models import ExportableGenerator, Generator, GeneratorConfig

    torch.manual_seed(0)
    gen = Generator(GeneratorConfig(embedding_dim=6, z_dim=4, ca_dim=6, ngf=8, init_mult=4, attribute_code=(3, 2),
                                    condition_on_embedding=False, sampled_code_blocks=(1, 0))).eval()
    names = ("embedding", "z", "eps")
    example = (torch.randn(2, 6), torch.randn(2, 4), torch.randn(2, 6))
    torch.onnx.export(ExportableGenerator(gen).eval(), example, str(tmp_path / "g.onnx"), input_names=list(names),
                      output_names=["image"], dynamic_axes={n: {0: "batch"} for n in (*names, "image")},
                      opset_version=17, dynamo=False)
    model = onnx.load(str(tmp_path / "g.onnx"))
    kept = set(comparison_feeding_nodes(model))
    by_name = {node.name: node for node in model.graph.node}
    assert {by_name[n].op_type for n in kept} >= {"CumSum", "Erf", "Concat"}
    # The drawn blocks' read-outs feed only the draw and stay float32 too; the image path converts.
    assert all("readouts" in n for n in kept if by_name[n].op_type == "Gemm")
    assert not any(by_name[n].op_type in ("Conv", "ConvTranspose", "MatMul") for n in kept)
    convert_file(tmp_path / "g.onnx", tmp_path / "g16.onnx")
    feeds = {"embedding": np.random.default_rng(0).standard_normal((512, 6), dtype=np.float32),
             "z": np.random.default_rng(1).standard_normal((512, 4), dtype=np.float32),
             "eps": np.zeros((512, 6), np.float32)}
    # Put z exactly on and around the interval edges of a 50/50 block: 0 is its median.
    feeds["z"][:64, 0] = np.linspace(-1e-3, 1e-3, 64, dtype=np.float32)
    run = {path: ort.InferenceSession(str(tmp_path / path), providers=["CPUExecutionProvider"])
           .run(None, feeds)[0] for path in ("g.onnx", "g16.onnx")}
    per_image = np.abs(run["g.onnx"] - run["g16.onnx"]).mean(axis=(1, 2, 3))
    assert per_image.max() < 1e-2
