from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_clean():
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    if not Path(ruff).exists():
        pytest.skip("ruff is not installed (pip install -e .[test])")
    out = subprocess.run([ruff, "check", "src", "tests", "examples"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_package_is_typed():
    assert (ROOT / "src" / "autoprog" / "py.typed").exists()


def _requirements() -> list[str]:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = [r for group in project["optional-dependencies"].values() for r in group]
    return project["dependencies"] + extras


def test_the_library_declares_ranges_and_install_pins_the_tested_versions():
    """Issue 21: ``pip install autoprog`` must not replace the user's PyTorch; the exact versions the
    tests run on live in scripts/constraints.txt, which scripts/install.sh installs with."""
    from packaging.requirements import Requirement

    from autoprog import __version__  # noqa: F401 (the package imports)

    declared = {Requirement(r).name: Requirement(r) for r in _requirements()}
    for name in ("torch", "torchvision", "timm", "diffusers"):
        spec = declared[name].specifier
        assert not any(s.operator in ("==", "===", "~=") for s in spec), f"{name} is pinned: {spec}"
    pins = {}
    for line in (ROOT / "scripts" / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.strip()] = version.strip()
    assert pins["torch"] == "2.14.1" and pins["torchvision"] == "0.29.1"
    for name, version in pins.items():  # the tested versions lie in the declared ranges
        assert declared[name].specifier.contains(version), (name, version)
    assert "-c scripts/constraints.txt" in (ROOT / "scripts" / "install.sh").read_text()
