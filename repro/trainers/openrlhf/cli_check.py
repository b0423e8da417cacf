"""Run the installed OpenRLHF's own argument parser on a command line, without Ray or vLLM.

``openrlhf/cli/train_ppo_ray.py`` builds its parser inside ``if __name__ == "__main__":`` (so no
parser object can be imported) and imports Ray and vLLM at module level. This module reads that
file from the installed package, takes the ``__main__`` block, and executes it with the real
``argparse`` and ``hierarchize`` but with ``train`` replaced by a function that only records the
parsed arguments. So every flag is checked by the installed parser, and the stock validation
that follows the parse (asserts on batch sizes, estimator and group size, ...) runs too.
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import datetime
import importlib.util
import io
import os
import sys
from pathlib import Path


class OpenRLHFArgError(ValueError):
    pass


def installed_cli_path() -> Path:
    spec = importlib.util.find_spec("openrlhf")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("openrlhf is not installed (pip install --no-deps openrlhf==0.11.2)")
    p = Path(list(spec.submodule_search_locations)[0]) / "cli" / "train_ppo_ray.py"
    if not p.exists():
        raise FileNotFoundError(p)
    return p


def installed_version() -> str:
    from importlib import metadata

    return metadata.version("openrlhf")


def _load_file(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _main_block(path: Path) -> ast.Module:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    for node in tree.body:
        if (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
                and isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__"):
            body = [n for n in node.body
                    if not (isinstance(n, ast.ImportFrom) and n.module == "openrlhf.utils.config")]
            return ast.fix_missing_locations(ast.Module(body=body, type_ignores=[]))
    raise OpenRLHFArgError(f"{path}: no `if __name__ == '__main__':` block found")


def parse_train_ppo_ray(argv: list[str]):
    """Parse ``argv`` (the arguments after the program name) with the installed parser and its
    post-parse checks. Returns the hierarchical args ``train()`` would get, plus the printed
    warnings. Raises ``OpenRLHFArgError`` with the parser's message on a bad flag or value."""
    path = installed_cli_path()
    config = _load_file(path.parent.parent / "utils" / "config.py", "_openrlhf_cli_check_config")
    captured = {}

    def fake_train(args):
        captured["args"] = args

    glb = {"__name__": "__main__", "argparse": argparse, "os": os, "datetime": datetime.datetime,
           "hierarchize": config.hierarchize, "train": fake_train}
    code = compile(_main_block(path), str(path), "exec")
    out, err = io.StringIO(), io.StringIO()
    old_argv = sys.argv
    sys.argv = ["train_ppo_ray.py", *argv]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            exec(code, glb)  # noqa: S102 - the installed OpenRLHF's own parser code
    except SystemExit as e:
        raise OpenRLHFArgError(f"openrlhf {installed_version()} rejected the command "
                               f"(exit {e.code}): {(err.getvalue().strip().splitlines() or [''])[-1]}") from None
    except AssertionError as e:
        raise OpenRLHFArgError(f"openrlhf {installed_version()} validation failed: {e}") from None
    except Exception as e:  # the stock post-parse code crashed on this combination of flags
        raise OpenRLHFArgError(f"openrlhf {installed_version()} argument handling failed on this command: "
                               f"{type(e).__name__}: {e}") from None
    finally:
        sys.argv = old_argv
    if "args" not in captured:
        raise OpenRLHFArgError("the parser ran but train() was never reached")
    return captured["args"], out.getvalue()


def known_flags() -> set[str]:
    """Every option string the installed parser accepts (from the same code, with --help)."""
    path = installed_cli_path()
    glb = {"__name__": "__main__", "argparse": argparse, "os": os, "datetime": datetime.datetime,
           "hierarchize": lambda a: a, "train": lambda a: None}
    flags: set[str] = set()
    orig = argparse.ArgumentParser.add_argument

    def spy(self, *names, **kw):
        flags.update(n for n in names if n.startswith("--"))
        return orig(self, *names, **kw)

    code = compile(_main_block(path), str(path), "exec")
    argparse.ArgumentParser.add_argument = spy
    old_argv = sys.argv
    sys.argv = ["train_ppo_ray.py", "--help"]
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            exec(code, glb)  # noqa: S102
    except SystemExit:
        pass
    finally:
        argparse.ArgumentParser.add_argument = orig
        sys.argv = old_argv
    return flags
