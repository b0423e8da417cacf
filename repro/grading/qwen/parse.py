"""The sympy objects that the ``qwen`` grader's symbolic comparison works on: the original's
parsers in its order (sympy's ANTLR LaTeX parser, ``parse_expr``, then a LaTeX converter; here
``latex2sympy2_extended`` stands in for the original's bundled latex2sympy).

sympy's LaTeX parser needs the antlr 4.11 runtime by its own check, math-verify needs 4.13, and
one environment holds both graders; ``_sympy_latex_parser`` runs sympy's generated parser under
4.13 (see there). Both LaTeX parsers run ANTLR's two-stage (SLL, then LL) prediction for speed.
"""
from __future__ import annotations

from functools import lru_cache

@lru_cache(maxsize=1)
def _latex_converter_class():
    """latex2sympy2_extended's converter with two-stage ANTLR parsing: the fast SLL prediction
    mode first, the full LL mode only when SLL reports an error (ANTLR's standard recipe; a
    successful SLL parse is the LL parse). This makes LaTeX parsing several times faster. Falls
    back to the library's public function if its internals differ from the pinned version."""
    try:
        from antlr4.atn.PredictionMode import PredictionMode
        from latex2sympy2_extended.latex2sympy2 import _Latex2Sympy
    except ImportError:
        return None

    class TwoStage(_Latex2Sympy):
        sll = True

        def create_parser(self, latex_str):
            parser = super().create_parser(latex_str)
            if self.sll:
                parser._interp.predictionMode = PredictionMode.SLL
            return parser

    return TwoStage


def latex_to_sympy(text: str):
    """Parse LaTeX with latex2sympy2_extended, without its own answer normalisation (the qwen
    normalisation has already run, as the original's parser had none)."""
    cls = _latex_converter_class()
    if cls is None:
        from latex2sympy2_extended import latex2sympy

        return latex2sympy(text, normalization_config=None)
    conv = cls()
    try:
        return conv.parse(text)
    except Exception:
        conv = cls()
        conv.sll = False
        return conv.parse(text)


@lru_cache(maxsize=1)
def _sympy_latex_parser():
    """sympy's own ANTLR LaTeX parser (the original's first parser), or None.

    sympy refuses to run it unless the antlr runtime is 4.11, the version its generated parser
    was built with; this environment has 4.13 (math-verify needs it). The serialized grammar
    (ATN version 4) is read the same by both runtimes, so this calls the same lexer, parser and
    converter that ``sympy.parsing.latex.parse_latex`` calls, without that version check and
    without the runtime's version-mismatch warning. Checked against the original's verdicts by
    ``tests/test_grader_corpus.py``.
    """
    try:
        import antlr4
        from sympy.parsing.latex import _parse_latex_antlr as m

        if m.LaTeXLexer is None or m.LaTeXParser is None or m.MathErrorListener is None:
            return None
    except ImportError:
        return None

    class Lexer(m.LaTeXLexer):
        def checkVersion(self, toolVersion):
            pass

    class Parser(m.LaTeXParser):
        def checkVersion(self, toolVersion):
            pass

    from antlr4.atn.PredictionMode import PredictionMode

    def parse_mode(text: str, sll: bool):
        listener = m.MathErrorListener(text)
        lex = Lexer(antlr4.InputStream(text))
        lex.removeErrorListeners()
        lex.addErrorListener(listener)
        parser = Parser(antlr4.CommonTokenStream(lex))
        parser.removeErrorListeners()
        parser.addErrorListener(listener)
        if sll:
            parser._interp.predictionMode = PredictionMode.SLL
        return parser.math().relation()

    def parse(text: str):
        # ANTLR's two-stage recipe: SLL prediction first (fast); a parse it accepts is the LL
        # parse. Only when SLL reports an error, parse again in full LL mode.
        text = text.strip()
        try:
            rel = parse_mode(text, True)
        except Exception:
            rel = parse_mode(text, False)
        return m.convert_relation(rel)

    return parse


def _parse_latex_sympy(text: str):
    parse = _sympy_latex_parser()
    if parse is None:
        raise ImportError("sympy's LaTeX parser is unavailable")
    return parse(text)


def _parse_expr(text: str):
    from sympy.parsing.sympy_parser import parse_expr

    return parse_expr(text)


def _parse_latex2sympy(text: str):
    if "boxed" in text or "\\fbox" in text:
        # latex2sympy2_extended understands \boxed, the original's bundled latex2sympy did not
        raise ValueError("boxed")
    return latex_to_sympy(text)


@lru_cache(maxsize=4096)
def parse_math(s: str):
    """A sympy object for ``s``, or ``s`` itself when nothing parses it: the original's parsers
    in its order (sympy's LaTeX parser, ``parse_expr``, latex2sympy; here latex2sympy2_extended
    stands in for the original's bundled latex2sympy), each tried on ``s`` with ``\\\\`` read as
    ``\\`` first. Cached: the same gold is parsed once per worker, not once per sample. Where
    ``s`` holds no ``\\\\`` both tries are the same call of a deterministic parser, so the second
    is skipped (it would raise the same error)."""
    t = s.replace("\\\\", "\\")
    for f in (_parse_latex_sympy, _parse_expr, _parse_latex2sympy):
        try:
            return f(t)
        except Exception:
            if t == s:
                continue
            try:
                return f(s)
            except Exception:
                pass
    return s


