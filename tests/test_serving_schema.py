"""Property-based: schemathesis drives `/predict`, `/invocations` and `/feedback` from the service's own OpenAPI
document against a real uvicorn process; no generated request may get a 5xx."""
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from test_serving import Server, copy_workspace

EXAMPLES = 80  # per operation


@pytest.fixture(scope="module")
def api_server(demo_run, tmp_path_factory):
    ws = copy_workspace(demo_run[0], tmp_path_factory.mktemp("schema_ws"))
    s = Server(ws, "serving.max_rows=50")
    yield s
    s.stop()


def test_no_server_errors_on_generated_requests(api_server):
    url = f"http://127.0.0.1:{api_server.port}"
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json").include(path_regex="^/(predict|invocations|feedback)$")
    seen = {}
    for result in schema.get_all_operations():
        op = result.ok()

        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=op.as_strategy())
        def check(case):
            r = case.call(base_url=url)
            seen.setdefault(op.path, set()).add(r.status_code)
            assert r.status_code < 500, (case.path, case.body, r.status_code, r.text[:500])
            assert r.status_code in (200, 400, 413, 422), (case.path, case.body, r.status_code, r.text[:300])

        check()
    assert set(seen) == {"/predict", "/invocations", "/feedback"}
    assert all(200 in codes for codes in seen.values()), seen  # the generator reached valid requests too
