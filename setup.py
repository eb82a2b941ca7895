"""Build the optional native kernels (``rnnlimit._native.fused_train``: the trainer's
``fused_train.c``, the limit solver's ``limit_pic.c`` and the sequence kernel's feature scan
``seq_features.c``, plain C loaded by ctypes).

All metadata lives in ``pyproject.toml``. The extension is ``optional``: without a working C
compiler the install still succeeds and :mod:`rnnlimit.native` reports the kernel unavailable,
so :func:`rnnlimit.train.train` keeps to the JAX path.
"""

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

GCC_FLAGS = ["-O3", "-fopenmp-simd", "-fno-math-errno", "-fno-trapping-math", "-pthread"]
LINK_FLAGS = ["-pthread"]  # the kernel's optional 2-thread split of the units


class BuildExt(build_ext):
    """Add the gcc/clang flags (not -ffast-math: NaN/Inf must survive) unless on MSVC."""

    def build_extensions(self) -> None:
        if self.compiler.compiler_type != "msvc":
            for ext in self.extensions:
                ext.extra_compile_args = [*GCC_FLAGS, *ext.extra_compile_args]
                ext.extra_link_args = [*LINK_FLAGS, *ext.extra_link_args]
        super().build_extensions()


setup(
    ext_modules=[
        Extension(
            "rnnlimit._native.fused_train",
            sources=[
                "src/rnnlimit/_native/fused_train.c",
                "src/rnnlimit/_native/limit_pic.c",
                "src/rnnlimit/_native/seq_features.c",
            ],
            depends=[
                "src/rnnlimit/_native/rnnlimit_native.h",
                "src/rnnlimit/_native/fused_math.h",
                "src/rnnlimit/_native/fused_passes.h",
                "src/rnnlimit/_native/pic_rtrl.h",
            ],
            optional=True,
        )
    ],
    cmdclass={"build_ext": BuildExt},
)
