"""The reward rule (+1 / -0.5 / -1) and the last-\\boxed{} extraction."""
import pytest

from repro.grading import get_grader
from repro.grading.extract import last_boxed
from repro.reward import reward

BOX_TABLE = [
    (r"so the answer is \boxed{42}.", "42"),
    (r"\boxed{1} then \boxed{2}", "2"),  # the last one
    (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),  # nested braces
    (r"\boxed{\left\{1,2\right\}}", r"\left\{1,2\right\}"),  # escaped braces inside
    (r"$\boxed 5$", "5"),  # \boxed followed by a space and one token
    (r"\fbox{7}", "7"),
    (r"\boxed{x} and an unclosed \boxed{3", "x"),  # unclosed last box: take the one before
    ("no box at all", None),
    (r"\boxed{}", ""),
    (r"\boxedfoo{3}", None),  # not the \boxed command
]


@pytest.mark.parametrize("text,want", BOX_TABLE)
def test_last_boxed(text, want):
    assert last_boxed(text) == want


REWARD_TABLE = [
    (r"17+25=42;\boxed{42}", "42", 1.0),
    (r"\boxed{42.0}", "42", 1.0),  # numeric equality
    (r"\boxed{ 42 }", "42", 1.0),
    (r"\boxed{41}", "42", -0.5),  # boxed but wrong
    (r"\boxed{}", "42", -1.0),  # an empty box is no answer
    (r"the answer is 42", "42", -1.0),  # correct but not boxed
    ("", "42", -1.0),  # empty response
    (r"\boxed{forty-two}", "42", -0.5),
]


@pytest.mark.parametrize("resp,gold,want", REWARD_TABLE)
def test_reward_rule(resp, gold, want):
    assert reward(resp, gold) == want


def test_simple_grader_never_raises():
    g = get_grader("simple")
    assert g(None, "1") is False
    assert g("1,000", "1000") is True
    assert g("", "") is False
    assert g("1e400", "1") is False


def test_unknown_grader():
    with pytest.raises(ValueError, match="unknown grader"):
        get_grader("nope")


def test_reward_takes_a_grader_callable():
    seen = []

    def grade(pred, gold):
        seen.append((pred, gold))
        return pred == "7"

    assert reward(r"\boxed{7}", "x", grader=grade) == 1.0
    assert reward(r"\boxed{8}", "x", grader=grade) == -0.5
    assert reward("no box", "x", grader=grade) == -1.0
    assert seen == [("7", "x"), ("8", "x")]  # never called without a box
