"""Build script for the C extension gipc._core (metadata: pyproject.toml).

Set GIPC_STRICT=1 to turn compiler warnings into errors (CI does),
GIPC_SANITIZE=1 to build with AddressSanitizer and UBSan, and
GIPC_PORTABLE=1 to compile only the POSIX.1-2008 code paths, as a build
for macOS does (csrc/platform.h), even on Linux.
"""
import os
import sys

# Refuse an unsupported platform before anything else, setuptools' import
# included (a Python 3.12+ virtual environment has none until asked).
if sys.platform == "win32" or os.name != "posix":
    sys.exit("gipc does not support %s: its core is built on fork() and "
             "POSIX pipes (Linux and macOS only).  On Windows, use "
             "multiprocessing (or gipc under WSL)." % sys.platform)
if sys.implementation.name != "cpython":
    sys.exit("gipc does not support %s: its core is a CPython C extension."
             % sys.implementation.name)

from setuptools import Extension, setup  # noqa: E402

# csrc/: a .c with its .h per topic (module.c has no header).
_C_MODULES = ["module", "frame", "writer", "reader", "spin", "fork", "pidfd",
              "reap", "sigchld", "typecache", "turn", "inherit",
              "fastpath", "gctrack"]

extra_compile_args = ["-Wall", "-Wextra", "-std=c11"]
extra_link_args = []
define_macros = []
if os.environ.get("GIPC_PORTABLE") == "1":
    define_macros.append(("GIPC_PORTABLE", "1"))
    # Declares only what POSIX.1-2008 has (Python.h may add more).
    extra_compile_args.append("-D_POSIX_C_SOURCE=200809L")
elif sys.platform.startswith("linux"):
    extra_compile_args.append("-D_GNU_SOURCE")
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
                     if name != "module"] + ["csrc/platform.h"],
            define_macros=define_macros,
            extra_compile_args=extra_compile_args,
            extra_link_args=extra_link_args,
        ),
        Extension(
            "gipc._sync",
            sources=["csrc/sync.c"],
            depends=["csrc/platform.h"],
            define_macros=define_macros,
            extra_compile_args=extra_compile_args,
            extra_link_args=extra_link_args,
        ),
        Extension(
            "gipc._spawnc",
            sources=["csrc/spawn.c"],
            depends=["csrc/spawn.h"],
            extra_compile_args=extra_compile_args,
            extra_link_args=extra_link_args,
        ),
    ],
)
