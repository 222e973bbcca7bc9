"""Locate and import a user's own CNN code (``parity check PATH``), numpy only.

A :class:`UserCode` is a picklable description (a path and an API): the dtype processes
load the classes themselves from it (classes imported from a path cannot be pickled by
name). Nothing here runs the user's methods; only importing runs their module code.

Two APIs (:data:`REQUIRED` names what each must define):

- ``blog`` (Victor Zhou's "CNNs, Part 2"): a folder laid out like the blog's repository,
  ``conv.py`` with ``Conv3x3``, ``maxpool.py`` with ``MaxPool2``, ``softmax.py`` with
  ``Softmax``, or one ``.py`` file defining all three. Only those files are imported, never
  another file of the folder (the blog's ``cnn.py`` trains at import time).
- ``cs231n`` (the channels-first seed document): one ``.py`` file defining ``Conv``,
  ``MaxPool2x2``, ``Linear`` and ``softmax_loss``, and optionally ``ReLU``.

``auto`` reads the names a file defines (with ``ast``, before importing) and picks the API
whose names are all there; both or neither is an error listing what was found.

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

APIS = ("blog", "cs231n")
AUTO = "auto"
FACTORY = "factory"  # PATH:FUNCTION (scratch.user_factory); not an --api value
BLOG_FILES = {"Conv3x3": "conv.py", "MaxPool2": "maxpool.py", "Softmax": "softmax.py"}
REQUIRED = {
    "blog": tuple(BLOG_FILES),
    "cs231n": ("Conv", "MaxPool2x2", "Linear", "softmax_loss"),
}
# cs231n: ReLU joins the fixed network; the batch norm and dropout classes are judged alone
# (scratch.user_cs231n_norm, parity.checks.modal).
OPTIONAL = {
    "blog": (),
    "cs231n": ("ReLU", "SpatialBatchNorm", "BatchNorm", "Dropout"),
    FACTORY: (),
}
EXPECTED = {
    "blog": "the blog API: class Conv3x3 in conv.py, MaxPool2 in maxpool.py and Softmax in "
    "softmax.py (a folder laid out like the blog's repository), or all three classes in "
    "one .py file",
    "cs231n": "the cs231n API: one .py file defining the classes Conv, MaxPool2x2 and Linear "
    "and the function softmax_loss (ReLU, BatchNorm, SpatialBatchNorm and Dropout optional)",
    FACTORY: "PATH:FUNCTION, a .py file defining a function FUNCTION(seed, dtype) that "
    "returns a scratch.user_factory.Subject",
}


class UserCodeError(ValueError):
    """The user's code cannot be located, imported or constructed as its API says (bad
    input: exit 2)."""


@dataclass(frozen=True)
class UserCode:
    """Where a user's network lives and which API it follows.

    Attributes
    ----------
    path : str
        Absolute path of the folder or of the one ``.py`` file.
    api : str
        ``blog``, ``cs231n`` or ``factory`` (``PATH:FUNCTION``).
    name : str
        The model name in reports (``user``).
    network : str
        ``cs231n`` only: the name of a description in ``spec.networks.NETWORKS`` to build
        the user's classes on instead of the API's fixed network (``chw-odd`` reaches
        C > 1, stride 2 and padding); not on the command line yet. Empty: the fixed one.
    function : str
        ``factory`` only: the name of the factory function in ``path``.
    """

    path: str
    api: str = "blog"
    name: str = "user"
    network: str = ""
    function: str = ""

    def files(self) -> dict[str, Path]:
        """``{required name: file that must define it}``."""
        path = Path(self.path)
        if self.api == FACTORY:
            return {self.function: path}
        if path.is_dir() and self.api == "blog":
            return {cls: path / file for cls, file in BLOG_FILES.items()}
        return {name: path for name in REQUIRED[self.api]}


def locate(path, api: str = AUTO) -> UserCode:
    """Check ``path`` and resolve ``api`` (``auto``: the API whose names the code defines)
    without importing anything; raises :class:`UserCodeError`. ``PATH:FUNCTION`` (a
    ``.py`` file, then an identifier) names a factory (``scratch.user_factory``)."""
    factory = split_factory(path)
    if factory is not None:
        return _locate_factory(path, api, *factory)
    if api != AUTO and api not in APIS:
        raise UserCodeError(
            f"Invalid value for argument `--api`. Expected one of {', '.join((AUTO, *APIS))}. "
            f"Received --api={api!r}."
        )
    resolved = Path(path).expanduser().resolve()
    wanted = "; or ".join(EXPECTED[a] for a in (APIS if api == AUTO else (api,)))
    if not resolved.exists():
        raise UserCodeError(
            f"Invalid value for argument `PATH`. Expected a folder or a .py file with "
            f"{wanted}. Received PATH='{path}' (no such file or folder)."
        )
    if resolved.is_file() and resolved.suffix != ".py":
        raise UserCodeError(
            f"Invalid value for argument `PATH`. Expected a folder or a .py file. "
            f"Received PATH='{path}' (a {resolved.suffix or 'suffix-less'} file)."
        )
    if resolved.is_dir() and api == "cs231n":
        raise UserCodeError(
            f"Invalid value for argument `PATH`. Expected {EXPECTED['cs231n']}. "
            f"Received PATH='{path}' (a folder)."
        )
    candidates = (api,) if api != AUTO else (APIS if resolved.is_file() else ("blog",))
    codes = {a: UserCode(str(resolved), a) for a in candidates}
    found = {a: defined_names(code, wanted) for a, code in codes.items()}
    missing = {a: _missing(codes[a], found[a]) for a in candidates}
    complete = [a for a in candidates if not missing[a]]
    if len(complete) == 1:
        return codes[complete[0]]
    described = _describe_found(codes[candidates[0]], found[candidates[0]])
    if complete:  # auto, a file with both sets of names
        raise UserCodeError(
            f"{path}: cannot tell which API it follows: it defines the names of both "
            f"{EXPECTED['blog']} and {EXPECTED['cs231n']}. Found: {described}. Pass "
            "--api blog or --api cs231n, or keep one set of names in the file."
        )
    what = "cannot tell which API it follows" if api == AUTO else f"not the {api} API"
    lacking = "; ".join(f"{', '.join(missing[a])} (for {a})" for a in candidates)
    raise UserCodeError(
        f"{path}: {what}. Expected {wanted}. Found: {described}; missing: {lacking}."
    )


def split_factory(path) -> tuple[str, str] | None:
    """``"net.py:make_network"`` -> ``("net.py", "make_network")``; None when ``path`` is
    not of that form (a ``.py`` file part, an identifier after the last colon)."""
    file, colon, function = str(path).rpartition(":")
    if not colon or not file.endswith(".py") or not function.isidentifier():
        return None
    return file, function


def _locate_factory(given, api: str, file: str, function: str) -> UserCode:
    if api != AUTO:
        raise UserCodeError(
            f"Invalid value for argument `--api`. Expected it left out (auto) with "
            f"PATH:FUNCTION, whose factory describes the network. Received --api={api!r} "
            f"with PATH='{given}'."
        )
    resolved = Path(file).expanduser().resolve()
    if not resolved.is_file():
        raise UserCodeError(
            f"Invalid value for argument `PATH`. Expected {EXPECTED[FACTORY]}. Received "
            f"PATH='{given}' (no such file: {file})."
        )
    code = UserCode(str(resolved), FACTORY, function=function)
    found = defined_names(code).get(resolved, {})
    if found.get(function) != "function":
        raise UserCodeError(
            f"{given}: {file} defines no function `{function}` "
            f"({'it is a ' + found[function] if function in found else 'not defined'}; "
            f"found: {_describe_found(code, {resolved: found})}). Expected "
            f"{EXPECTED[FACTORY]}."
        )
    return code


def _missing(code: UserCode, found: dict[Path, set[str]]) -> list[str]:
    return [name for name, file in code.files().items() if name not in found.get(file, ())]


def defined_names(code: UserCode, expected: str | None = None) -> dict[Path, dict[str, str]]:
    """Top-level names each candidate file defines, ``{name: kind}`` (``class``,
    ``function``, ``import``, ``assignment``), read with ``ast`` (nothing is run). A missing
    file maps to nothing; a syntax error raises (naming ``expected``, default the API's)."""
    names: dict[Path, dict[str, str]] = {}
    for file in dict.fromkeys(code.files().values()):
        if not file.is_file():
            continue
        try:
            tree = ast.parse(file.read_bytes(), filename=str(file))
        except SyntaxError as error:
            raise UserCodeError(
                f"{file}:{error.lineno}: syntax error ({error.msg}); cannot import it. "
                f"Expected {expected or EXPECTED[code.api]}."
            ) from None
        except (OSError, ValueError) as error:
            raise UserCodeError(f"{file}: cannot read it ({error}).") from None
        names[file] = _top_level_names(tree)
    return names


def _top_level_names(tree: ast.Module) -> dict[str, str]:
    names = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            names[node.name] = "class"
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names[node.name] = "function"
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update({(a.asname or a.name).split(".")[0]: "import" for a in node.names})
        elif isinstance(node, ast.Assign):
            names.update({t.id: "assignment" for t in node.targets if isinstance(t, ast.Name)})
    return names


def _describe_found(code: UserCode, found: dict[Path, dict[str, str]]) -> str:
    """``conv.py: Conv3x3; net.py: Linear, softmax_loss``: classes, then functions."""
    parts = []
    for file in dict.fromkeys(code.files().values()):
        if file not in found:
            parts.append(f"{file.name}: no such file")
        else:
            names = [n for kind in ("class", "function")
                     for n in sorted(k for k, v in found[file].items() if v == kind)]  # fmt: skip
            parts.append(f"{file.name}: {', '.join(names) or 'no class or function'}")
    return "; ".join(parts)


def load(code: UserCode) -> dict[str, object]:
    """Import the files of ``code`` and return ``{name: class or function}``: the API's
    required names (:data:`REQUIRED`) and its optional ones the code defines (``ReLU``);
    raises :class:`UserCodeError` naming the file."""
    modules: dict[Path, object] = {}
    found = {}
    files = code.files()
    optional = {name: next(iter(files.values())) for name in OPTIONAL[code.api]}
    for name, file in {**files, **optional}.items():
        if file not in modules:
            modules[file] = _import(file, code)
        obj = getattr(modules[file], name, None)
        if obj is None and name in optional:
            continue
        upper = name[:1].isupper() and code.api != FACTORY
        kind = "class" if upper else "function"
        if not (isinstance(obj, type) if kind == "class" else callable(obj)):
            public = sorted(n for n in vars(modules[file]) if not n.startswith("_"))
            raise UserCodeError(
                f"{file}: defines no {kind} `{name}` after import (found: "
                f"{', '.join(public) or 'nothing'}). Expected {EXPECTED[code.api]}."
            )
        found[name] = obj
    return found


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
            f"{file}: importing it raised {type(error).__name__}: {error}"
            f"{where_raised(error, file)}. "
            f"Expected a module that imports cleanly and defines {EXPECTED[code.api]}."
        ) from None
    return module


def where_raised(error: BaseException, file: Path) -> str:
    """`` (at file:line)``: the innermost frame of the user's code, if any."""
    frames = traceback.extract_tb(error.__traceback__)
    if isinstance(error, SyntaxError) and error.filename:
        return f" (at {error.filename}:{error.lineno})"
    own = [f for f in frames if Path(f.filename).parent == file.parent]
    frame = own[-1] if own else (frames[-1] if frames else None)
    return f" (at {frame.filename}:{frame.lineno})" if frame else ""
