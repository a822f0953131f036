"""The test tiers of tests/conftest.py: a test that starts another process is told apart by its
own source or by that of a helper of its module it calls."""
import subprocess

from conftest import _starts_processes


def run_script():
    return subprocess.run(["true"], check=True)


# Shaped like tests (not collected: no test_ prefix).
def direct_use():
    subprocess.run(["true"], check=True)


def through_a_helper():
    run_script()


def in_this_process():
    assert sum([1, 2]) == 3


def test_a_test_is_in_the_cli_tier_when_it_or_a_helper_starts_a_process():
    assert _starts_processes(direct_use)
    assert _starts_processes(through_a_helper)
    assert not _starts_processes(in_this_process)
