"""Where a user's code breaks its API, said in terms of the user's own classes and files.

Two kinds of fault, two outcomes (``parity check``'s exit codes):

- found when the classes are constructed, before any of their methods runs: a weight
  attribute missing or of the wrong shape, a method missing or with a signature the API's
  call cannot bind, a constructor that raises. That is bad input, like a class missing
  from its file: :class:`scratch.user_code.UserCodeError`, exit 2, nothing written. The
  message names the class's file and line, the class, the attribute or method, the rule
  (as the API defines it) and what was found. The factory API (``scratch.user_factory``)
  rules the same way on what its factory returns.
- found while the harness runs the user's methods: a method that returns None or the wrong
  form, a ``forward`` that leaves unset an attribute the API caches (the blog's
  ``last_totals``). That is the code under test failing: :class:`ApiError`, an ``ERROR``
  row (exit 3), its ``location`` the user's method, not the adapter that noticed.
"""

from __future__ import annotations

import inspect
import traceback

import numpy as np

from scratch.user_code import UserCodeError


class ApiError(ValueError):
    """The user's code broke its API while the harness ran it (an ``ERROR`` row, exit 3).

    Raised by an adapter after the user's method returned, so the traceback ends in the
    adapter: ``location`` is the user's own ``file:line in Class.method`` instead, which
    ``parity.compare.describe_exception`` reports.
    """

    def __init__(self, message: str, location: str = ""):
        super().__init__(message)
        self.location = location


def source_of(obj, method: str = "") -> str:
    """``file:line in Class.method`` (``method`` given), ``file:line in function`` (``obj``
    a function) or ``file:line`` of the class of ``obj`` (an instance or a class), read with
    ``inspect``; ``""`` if unknown."""
    target = obj if isinstance(obj, type) or inspect.isroutine(obj) else type(obj)
    name = getattr(target, "__qualname__", type(target).__name__)
    if method:
        target = getattr(target, method, None)
        name = f"{name}.{method}"
    try:
        file = inspect.getsourcefile(inspect.unwrap(target))
        line = inspect.getsourcelines(inspect.unwrap(target))[1]
    except (OSError, TypeError):
        return ""
    if file is None:
        return ""
    return f"{file}:{line} in {name}" if method or inspect.isroutine(obj) else f"{file}:{line}"


def construct(cls: type, args: tuple, kwargs: dict, expected: str):
    """``cls(*args, **kwargs)``: the user's constructor; an exception in it is a
    :class:`UserCodeError` naming the call, the class's file and where it raised.
    ``expected``: the constructor as the API defines it."""
    call = ", ".join([*map(repr, args), *(f"{k}={v!r}" for k, v in kwargs.items())])
    try:
        return cls(*args, **kwargs)
    except Exception as error:
        where = source_of(cls)
        raise UserCodeError(
            f"{where or cls.__name__}: {cls.__name__}({call}) raised {type(error).__name__}: "
            f"{error}{_raised_in_user_code(error)}. Expected {expected}."
        ) from None


def _raised_in_user_code(error: BaseException) -> str:
    """`` (at file:line)`` of the innermost frame outside this module (the user's code, or
    a library it called); ``""`` when the call itself failed (a wrong signature)."""
    frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename != __file__]
    return f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""


def check_array(owner, attribute: str, shape: tuple, call: str, rule: str) -> None:
    """``owner.attribute`` must be a numpy array of ``shape`` after the constructor
    ``call`` ran; else a :class:`UserCodeError` naming the class's file and line, the
    class, the attribute, the rule (``rule``: the API's own words) and what was found."""
    cls = type(owner).__name__
    array = getattr(owner, attribute, None)
    if isinstance(array, np.ndarray) and array.shape == shape:
        return
    if isinstance(array, np.ndarray):
        found = f"shape {array.shape}"
    elif hasattr(owner, attribute):
        found = f"a {type(array).__name__}"
    else:
        found = f"no attribute `{attribute}` ({describe_attributes(owner)})"
    raise UserCodeError(
        f"{source_of(owner) or cls}: class {cls}: invalid attribute `{attribute}` after "
        f"{call}. Expected a numpy array of shape {shape} ({rule}). Received {found}."
    )


def check_signature(owner, method: str, arguments: tuple[str, ...], rule: str) -> None:
    """``owner.method`` must exist and accept ``arguments`` positionally (the API's call);
    else a :class:`UserCodeError` naming its file and line, the call and its signature."""
    cls = type(owner).__name__
    function = getattr(owner, method, None)
    call = f"{cls}.{method}({', '.join(arguments)})"
    if not callable(function):
        received = "nothing" if function is None else f"a {type(function).__name__}"
        raise UserCodeError(
            f"{source_of(owner) or cls}: class {cls}: no method `{method}`. Expected "
            f"{call} ({rule}). Received {received} ({describe_methods(owner)})."
        )
    _check_binds(function, arguments, source_of(owner, method) or cls, call, rule)


def check_function(function, arguments: tuple[str, ...], rule: str) -> None:
    """A user's function (``softmax_loss``) must accept ``arguments`` positionally; else a
    :class:`UserCodeError` naming its file and line, the call and its signature."""
    name = getattr(function, "__name__", "function")
    call = f"{name}({', '.join(arguments)})"
    _check_binds(function, arguments, source_of(function) or name, call, rule)


def _check_binds(function, arguments: tuple[str, ...], where: str, call: str, rule: str):
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return  # a builtin or C callable: no signature to read
    try:
        signature.bind(*arguments)
    except TypeError as error:
        raise UserCodeError(
            f"{where}: the signature {signature} cannot take the call {call} ({error}). "
            f"Expected {call} ({rule})."
        ) from None


def describe_attributes(obj) -> str:
    """``attributes: biases (10, 1), weights (1352, 10)``: what ``obj`` holds (arrays with
    their shapes), for messages that say what was found instead."""
    held = sorted(vars(obj).items()) if hasattr(obj, "__dict__") else []
    parts = [f"{k} {v.shape}" if isinstance(v, np.ndarray) else k for k, v in held]
    return f"attributes: {', '.join(parts)}" if parts else "no attributes"


def describe_methods(obj) -> str:
    """``methods: backward, forward``: the public methods of ``obj``'s class."""
    names = sorted(n for n, v in inspect.getmembers(type(obj), callable) if not n.startswith("_"))
    return f"methods: {', '.join(names)}" if names else "no methods"
