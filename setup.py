"""Build of the optional native part (collector/_wirec.c); everything else is in pyproject.toml.

Optional: where it cannot be compiled, the install goes on and collector/genai.py uses its Python path.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("collector._wirec", ["collector/_wirec.c"], optional=True,
                             extra_compile_args=["-O2"])])
