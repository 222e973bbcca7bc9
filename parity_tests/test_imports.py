import os
import subprocess
import sys

import pytest

PROBE = """
import importlib, pkgutil, sys
import scratch
for info in pkgutil.walk_packages(scratch.__path__, "scratch."):
    importlib.import_module(info.name)
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {"tensorflow", "keras"})
print(",".join(heavy))
"""
# The network description sits below everything: numpy only, and none of the packages
# that import it (parity -> reference -> scratch -> spec).
ABOVE_SPEC = ("tensorflow", "keras", "scratch", "reference", "parity")


@pytest.mark.parametrize("package", ["scratch", "spec"])
def test_importing_every_module_imports_neither_tensorflow_nor_keras(package):
    probe = PROBE.replace("scratch", package)
    if package == "spec":
        probe = probe.replace('{"tensorflow", "keras"}', repr(set(ABOVE_SPEC)))
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""


def test_probe_detects_tensorflow_when_it_is_imported():
    # The probe above must be able to fail: importing keras shows up in its output.
    probe = PROBE.replace("import scratch\n", "import scratch, keras\n")
    result = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert "keras" in result.stdout
