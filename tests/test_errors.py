"""The error tree: every exception feedproxy raises on purpose derives from FeedproxyError."""

import ast
import builtins
import importlib
import inspect
import typing

from feedproxy import errors
from feedproxy.errors import FeedproxyError

from .test_architecture import PACKAGE, module_name

# Raises that are not a FeedproxyError, or that this test cannot tell from the code alone:
# (module, the raised class or the callable that builds the exception) -> why it is right.
ALLOWED = {
    ("feedproxy.upstream.safe", "httpx.ConnectError"):
        "in the httpx transport's resolver: httpx turns only its own ConnectError into a failed connection",
    ("feedproxy.upstream.deadline", "timeout_error"):
        "an httpcore.TimeoutException subclass given by the caller: httpcore and httpx expect their timeouts",
    ("feedproxy.refresher", "Stopped"):
        "a BaseException on purpose, like KeyboardInterrupt: no `except Exception` may swallow a stop signal",
    ("feedproxy.store.sources", "first_error"):
        "a NoData built in the loop above",
    ("feedproxy.http.views", "copy.copy"):
        "a copy of a cached BadParameter",
}


def raised_type(target: ast.expr, namespace: dict, class_name: str | None):
    """The exception class ``raise target`` or ``raise target(...)`` raises, or None when the code alone cannot tell.

    A class is itself; a function or method (``self._error``) counts by its return annotation.
    """
    found = None
    if isinstance(target, ast.Name):
        found = namespace.get(target.id, getattr(builtins, target.id, None))
    elif isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name):
        if target.value.id in ("self", "cls") and class_name in namespace:
            found = getattr(namespace[class_name], target.attr, None)
        elif target.value.id in namespace:
            found = getattr(namespace[target.value.id], target.attr, None)
    if inspect.isclass(found):
        return found
    if callable(found):
        returned = typing.get_type_hints(found, namespace).get("return") if inspect.isfunction(found) else None
        return returned if inspect.isclass(returned) else None
    return None


def bad_raises(source: str, namespace: dict, module: str = "") -> list[str]:
    """Each ``raise`` in ``source`` of an exception that is not a FeedproxyError (or not known to be one).

    ``namespace`` holds the module's names (its globals), to tell what each raised name is.
    """
    bad = []

    def visit(node: ast.AST, class_name: str | None) -> None:
        if isinstance(node, ast.ClassDef):
            class_name = node.name
        if isinstance(node, ast.Raise) and node.exc is not None:
            target = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            key = ast.unparse(target)
            kind = raised_type(target, namespace, class_name)
            if (module, key) not in ALLOWED and not (kind and issubclass(kind, FeedproxyError)):
                bad.append(f"{module}:{node.lineno}: raise {key} ({kind.__name__ if kind else 'unknown'})")
        for child in ast.iter_child_nodes(node):
            visit(child, class_name)

    visit(ast.parse(source), None)
    return bad


def test_every_raise_in_feedproxy_raises_a_feedproxy_error():
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        bad += bad_raises(path.read_text(encoding="utf-8"), vars(importlib.import_module(name)), name)
    assert bad == []


def test_each_allowed_raise_is_still_there():
    sources = {module_name(p): p.read_text(encoding="utf-8") for p in PACKAGE.rglob("*.py")}
    gone = [(module, key) for module, key in ALLOWED
            if not any(isinstance(node, ast.Raise) and node.exc is not None
                       and ast.unparse(node.exc.func if isinstance(node.exc, ast.Call) else node.exc) == key
                       for node in ast.walk(ast.parse(sources[module])))]
    assert gone == []


def test_the_raise_checker_finds_built_in_and_foreign_exceptions():
    source = '''
from feedproxy.errors import QueryError, StorageError
import json
class Parser:
    def _error(self) -> QueryError:
        return QueryError("bad")
    def parse(self):
        raise self._error()
    def load(self):
        raise json.JSONDecodeError("bad", "", 0)
def check(x):
    if x:
        raise ValueError("bad")
    raise StorageError("bad")
def again(exc):
    raise exc
'''
    namespace: dict = {}
    exec(compile(source, "example", "exec"), namespace)  # noqa: S102 - this test's own example code
    assert bad_raises(source, namespace, "example") == [
        "example:10: raise json.JSONDecodeError (JSONDecodeError)",
        "example:13: raise ValueError (ValueError)",
        "example:16: raise exc (unknown)",
    ]


def test_every_error_class_is_in_the_tree_the_docstring_draws():
    drawn = {line.split()[0] for line in errors.__doc__.splitlines() if line.startswith("    ") and line.strip()}
    classes = {name for name, value in vars(errors).items()
               if inspect.isclass(value) and issubclass(value, FeedproxyError)}
    assert classes - drawn == set()


def test_invalid_values_are_still_value_errors_for_callers_that_catch_those():
    assert issubclass(errors.InvalidValue, ValueError)
    assert issubclass(errors.InvalidType, TypeError)
