"""The optional native kernel (``parity.io.native._jcs``); everything else is in pyproject.toml.

The extension is optional: without a C compiler or Python's headers the build skips it,
the install succeeds, and Parity runs its pure-Python path (:mod:`parity.io.native`).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "parity.io.native._jcs",
            sources=[
                "parity/io/native/_jcs.c",
                "parity/io/native/_canon.c",
                "parity/io/native/_sha256.c",
            ],
            depends=["parity/io/native/_canon.h", "parity/io/native/_sha256.h"],
            libraries=["dl"],
            extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
            optional=True,
        )
    ]
)
