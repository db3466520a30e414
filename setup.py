"""Build pytransformer's C kernels into one extension, pytransformer._kernels.

Every kernel file under csrc/ is compiled once per instruction-set path --
portable scalar C, AVX2+FMA and AVX-512 -- with ``-DPT_ISA=<n>`` and that
path's ``-m`` flags, so each object exports its own suffixed symbols
(``pt_softmax_avx512``, ...).  The run-time files are compiled once:
csrc/runtime/cpu.c picks one path at run time from the CPU's features,
csrc/runtime/mem.c allocates for all of them.  Nothing is built with
``-march=native``: the wheel runs on any x86-64 machine, and on other machines
only the scalar path is built.
"""
import glob
import os
import platform
import sys
import tempfile

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
X86 = platform.machine().lower() in ("x86_64", "amd64", "i686", "x86")

# PT_ISA values; csrc/runtime/simd.h gives them names.
ISA_PATHS = [("scalar", 0, [])]
if X86:
    ISA_PATHS += [
        ("avx2", 1, ["-mavx2", "-mfma", "-mf16c"]),
        ("avx512", 2, ["-mavx512f", "-mavx512bw", "-mavx512dq", "-mavx512vl",
                       "-mavx2", "-mfma", "-mf16c"]),
    ]

# -Wno-unknown-pragmas: a build without OpenMP ignores the kernels' omp pragmas
CFLAGS = ["-O3", "-std=c11", "-fno-math-errno", "-Wall", "-Wno-unused-function", "-Wno-unknown-pragmas"]


def _csrc(pattern):
    """Files under csrc/ (any depth), relative to this directory, sorted."""
    return sorted(os.path.relpath(p, HERE).replace(os.sep, "/")
                  for p in glob.glob(os.path.join(HERE, "csrc", "**", pattern), recursive=True))


# compiled once, with the extension's own flags: the choice of path, memory
RUNTIME_SOURCES = ["csrc/runtime/cpu.c", "csrc/runtime/mem.c"]
KERNEL_SOURCES = [p for p in _csrc("*.c") if p not in RUNTIME_SOURCES]
ALL_CSRC = _csrc("*.[ch]") + _csrc("*.def")


def _compiler_has_openmp(compiler):
    """Compile and link a tiny OpenMP program; fall back to sequential kernels."""
    if os.environ.get("PYTRANSFORMER_NO_OPENMP"):
        return False
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "omp.c")
        with open(src, "w") as f:
            f.write("#include <omp.h>\nint main(void){return omp_get_max_threads()<1;}\n")
        try:
            objs = compiler.compile([src], output_dir=tmp, extra_postargs=["-fopenmp"])
            compiler.link_executable(objs, os.path.join(tmp, "omp"),
                                     extra_postargs=["-fopenmp"])
        except Exception:
            return False
    return True


class BuildExt(build_ext):
    def build_extension(self, ext):
        omp = ["-fopenmp"] if _compiler_has_openmp(self.compiler) else []
        self.openmp = bool(omp)
        objects = []
        for name, isa, flags in ISA_PATHS:
            objects += self.compiler.compile(
                KERNEL_SOURCES,
                output_dir=os.path.join(self.build_temp, "isa_" + name),
                macros=[("PT_ISA", str(isa))],
                include_dirs=["csrc"],
                extra_postargs=CFLAGS + flags + omp,
            )
        ext.extra_objects = objects
        ext.extra_compile_args = CFLAGS + omp
        ext.extra_link_args = omp
        ext.define_macros = [("PT_HAVE_X86", "1" if X86 else "0"),
                             ("PT_HAVE_OPENMP", "1" if omp else "0"),
                             ("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]
        super().build_extension(ext)


extensions = cythonize(
    [Extension(
        "pytransformer._kernels",
        sources=["pytransformer/_kernels.pyx"] + RUNTIME_SOURCES,
        include_dirs=["csrc", numpy.get_include()],
        depends=ALL_CSRC + ["pytransformer/_kernels.pxd"],
    )],
    compiler_directives={
        "language_level": 3,
        "boundscheck": False,
        "wraparound": False,
        "cdivision": True,
        "initializedcheck": False,
        "embedsignature": True,
    },
)

setup(ext_modules=extensions, cmdclass={"build_ext": BuildExt})
