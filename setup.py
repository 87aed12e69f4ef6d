"""The one compiled module: format 3's record leaves of a whole batch in one call
(retention/audit/_leaves.c). Everything else is in pyproject.toml. Where it cannot be built,
retention hashes the same leaves in Python (retention/audit/leaves.py), more slowly."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "retention.audit._leaves",
            ["retention/audit/_leaves.c"],
            extra_compile_args=["-O3", "-funroll-loops"],
            optional=True,
        )
    ]
)
