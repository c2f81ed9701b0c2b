"""The committed authz/_proto tree must equal a fresh `make protos` run."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
GENERATOR = REPO_ROOT / "protos" / "generate.py"
PROTO_SRC = REPO_ROOT / "protos" / "authz" / "_proto"
COMMITTED = REPO_ROOT / "authz" / "_proto"
ALLOWED_IMPORTS = ("authz._proto.", "google.protobuf", "grpc", "warnings")


def _tree(root: Path) -> dict[str, bytes]:
    """Relative path -> contents for every file, ignoring bytecode caches."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def _generate(out_dir: Path) -> dict[str, bytes]:
    result = subprocess.run(
        [sys.executable, str(GENERATOR), str(out_dir)],
        # Run from elsewhere to prove the script does not depend on the cwd.
        cwd=out_dir,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return _tree(out_dir / "authz" / "_proto")


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    return _generate(tmp_path_factory.mktemp("gen"))


def test_committed_tree_matches_regeneration(fresh: dict[str, bytes]) -> None:
    committed = _tree(COMMITTED)
    missing = sorted(set(fresh) - set(committed))
    extra = sorted(set(committed) - set(fresh))
    changed = sorted(n for n in set(fresh) & set(committed) if fresh[n] != committed[n])
    hint = "run `make protos` and commit the result"
    assert not missing, f"not committed: {missing}; {hint}"
    assert not extra, f"stale generated files: {extra}; {hint}"
    assert not changed, f"out of date: {changed}; {hint}"


def test_regeneration_is_reproducible(fresh: dict[str, bytes], tmp_path: Path) -> None:
    assert _generate(tmp_path) == fresh


def test_every_proto_has_modules_and_packages(fresh: dict[str, bytes]) -> None:
    protos = sorted(p.relative_to(PROTO_SRC) for p in PROTO_SRC.rglob("*.proto"))
    assert protos, "no proto sources found"
    for proto in protos:
        stem = proto.with_suffix("").as_posix()
        assert f"{stem}_pb2.py" in fresh
        assert f"{stem}_pb2.pyi" in fresh
    dirs = {Path(name).parent for name in fresh}
    for directory in dirs:
        init = (directory / "__init__.py").as_posix()
        assert fresh.get(init) == b"", f"missing empty {init}"
    grpc_modules = sorted(n for n in fresh if n.endswith("_pb2_grpc.py"))
    assert grpc_modules == ["envoy/service/auth/v3/external_auth_pb2_grpc.py"]


def test_generated_imports_stay_inside_our_package(fresh: dict[str, bytes]) -> None:
    """Generated code must import our modules as authz._proto.* and take the
    well-known types from the protobuf runtime, never a top-level `envoy`."""
    pattern = re.compile(rb"^(?:from|import)\s+([\w.]+)", re.MULTILINE)
    for name, content in fresh.items():
        if not name.endswith(".py"):
            continue
        for module in pattern.findall(content):
            assert module.decode().startswith(ALLOWED_IMPORTS), (name, module)


def test_protos_use_no_validation_annotations() -> None:
    for proto in PROTO_SRC.rglob("*.proto"):
        text = proto.read_text(encoding="utf-8")
        for banned in ("validate/", "udpa/", "xds/", "envoy/annotations"):
            assert banned not in text, f"{proto}: imports {banned}"


def test_committed_modules_import() -> None:
    for path in sorted(COMMITTED.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        module = ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts)
        importlib.import_module(module.removesuffix(".__init__"))
