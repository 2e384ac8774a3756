"""Tenant isolation, swept over the route table: another merchant's object is
404 on every merchant route that names one, never 403 and never the object
(API.md: no existence oracle), and it is left as it was.

The routes come from `endpoint()`'s table (tests/integration/route_sweep.py),
the objects from one maker per path parameter: a new route is swept the day
it is added, and a new kind of parameter fails here until it has a maker."""
from __future__ import annotations

import re

from tests.integration.route_sweep import (
    ACCEPT,
    LEGAL_IDENTITY,
    MAKERS,
    READ_PATHS,
    Owner,
    fill,
    path_parameters,
    query_filters,
    route_id,
    routes_with,
    valid_body,
)

MERCHANT_ROUTES = routes_with("merchant")
BY_OBJECT = [route for route in MERCHANT_ROUTES if path_parameters(route)]
BY_FILTER = [route for route in MERCHANT_ROUTES if not path_parameters(route) and query_filters(route)]


def test_the_sweep_covers_every_route_that_names_an_object():
    assert len(BY_OBJECT) >= 20 and len(BY_FILTER) >= 2
    for route in BY_OBJECT:
        missing = [name for name in path_parameters(route) if name not in MAKERS]
        assert not missing, f"{route_id(route)}: add a maker for {missing} in tests/integration/route_sweep.py"
    assert set(READ_PATHS) == set(MAKERS)


def _call(api, route, path):
    body = valid_body(route)
    return api.request(route.method, path, body, headers={"Accept": ACCEPT})


def test_another_merchants_object_is_404_and_untouched(new_merchant):
    """One owner and one other merchant for the whole sweep (one moto each
    test is the cost): the other's attempts must leave every object as it was."""
    owner, other = Owner(new_merchant(**LEGAL_IDENTITY)), new_merchant(name="Autre")
    failures = []
    for route in BY_OBJECT:
        names = path_parameters(route)
        path = fill(route, {name: owner[name] for name in names})
        shown = {name: owner.api.get(_object_path(name, owner)).json for name in names}

        response = _call(other, route, path)
        if response.status != 404 or response.json["error"]["code"] != "not_found":
            failures.append((route_id(route), "another merchant got", response))
        # The same answer as for an object that never existed: nothing to learn.
        unknown = _call(other, route, fill(route, {name: f"{owner[name]}x" for name in names}))
        if (unknown.status, unknown.json["error"]["code"]) != (404, "not_found"):
            failures.append((route_id(route), "an unknown object got", unknown))
        for name in names:
            if owner.api.get(_object_path(name, owner)).json != shown[name]:
                failures.append((route_id(route), f"changed {name}", None))
        if route.method == "GET" and _call(owner.api, route, path).status != 200:
            failures.append((route_id(route), "the owner could not read", path))
    assert not failures, "\n".join(map(str, failures))


def test_a_list_filtered_by_another_merchants_object_shows_nothing(new_merchant):
    owner, other = Owner(new_merchant()), new_merchant(name="Autre")
    for route in BY_FILTER:
        for name in query_filters(route):
            mine = owner.api.get(f"{route.path}?{name}={owner[name]}")
            assert mine.status == 200, mine
            response = other.get(f"{route.path}?{name}={owner[name]}")
            assert response.status in (200, 404), (route_id(route), name, response)
            if response.status == 200:
                assert response.json["data"] == [], (route_id(route), name, response)
            else:
                assert response.json["error"]["code"] == "not_found"


def _object_path(name: str, owner: Owner) -> str:
    """Where the owner reads it (with the objects that path names, e.g. a
    delivery's endpoint)."""
    path = READ_PATHS[name]
    return path.format(**{part: owner[part] for part in re.findall(r"{(\w+)}", path)})
