"""The house rules: which way imports may go, and what importing the session core costs.

The contracts live in pyproject.toml ([tool.importlinter]); import-linter checks them on the
real import graph (grimp), every import, direct or through others.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def test_imports_go_the_way_the_contracts_say() -> None:
    proc = subprocess.run(
        [str(LINT), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout and "kept" in proc.stdout


def test_a_wrong_way_import_fails_the_contracts(tmp_path: Path) -> None:
    """The check is live: the base reaching up into voice is caught."""
    for package in ("base", "voice", "media", "workers", "castwork"):
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("web"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    (tmp_path / "base" / "wrong.py").write_text("from voice.runtime import server\n")
    proc = subprocess.run(
        [str(LINT), "--no-cache"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
    )
    assert proc.returncode != 0
    assert "base.wrong -> voice.runtime" in proc.stdout, proc.stdout[-3000:]


def test_importing_the_session_core_loads_no_model_runtime() -> None:
    code = textwrap.dedent(
        """
        import sys
        import voice.core.session, voice.core.protocol, voice.core.turntaking
        heavy = {"onnxruntime", "faster_whisper", "ctranslate2", "llama_cpp", "piper", "torch",
                 "prometheus_client", "pydantic_settings"}
        print(sorted(heavy & set(sys.modules)))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
