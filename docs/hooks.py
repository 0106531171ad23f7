"""MkDocs hook (mkdocs.yml `hooks:`): adds the generated reference pages to every build, so `mkdocs build` and
`mkdocs serve` alone produce them from the code; nothing generated is written into docs/."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from mkdocs.structure.files import File


def _generator():
    spec = importlib.util.spec_from_file_location("gen_reference", Path(__file__).with_name("gen_reference.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def on_files(files, config):
    gen = _generator()
    for src_uri, render in gen.PAGES.items():
        files.append(File.generated(config, src_uri, content=render()))
    return files
