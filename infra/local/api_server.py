"""The local stage's API: `chalice local --no-autoreload`, with every HTTP
method reaching the app.

chalice's local server answers the methods it has no handler for itself
(TRACE, CONNECT, any other: `501` from Python's http.server) and answers an
OPTIONS it has no route for with an empty `200`, where the deployed API
hands both to the app (the ANY method of every path, infra/aws/template.py),
which answers `405 method_not_allowed` with `Allow` (chalicelib/api/middleware.py).
Here every method goes to the app, so the local stage answers as AWS does; and
a path no route serves is the deployed API's `404 not_found`, not chalice's
imitation of API Gateway's default 403.

    python -m infra.local.api_server --host 127.0.0.1 --port 8000 --stage local
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from http.server import BaseHTTPRequestHandler

from chalice.cli.factory import CLIFactory
from chalice.deploy.validate import validate_routes
from chalice.local import (ChaliceRequestHandler, CustomLocalChalice, ForbiddenError, LocalChalice, LocalDevServer,
                           LocalGateway, LocalGatewayException)

from infra.aws.template import UNKNOWN_PATH_BODY


class UnknownPath(LocalGatewayException):
    CODE = 404


class EveryMethodGateway(LocalGateway):
    def _has_user_defined_options_method(self, lambda_event) -> bool:
        # No CORS preflight is answered on the app's behalf: it answers OPTIONS (405).
        return True

    def handle_request(self, method, path, headers, body):
        # A path no route serves: the 404 the deployed API's gateway response
        # gives (infra/aws/template.py), where chalice imitates API Gateway's 403.
        try:
            return super().handle_request(method, path, headers, body)
        except ForbiddenError:
            try:
                self._generate_lambda_event(method, path, headers, body)
            except ValueError:
                request_id = self._generate_lambda_context().aws_request_id
                text = UNKNOWN_PATH_BODY.replace("$context.requestId", request_id)
                raise UnknownPath({"Content-Type": "application/json"}, text.encode()) from None
            raise


class EveryMethodHandler(ChaliceRequestHandler):
    # http.server sends an answer's headers and its body in two writes; on a
    # kept-alive connection Nagle's algorithm holds the body back until the
    # client acknowledges the headers, which it delays (40 ms on Linux):
    # every request of a session took 43 ms instead of 2.
    disable_nagle_algorithm = True

    def __init__(self, request, client_address, server, app_object, config):
        self.local_gateway = EveryMethodGateway(app_object, config)
        # BaseHTTPRequestHandler handles the request inside its constructor.
        BaseHTTPRequestHandler.__init__(self, request, client_address, server)

    def __getattr__(self, name: str):
        # http.server looks for `do_<METHOD>`; every method is the app's.
        if name.startswith("do_"):
            return self._generic_handle
        raise AttributeError(name)


def create_server(host: str, port: int, stage: str) -> LocalDevServer:
    """As `chalice local` builds its server (chalice.cli.create_local_server)."""
    factory = CLIFactory(project_dir=os.getcwd(), environ=os.environ)
    config = factory.create_config_obj(chalice_stage_name=stage)
    app_obj = config.chalice_app
    validate_routes(app_obj.routes)
    CustomLocalChalice.__bases__ = (LocalChalice, app_obj.__class__)
    app_obj.__class__ = CustomLocalChalice
    return LocalDevServer(app_obj, config, host, port, handler_cls=EveryMethodHandler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--stage", default="local")
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(message)s")
    create_server(args.host, args.port, args.stage).serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
