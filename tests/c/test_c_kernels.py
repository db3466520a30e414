"""The C-level kernel tests (tests/c/test_*.c): every kernel on every path
against its naive twin, built with AddressSanitizer and UBSan."""
import os
import shutil
import subprocess

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.mark.skipif(shutil.which(os.environ.get("CC", "gcc")) is None,
                    reason="no C compiler to build the C tests")
def test_c_kernels_under_sanitizers(tmp_path):
    env = dict(os.environ, SANITIZE="1", PT_CTEST_BUILD=str(tmp_path))
    res = subprocess.run(["bash", os.path.join(HERE, "run.sh")], env=env,
                         capture_output=True, text=True, timeout=900)
    print(res.stdout[-5000:])
    assert res.returncode == 0, res.stdout[-5000:] + res.stderr[-5000:]
    assert " 0 failed" in res.stdout and "ERROR: AddressSanitizer" not in res.stderr
