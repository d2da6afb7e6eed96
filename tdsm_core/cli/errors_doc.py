"""The catalogue of user-facing error messages, read from the source, and `docs/errors.md` built from it.

Every `raise SomeError(...)` in the package whose class derives from TDSMError is a message a user
can see. `templates()` lists them with the variable parts as `{...}`; `render_markdown()` writes
the table in docs/errors.md; a test keeps the two in sync and checks that every message the test
suite triggers matches one of them. Regenerate with `python -m tdsm_core.cli.errors_doc > docs/errors.md`.
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import errors

PACKAGE = Path(__file__).resolve().parents[1]  # tdsm_core/
AREAS = {
    "config": "configs and overrides", "data.features": "feature files, label splits, class prompts",
    "data.splits": "label splits", "data.text": "text encoders", "data.demo": "demo data",
    "runs.checkpoint": "checkpoints", "runs.train": "training", "runs.pipeline": "runs", "runs.lock": "concurrent runs",
    "runs.protocols": "evaluation protocols", "runs.experiments": "ablations", "runs.distributed": "several processes",
    "runs.folds": "class-fold validation", "runs.tune": "searches",
    "skeletons.readers": "raw skeleton datasets", "skeletons.format": "generic skeleton .npz",
    "skeletons.preprocess": "preprocessing", "skeletons.encoder": "skeleton encoder",
    "skeletons.chain": "raw skeletons to zero-shot", "skeletons.layouts": "joint layouts",
    "skeletons.streams": "encoder input", "skeletons.ntu": "NTU RGB+D files", "skeletons.ntu_convert": "NTU RGB+D conversion",
    "skeletons.store": "arrays on disk", "workbook.runner": "notebook runs", "workbook.sweep": "every-split runs",
    "workbook.notebooks": "notebook helpers", "io": "devices, disk space", "inputs": "files and folders",
    "cli.main": "the command line",
}


@dataclass(frozen=True)
class Template:
    module: str
    error: str
    text: str  # the message with each interpolated value shown as {...}

    def pattern(self) -> re.Pattern:
        parts = [re.escape(part) for part in self.text.split("{...}")]
        return re.compile("^" + "(.*?)".join(parts) + "$", re.DOTALL)


def _user_error_names() -> set[str]:
    names = {name for name, value in vars(errors).items() if isinstance(value, type) and issubclass(value, errors.TDSMError)}
    return names | {"RunLockedError", "NotebookError"}  # defined beside their users


def _message(node: ast.expr) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "{...}" for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _message(node.left), _message(node.right)
        return None if left is None or right is None else left + right
    return None


def _module_name(path: Path, package: Path) -> str:
    """A source file's module under the package, e.g. runs/train.py -> runs.train."""
    return ".".join(path.relative_to(package).with_suffix("").parts)


def templates(package: Path = PACKAGE) -> list[Template]:
    """Every user-facing message raised in the package, in file order."""
    names = _user_error_names()
    found = []
    for path in sorted(package.rglob("*.py")):
        module = _module_name(path, package)
        tree = ast.parse(path.read_text())
        for function in ast.walk(tree):
            if isinstance(function, ast.FunctionDef) and function.name == "_check_ranges":
                # config range rules: (ok, rule, value) tuples raised as "<rule>; got <value>."
                for rule in ast.walk(function):
                    if isinstance(rule, ast.Tuple) and len(rule.elts) == 3 and _message(rule.elts[1]):
                        found.append((rule.lineno, Template(module, "ConfigError", _message(rule.elts[1]) + "; got {...}.")))
            if isinstance(function, ast.FunctionDef) and function.name == "sanity_checks":
                # check(condition, what passed, failure message) raises DataError(failure message)
                for call in ast.walk(function):
                    if isinstance(call, ast.Call) and getattr(call.func, "id", "") == "check" and len(call.args) == 3:
                        text = _message(call.args[2])
                        if text is not None:
                            found.append((call.lineno, Template(module, "DataError", text)))
            if isinstance(function, ast.FunctionDef) and function.name == "__post_init__":
                # dataclass configs validate their own fields; config loading re-raises these as ConfigError
                for node in ast.walk(function):
                    if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and node.exc.args:
                        text = _message(node.exc.args[0])
                        if text is not None:
                            found.append((node.lineno, Template(module, "ConfigError", text)))
        for node in ast.walk(tree):
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
                func = node.exc.func
                name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
                if name in names and node.exc.args:
                    text = _message(node.exc.args[0])
                    if text is not None and text != "{...}; got {...}.":
                        found.append((node.lineno, Template(module, name, text)))
    return _in_module_order(found)


def _in_module_order(found: list[tuple[int, Any]]) -> list:
    """(line, entry) pairs -> the distinct entries, by module and then by line (the first occurrence kept)."""
    ordered = []
    for _, entry in sorted(found, key=lambda item: (item[1].module, item[0])):
        if entry not in ordered:
            ordered.append(entry)
    return ordered


# helpers of inputs.py that name an input and its fix: (function, index of `what` among the arguments)
INPUT_HELPERS = {"read_text": 1, "reading": 1, "check_output_file": 1, "check_output_folder": 1, "raise_os_error": 2}


@dataclass(frozen=True)
class InputPoint:
    module: str
    what: str  # the input as the messages name it
    fix: str  # what the messages tell the user to do


def input_points(package: Path = PACKAGE) -> list[InputPoint]:
    """Every place a file or folder enters through the helpers of inputs.py, with the input and fix it names."""
    found = []
    for path in sorted(package.rglob("*.py")):
        module = _module_name(path, package)
        if module == "inputs":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) in INPUT_HELPERS:
                at = INPUT_HELPERS[getattr(node.func, "id", getattr(node.func, "attr", ""))]
                if len(node.args) > at + 1:
                    what, fix = _message(node.args[at]), _message(node.args[at + 1])
                    if what is not None and fix is not None:
                        found.append((node.lineno, InputPoint(module, what, fix)))
    return _in_module_order(found)


def matches(message: str, catalogue: list[Template]) -> bool:
    """Whether a raised message is one of the catalogued templates."""
    return any(t.pattern().match(message) for t in catalogue)


def render_markdown(catalogue: list[Template] | None = None) -> str:
    catalogue = catalogue if catalogue is not None else templates()
    lines = [
        "# Errors a user can cause, and what the workbook says",
        "",
        "Generated from the source by `python -m tdsm_core.cli.errors_doc > docs/errors.md`; a test fails when this",
        "file and the code disagree. `{...}` stands for the values filled in (paths, sizes, ids). Each message is",
        "one sentence saying what was expected and how to fix it. The command line prints it as `error: ...`",
        "without a traceback and exits with status 2 (`python -m tdsm_core --debug ...` shows the traceback).",
        "Wrong command-line arguments are answered by argparse with the usage line, also with status 2.",
        "",
        "| area | error | message |",
        "|---|---|---|",
    ]
    for t in catalogue:
        text = t.text.replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {AREAS.get(t.module, t.module)} (`{t.module.replace('.', '/')}.py`) | {t.error} | {text} |")
    lines += [
        "",
        "## Files and folders, where they enter",
        "",
        "The messages of `inputs.py` above (a missing file, a folder where a file belongs, no permission, a",
        "read-only or full disk, text that is not UTF-8) are filled in with the input and the fix of the place",
        "that reads or writes it. Outputs are checked before the work that produces them.",
        "",
        "| area | input (`{...}` in the messages) | fix |",
        "|---|---|---|",
    ]
    for point in input_points():
        lines.append(f"| {AREAS.get(point.module, point.module)} (`{point.module.replace('.', '/')}.py`) | {point.what} | {point.fix} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render_markdown(), end="")
