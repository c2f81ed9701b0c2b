"""Regenerate the Python protobuf/gRPC modules under ``authz/_proto``.

Usage (from anywhere)::

    python protos/generate.py            # writes into the repository root
    python protos/generate.py OUT_DIR    # writes into OUT_DIR/authz/_proto

The ``.proto`` sources live in ``protos/authz/_proto/...`` and are compiled
with ``-I protos`` so that generated imports read
``from authz._proto.envoy... import ..._pb2``. The well-known types
(``google/protobuf/*.proto``) come from the include directory bundled with
grpcio-tools; their Python modules come from the protobuf runtime.

The output tree ``OUT_DIR/authz/_proto`` is removed and rebuilt on every run,
so stale modules never survive and reruns are byte-identical.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path

from grpc_tools import protoc

PROTO_ROOT = Path(__file__).resolve().parent
REPO_ROOT = PROTO_ROOT.parent
# Sub-tree (relative to PROTO_ROOT and to the output dir) that we own.
PACKAGE_DIR = Path("authz") / "_proto"

_SERVICE_RE = re.compile(r"^\s*service\s+\w+\s*\{", re.MULTILINE)


def proto_files() -> list[Path]:
    """All .proto sources, relative to PROTO_ROOT, in a stable order."""
    return sorted(
        p.relative_to(PROTO_ROOT) for p in (PROTO_ROOT / PACKAGE_DIR).rglob("*.proto")
    )


def _protoc(args: list[str]) -> None:
    well_known = Path(protoc.__file__).resolve().parent / "_proto"
    argv = ["grpc_tools.protoc", f"-I{PROTO_ROOT}", f"-I{well_known}", *args]
    rc = protoc.main(argv)
    if rc != 0:
        raise SystemExit(f"protoc failed with exit code {rc}: {' '.join(argv)}")


def generate(out_dir: Path) -> list[Path]:
    """Generate the package into ``out_dir``; return the files written."""
    out_dir = out_dir.resolve()
    target = out_dir / PACKAGE_DIR
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)

    sources = proto_files()
    if not sources:
        raise SystemExit(f"no .proto files found under {PROTO_ROOT / PACKAGE_DIR}")
    # Absolute paths; protoc maps them back to "authz/_proto/..." via -I.
    names = [str(PROTO_ROOT / p) for p in sources]

    # Messages (+ type stubs) for every file.
    _protoc([f"--python_out={out_dir}", f"--pyi_out={out_dir}", *names])

    # gRPC stubs only for files that declare a service; the plugin would
    # otherwise emit an empty *_pb2_grpc.py per file.
    with_services = [
        str(PROTO_ROOT / p)
        for p in sources
        if _SERVICE_RE.search((PROTO_ROOT / p).read_text(encoding="utf-8"))
    ]
    if with_services:
        _protoc([f"--grpc_python_out={out_dir}", *with_services])

    # Every directory under authz/_proto must be a regular package.
    for directory in [target, *sorted(d for d in target.rglob("*") if d.is_dir())]:
        (directory / "__init__.py").write_bytes(b"")

    return sorted(p for p in target.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "out_dir",
        nargs="?",
        type=Path,
        default=REPO_ROOT,
        help="directory that receives authz/_proto (default: repository root)",
    )
    args = parser.parse_args(argv)
    written = generate(args.out_dir)
    print(f"generated {len(written)} files under {args.out_dir / PACKAGE_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
