"""Locate and import a user's own CNN code (``parity check PATH``), numpy only.

A :class:`UserCode` is a picklable description (a path and an API): the dtype processes
load the classes themselves from it (classes imported from a path cannot be pickled by
name). Nothing here runs the user's methods; only importing runs their module code.

The ``blog`` API (Victor Zhou's "CNNs, Part 2"): a folder laid out like the blog's
repository, ``conv.py`` with ``Conv3x3``, ``maxpool.py`` with ``MaxPool2``, ``softmax.py``
with ``Softmax``, or one ``.py`` file defining all three. Only those files are imported,
never another file of the folder (the blog's ``cnn.py`` trains at import time).

Every failure to locate or import is a :class:`UserCodeError` whose message names the
file, what was found and what was expected (the command exits 2 on it).
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

APIS = ("blog",)
AUTO = "auto"
BLOG_FILES = {"Conv3x3": "conv.py", "MaxPool2": "maxpool.py", "Softmax": "softmax.py"}
EXPECTED = {
    "blog": "the blog API: class Conv3x3 in conv.py, MaxPool2 in maxpool.py and Softmax in "
    "softmax.py (a folder laid out like the blog's repository), or all three classes in "
    "one .py file",
}


class UserCodeError(ValueError):
    """The user's code cannot be located or imported (bad input: exit 2)."""


@dataclass(frozen=True)
class UserCode:
    """Where a user's network lives and which API it follows.

    Attributes
    ----------
    path : str
        Absolute path of the folder or of the one ``.py`` file.
    api : str
        ``blog``.
    name : str
        The model name in reports (``user``).
    """

    path: str
    api: str = "blog"
    name: str = "user"

    def files(self) -> dict[str, Path]:
        """``{class name: file that must define it}``."""
        path = Path(self.path)
        if path.is_dir():
            return {cls: path / file for cls, file in BLOG_FILES.items()}
        return {cls: path for cls in BLOG_FILES}


def locate(path, api: str = AUTO) -> UserCode:
    """Check ``path`` and resolve ``api`` (``auto`` -> ``blog`` when the blog's class
    names are found) without importing anything; raises :class:`UserCodeError`."""
    if api != AUTO and api not in APIS:
        raise UserCodeError(
            f"Invalid value for argument `--api`. Expected one of {', '.join((AUTO, *APIS))}. "
            f"Received --api={api!r}."
        )
    resolved = Path(path).expanduser().resolve()
    if not resolved.exists():
        raise UserCodeError(
            f"Invalid value for argument `PATH`. Expected a folder or a .py file with "
            f"{EXPECTED['blog']}. Received PATH='{path}' (no such file or folder)."
        )
    if resolved.is_file() and resolved.suffix != ".py":
        raise UserCodeError(
            f"Invalid value for argument `PATH`. Expected a folder or a .py file. "
            f"Received PATH='{path}' (a {resolved.suffix or 'suffix-less'} file)."
        )
    code = UserCode(str(resolved), "blog")
    found = defined_names(code)
    missing = [cls for cls, file in code.files().items() if cls not in found.get(file, ())]
    if missing:
        wanted = EXPECTED["blog"] if api == AUTO else EXPECTED[api]
        what = "cannot tell which API it follows" if api == AUTO else f"not the {api} API"
        raise UserCodeError(
            f"{path}: {what}. Expected {wanted}. Found: {_describe_found(code, found)}; "
            f"missing: {', '.join(missing)}."
        )
    return code


def defined_names(code: UserCode) -> dict[Path, set[str]]:
    """Top-level names each candidate file defines (classes, imports, assignments), read
    with ``ast`` (nothing is run). A missing file maps to nothing; a syntax error raises."""
    names: dict[Path, set[str]] = {}
    for file in dict.fromkeys(code.files().values()):
        if not file.is_file():
            continue
        try:
            tree = ast.parse(file.read_bytes(), filename=str(file))
        except SyntaxError as error:
            raise UserCodeError(
                f"{file}:{error.lineno}: syntax error ({error.msg}); cannot import it. "
                f"Expected {EXPECTED[code.api]}."
            ) from None
        except (OSError, ValueError) as error:
            raise UserCodeError(f"{file}: cannot read it ({error}).") from None
        names[file] = _top_level_names(tree)
    return names


def _top_level_names(tree: ast.Module) -> set[str]:
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


def _describe_found(code: UserCode, found: dict[Path, set[str]]) -> str:
    parts = []
    for file in dict.fromkeys(code.files().values()):
        if file not in found:
            parts.append(f"{file.name}: no such file")
        else:
            classes = sorted(n for n in found[file] if n[:1].isupper())
            parts.append(f"{file.name}: {', '.join(classes) or 'no class'}")
    return "; ".join(parts)


def load(code: UserCode) -> dict[str, type]:
    """Import the files of ``code`` and return ``{class name: class}`` (``Conv3x3``,
    ``MaxPool2``, ``Softmax``); raises :class:`UserCodeError` naming the file."""
    modules: dict[Path, object] = {}
    classes = {}
    for cls, file in code.files().items():
        if file not in modules:
            modules[file] = _import(file, code)
        obj = getattr(modules[file], cls, None)
        if not isinstance(obj, type):
            public = sorted(n for n in vars(modules[file]) if n[:1].isupper())
            raise UserCodeError(
                f"{file}: defines no class `{cls}` after import (found: "
                f"{', '.join(public) or 'no class'}). Expected {EXPECTED[code.api]}."
            )
        classes[cls] = obj
    return classes


def _import(file: Path, code: UserCode):
    """Import ``file`` under a private module name (never on ``sys.path``)."""
    if not file.is_file():
        raise UserCodeError(f"{file}: no such file. Expected {EXPECTED[code.api]}.")
    digest = hashlib.sha1(str(file).encode()).hexdigest()[:12]
    name = f"_parity_user_{digest}_{file.stem}"
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # a module's own dataclasses and pickling look it up
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as error:
        del sys.modules[name]
        raise UserCodeError(
            f"{file}: importing it raised {type(error).__name__}: {error}{_where(error, file)}. "
            f"Expected a module that imports cleanly and defines {EXPECTED[code.api]}."
        ) from None
    return module


def _where(error: BaseException, file: Path) -> str:
    """`` (at file:line)``: the innermost frame of the user's code, if any."""
    frames = traceback.extract_tb(error.__traceback__)
    if isinstance(error, SyntaxError) and error.filename:
        return f" (at {error.filename}:{error.lineno})"
    own = [f for f in frames if Path(f.filename).parent == file.parent]
    frame = own[-1] if own else (frames[-1] if frames else None)
    return f" (at {frame.filename}:{frame.lineno})" if frame else ""
