"""A path no route serves, on the local stage as through API Gateway's
gateway responses (infra/aws/template.py): the API's 404 in its error
shape, with or without a key, for any method."""
import requests


def test_a_path_no_route_serves_is_a_404_in_the_error_shape(stage):
    for method, headers in (("GET", {}), ("POST", {"Authorization": "Bearer sk_nope"}), ("DELETE", {})):
        answer = requests.request(method, stage.url + "/no/such/path", headers=headers, timeout=10)
        assert answer.status_code == 404, (method, answer.text)
        assert answer.headers["Content-Type"].startswith("application/json")
        error = answer.json()["error"]
        assert (error["type"], error["code"], error["param"]) == ("not_found_error", "not_found", None)
        assert error["request_id"] and set(error) == {"type", "code", "message", "param", "request_id"}
