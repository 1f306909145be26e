"""The pytest plugin, used from a test file the way a user would (run by pytester, in-process)."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]
PLUGIN = ("-p", "mockgen.pytest_plugin", "-p", "no:cacheprovider")


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    pytester.makeini("[pytest]\naddopts = --strict-markers\nfilterwarnings = error\n")
    return pytester.runpytest(*PLUGIN, *args)


def test_fixture_shares_one_server_and_resets_it_before_each_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import json, urllib.request

        def create(mockgen):
            body = json.dumps({"model_id": "gpt-image-2", "prompt": "a cat"}).encode()
            req = urllib.request.Request(mockgen.url("/api/v1/tasks/create"), body, mockgen.headers())
            return json.loads(urllib.request.urlopen(req).read())["data"]

        seen = []

        def test_first(mockgen):
            seen.append(mockgen.base_url)
            create(mockgen)
            assert len(mockgen.tasks()) == 1
            assert mockgen.now() == mockgen.advance(0)  # the manual clock by default

        def test_second_starts_clean_on_the_same_server(mockgen):
            assert seen == [mockgen.base_url]
            assert mockgen.tasks() == [] and mockgen.requests() == []
            mockgen.verify_never("POST /api/v1/tasks/create")
        """
    )
    run(pytester).assert_outcomes(passed=2)


def test_marker_picks_scenario_and_clock_per_test_and_per_module(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_module_marker="""
        import json, urllib.request
        import pytest

        pytestmark = pytest.mark.mockgen(scenario="ci")

        def health(mockgen):
            return json.loads(urllib.request.urlopen(mockgen.url("/_mock/health")).read())

        def test_module_level(mockgen):
            assert health(mockgen)["scenario"] == "ci"
            assert mockgen.api_key == "sk-ci000000000000000000000000000001"

        @pytest.mark.mockgen("low-balance", clock="real")
        def test_the_closest_marker_wins(mockgen):
            assert (health(mockgen)["scenario"], health(mockgen)["clock"]) == ("low-balance", "real")

        @pytest.mark.mockgen(scenario="name: inline\\nclock: real\\n", clock="scenario")
        def test_yaml_text_and_the_scenarios_own_clock(mockgen):
            assert (health(mockgen)["scenario"], health(mockgen)["clock"]) == ("inline", "real")
        """,
        test_default="""
        import json, urllib.request

        def test_back_to_the_default(mockgen):
            health = json.loads(urllib.request.urlopen(mockgen.url("/_mock/health")).read())
            assert (health["scenario"], health["clock"]) == ("default", "manual")
        """,
    )
    run(pytester, "-v").assert_outcomes(passed=4)


def test_ini_options_set_the_default_scenario(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_ci(mockgen):
            assert mockgen.api_key == "sk-ci000000000000000000000000000001"
        """
    )
    pytester.makeini("[pytest]\nmockgen_scenario = ci\nmockgen_clock = scenario\n")
    pytester.runpytest(*PLUGIN).assert_outcomes(passed=1)


def test_marker_is_registered_for_strict_markers(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_nothing():\n    pass\n")
    result = run(pytester, "--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.mockgen(scenario=None, clock=None):*"])


def test_a_bad_marker_is_an_error_that_says_why(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.mockgen(clock="sideways")
        def test_bad_clock(mockgen):
            pass

        @pytest.mark.mockgen(scenario="ci", speed=3)
        def test_bad_keyword(mockgen):
            pass
        """
    )
    result = run(pytester)
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(
        ["*mockgen clock must be one of manual, real, scenario, not 'sideways'*", "*takes scenario= and clock=*"]
    )


def test_a_failed_verification_reads_like_wiremocks(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import urllib.request, urllib.error

        def test_client_called_the_wrong_path(mockgen):
            try:
                urllib.request.urlopen(mockgen.url("/api/v1/task/abc"))
            except urllib.error.HTTPError:
                pass
            mockgen.verify("GET /api/v1/tasks/abc", count=1)
        """
    )
    result = run(pytester)
    result.assert_outcomes(failed=1)
    output = result.stdout.str()
    assert "expected exactly 1 request(s) matching GET /api/v1/tasks/abc, got 0" in output
    assert "GET /api/v1/task/abc -> 404  [near miss: No route GET /api/v1/task/abc." in output


def test_the_fixtures_world_can_live_in_a_shared_store(pytester: pytest.Pytester) -> None:
    from .redis_server import fresh_prefix, session_server

    url, prefix = session_server().url, fresh_prefix("plugin")
    pytester.makeini(f"[pytest]\naddopts = --strict-markers\nmockgen_store = {url}\nmockgen_store_prefix = {prefix}\n")
    pytester.makepyfile(
        """
        import json, urllib.request

        def test_on_redis(mockgen):
            health = json.loads(urllib.request.urlopen(mockgen.url("/_mock/health")).read())
            assert health["store"] == "redis" and health["up"] is True
            body = json.dumps({"model_id": "gpt-image-2", "prompt": "a cat"}).encode()
            req = urllib.request.Request(mockgen.url("/api/v1/tasks/create"), body, mockgen.headers())
            assert json.loads(urllib.request.urlopen(req).read())["code"] == 200
            assert len(mockgen.tasks()) == 1 and mockgen.balance() == 1000 - 15

        def test_reset_before_each_test(mockgen):
            assert mockgen.tasks() == []
        """
    )
    pytester.runpytest(*PLUGIN).assert_outcomes(passed=2)
