"""The suite's own pytest settings (pyproject.toml): a failure inside a background thread fails its test.

pytest reports an exception raised in a thread as `PytestUnhandledThreadExceptionWarning`, a `UserWarning`;
under a blanket `ignore::UserWarning` a failed assert in a poller thread passed silently.
"""

from __future__ import annotations

import warnings

import pytest

from conftest import ROOT

pytest_plugins = ["pytester"]

INNER_TESTS = """
import threading
import warnings


def run_in_thread(target):
    thread = threading.Thread(target=target)
    thread.start()
    thread.join()


def test_thread_assert_fails():
    def poll():
        assert 503 == 200, "health answered 503"
    run_in_thread(poll)


def test_thread_exception_fails():
    def poll():
        raise TimeoutError("health hung")
    run_in_thread(poll)


def test_quiet_thread_passes():
    run_in_thread(lambda: None)


def test_other_user_warnings_are_shown_not_fatal():
    warnings.warn("something a library says", UserWarning)
"""


def test_a_failure_in_a_background_thread_fails_the_test(pytester: pytest.Pytester) -> None:
    pytester.makepyprojecttoml((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    pytester.mkdir("tests")
    pytester.path.joinpath("tests", "test_inner.py").write_text(INNER_TESTS, encoding="utf-8")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, failed=2, warnings=1)
    result.stdout.fnmatch_lines(
        [
            "*FAILED tests/test_inner.py::test_thread_assert_fails*",
            "*FAILED tests/test_inner.py::test_thread_exception_fails*",
        ]
    )
    assert "health answered 503" in result.stdout.str() and "health hung" in result.stdout.str()


def test_importing_funasr_leaves_the_warning_filters_alone(tiny_models) -> None:
    """FunASR's AutoModel module runs `warnings.filterwarnings("ignore")` when imported, which silenced every
    filter above for the rest of the test that imported it first; conftest's `tiny_models` imports it under
    `catch_warnings`, which undoes that."""
    from funasr import AutoModel  # noqa: F401

    blanket = [f for f in warnings.filters if f[0] == "ignore" and f[1] is None and f[2] is Warning]
    assert not blanket, "a blanket ignore is in force: thread exceptions and all other warnings go unseen"
