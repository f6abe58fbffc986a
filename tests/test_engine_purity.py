"""The mlcore engine runs on a GPU box that has no Django: importing every one of its
modules, in a process without Django settings, must not load Django (import-linter checks
the direct imports; this catches what arrives indirectly)."""

from __future__ import annotations

import os
import subprocess
import sys
import unittest
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def engine_modules() -> list[str]:
    engine = REPO_ROOT / "mlcore" / "engine"
    return sorted(f"mlcore.engine.{path.stem}" for path in engine.glob("*.py") if path.stem != "__main__")


class EnginePurityTests(unittest.TestCase):
    def test_the_engine_has_the_modules_this_test_expects_to_check(self):
        self.assertTrue(
            {
                "mlcore.engine.__init__",
                "mlcore.engine.rules",
                "mlcore.engine.clustering",
                "mlcore.engine.metrics",
                "mlcore.engine.propensity",
                "mlcore.engine.baselines",
                "mlcore.engine.uplift",
                "mlcore.engine.train",
            }
            <= set(engine_modules())
        )

    def test_every_engine_module_imports_without_django(self):
        modules = [name.removesuffix(".__init__") for name in engine_modules()]
        code = (
            f"import importlib, sys\nfor name in {modules!r}:\n    importlib.import_module(name)\n"
            "loaded = sorted(m for m in sys.modules if m == 'django' or m.startswith('django.'))\n"
            "assert not loaded, loaded"
        )
        result = subprocess.run(
            [sys.executable, "-c", code],
            cwd=REPO_ROOT,
            env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO_ROOT)},
            capture_output=True,
            text=True,
            timeout=120,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
