"""Build script for the C extension gipc._core (metadata: pyproject.toml).

Set GIPC_STRICT=1 to turn compiler warnings into errors (CI does), and
GIPC_SANITIZE=1 to build with AddressSanitizer and UBSan.
"""
import os

from setuptools import Extension, setup

# csrc/: a .c with its .h per topic (module.c has no header).
_C_MODULES = ["module", "frame", "writer", "reader", "spin", "fork", "pidfd",
              "reap", "sigchld", "typecache", "turn"]

extra_compile_args = ["-Wall", "-Wextra", "-std=c11", "-D_GNU_SOURCE"]
extra_link_args = []
if os.environ.get("GIPC_STRICT"):
    extra_compile_args.append("-Werror")
if os.environ.get("GIPC_SANITIZE"):
    flags = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer",
             "-fno-sanitize-recover=undefined", "-O1", "-g"]
    extra_compile_args += flags
    extra_link_args += flags

setup(
    ext_modules=[
        Extension(
            "gipc._core",
            sources=["csrc/%s.c" % name for name in _C_MODULES],
            depends=["csrc/%s.h" % name for name in _C_MODULES
                     if name != "module"],
            extra_compile_args=extra_compile_args,
            extra_link_args=extra_link_args,
        ),
        Extension(
            "gipc._sync",
            sources=["csrc/sync.c"],
            extra_compile_args=extra_compile_args,
            extra_link_args=extra_link_args,
        ),
    ],
)
