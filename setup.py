"""The two compiled modules: format 3's record leaves of a whole batch in one call
(retention/audit/_leaves.c), and a PostgreSQL partition's keys spelled from the server's binary
arrays (retention/stores/_keys.c). Everything else is in pyproject.toml. Where they cannot be
built, retention hashes the same leaves in Python (retention/audit/leaves.py) and has the server
spell the keys as text (retention/stores/partition_keys_postgres.py), more slowly."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "retention.audit._leaves",
            ["retention/audit/_leaves.c"],
            extra_compile_args=["-O3", "-funroll-loops"],
            optional=True,
        ),
        Extension(
            "retention.stores._keys",
            ["retention/stores/_keys.c"],
            extra_compile_args=["-O3"],
            optional=True,
        ),
    ]
)
