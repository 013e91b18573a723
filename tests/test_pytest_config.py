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


#: The suite's conftest loaded under another name, so an inner run gets its hooks and helpers and nothing else.
SUITE_CONFTEST = f"""
import importlib.util
import sys

spec = importlib.util.spec_from_file_location("suite_conftest", {str(ROOT / "tests" / "conftest.py")!r})
suite = sys.modules["suite_conftest"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(suite)
pytest_runtest_makereport = suite.pytest_runtest_makereport
pytest_make_collect_report = suite.pytest_make_collect_report
missing_tool = suite.missing_tool
require_tool = suite.require_tool
"""

TOOL_TESTS = """
import pytest
from conftest import missing_tool, require_tool


def test_needs_a_tool():
    require_tool("no-such-tool-29", install="apt-get install no-such-tool-29")


@pytest.mark.skipif(True, reason=missing_tool("no-such-daemon-29", "apt-get install no-such-daemon-29"))
def test_marked_for_a_tool():
    pass


def test_skips_for_something_else():
    pytest.skip("no glibc malloc_trim on this system")


def test_finds_a_tool():
    assert require_tool("no-such-tool-29", "sh", install="-").endswith("/sh")
"""

MODULE_SKIP = """
import pytest
from conftest import missing_tool

pytest.skip(missing_tool("no-such-browser-29", "apt-get install no-such-browser-29"), allow_module_level=True)


def test_never_collected():
    pass
"""


@pytest.mark.parametrize("ci", ["true", ""])
def test_a_skip_for_a_missing_tool_fails_in_ci(pytester: pytest.Pytester, monkeypatch, ci: str) -> None:
    pytester.makeconftest(SUITE_CONFTEST)
    pytester.makepyfile(test_tools=TOOL_TESTS, test_module_skip=MODULE_SKIP)
    monkeypatch.setenv("CI", ci)
    # (a collection error stops a run before its tests: --continue-on-collection-errors shows them all at once)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rA", "--continue-on-collection-errors")
    if ci:
        # A skip in setup (a skipif marker) or at collection (a module's own skip) fails as an error.
        result.assert_outcomes(passed=1, failed=1, skipped=1, errors=2)
        result.stdout.fnmatch_lines(
            [
                "SKIPPED*no glibc malloc_trim*",
                "ERROR test_module_skip.py - CI=true*missing tool: no-such-browser-29 (apt-get install*",
                "ERROR test_tools.py::test_marked_for_a_tool - CI=true*missing tool: no-such-daemon-29*",
                "FAILED test_tools.py::test_needs_a_tool - CI=true*missing tool: no-such-tool-29 (apt-get install*",
            ]
        )
    else:
        result.assert_outcomes(passed=1, skipped=4)
