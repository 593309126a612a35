"""s2i.json is not trusted (#34, defect 5): every tampered manifest is one line naming the field, exit 2."""

import json
import shutil
from pathlib import Path

import pytest
from bundle_factory import make_bundle
from fuzz_corpus import FIELD_EDITS, RAW_EDITS, SEALED_EDITS, tampered_manifests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_cli_run import one_error_line, run_cli

from s2i_runtime.bundle import MANIFEST, default_bundle_path, load_bundle, write_manifest
from s2i_runtime.errors import BundleError
from s2i_runtime.manifest_schema import HASH_FIELD, content_sha256

CASE_COUNT = len(FIELD_EDITS) + len(RAW_EDITS) + len(SEALED_EDITS)


@pytest.fixture(scope="module")
def sealed(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("sealed") / "b")


@pytest.fixture(scope="module")
def cases(sealed) -> list[tuple[str, bytes]]:
    return tampered_manifests((sealed / MANIFEST).read_text())


def _copy_with(bundle: Path, where: Path, manifest: bytes) -> Path:
    copy = shutil.copytree(bundle, where)
    (copy / MANIFEST).write_bytes(manifest)
    return copy


def _refusal(bundle: Path) -> str:
    with pytest.raises(BundleError) as info:
        load_bundle(bundle)
    message = str(info.value)
    assert "\n" not in message and len(message) < 400, message
    return message


@pytest.mark.parametrize("index", range(CASE_COUNT))
def test_every_tampered_manifest_is_one_line_and_exit_2(index, sealed, cases, tmp_path, capsys):
    name, raw = cases[index]
    bundle = _copy_with(sealed, tmp_path / "b", raw)
    message = _refusal(bundle)
    if name.startswith("sealed:"):
        assert HASH_FIELD in message
    elif not name.startswith("raw:"):
        field = name.split("=", 1)[0]
        assert field in message, (name, message)
    for args in (["info", "--bundle", bundle], ["infer", "x.wav", "--bundle", bundle, "--out", tmp_path / "o"]):
        done = run_cli(capsys, *args)
        assert done.returncode == 2, (name, done.stderr)
        assert one_error_line(done)


def test_the_seal_is_optional_but_checked_when_present(sealed, tmp_path):
    manifest = json.loads((sealed / MANIFEST).read_text())
    assert manifest[HASH_FIELD] == content_sha256(manifest)
    unsealed = {k: v for k, v in manifest.items() if k != HASH_FIELD}
    unsealed["frontend"]["top_db"] = 70.0  # an older bundle, or a deliberate edit that drops the seal
    bundle = _copy_with(sealed, tmp_path / "old", json.dumps(unsealed).encode())
    assert load_bundle(bundle).frontend.top_db == 70.0
    # rewriting through write_manifest seals it again
    write_manifest(bundle, load_bundle(bundle).manifest)
    assert load_bundle(bundle).manifest[HASH_FIELD] == content_sha256(load_bundle(bundle).manifest)


def test_writer_refuses_what_the_reader_would(tmp_path):
    bundle = make_bundle(tmp_path / "b")
    manifest = load_bundle(bundle).manifest
    manifest["frontend"]["n_fft"] = 10**9
    with pytest.raises(BundleError, match="frontend.n_fft"):
        write_manifest(bundle, manifest)
    assert load_bundle(bundle).frontend.n_fft == 400  # the old manifest is untouched


def test_shipped_bundle_is_sealed_and_loads():
    bundle = load_bundle(default_bundle_path())
    assert bundle.manifest[HASH_FIELD] == content_sha256(bundle.manifest)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**30), 10**30) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@pytest.fixture(scope="module")
def scratch(sealed, tmp_path_factory) -> Path:
    """One copy of the bundle whose s2i.json each example rewrites."""
    return shutil.copytree(sealed, tmp_path_factory.mktemp("scratch") / "b")


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_field_set_to_any_json_loads_or_is_one_line(data, sealed, scratch):
    manifest = json.loads((sealed / MANIFEST).read_text())
    section = data.draw(st.sampled_from(["frontend", "model", "files", "dataset", "top"]))
    node = manifest if section == "top" else manifest[section]
    key = data.draw(st.sampled_from(sorted(node)) | st.text(max_size=6))
    node[key] = data.draw(JSON)
    if data.draw(st.booleans()):
        manifest.pop(HASH_FIELD)
    (scratch / MANIFEST).write_text(json.dumps(manifest))
    try:
        load_bundle(scratch)
    except BundleError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 400


def test_a_field_named_with_control_characters_is_named_on_one_line(sealed, tmp_path):
    bundle = shutil.copytree(sealed, tmp_path / "b")
    manifest = json.loads((bundle / MANIFEST).read_text())
    manifest["frontend"]["\n"] = None
    manifest.pop(HASH_FIELD)
    (bundle / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError) as caught:
        load_bundle(bundle)
    assert "\n" not in str(caught.value) and "frontend.\\n is not a front-end field" in str(caught.value)
