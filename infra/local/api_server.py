"""The local stage's API: `chalice local --no-autoreload`, with every HTTP
method reaching the app.

chalice's local server answers the methods it has no handler for itself
(TRACE, CONNECT, any other: `501` from Python's http.server) and answers an
OPTIONS it has no route for with an empty `200`, where the deployed API
hands both to the app (the ANY method of every path, infra/aws/template.py),
which answers `405 method_not_allowed` with `Allow` (chalicelib/api/middleware.py).
Here every method goes to the app, so the local stage answers as AWS does.

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
from chalice.local import ChaliceRequestHandler, CustomLocalChalice, LocalChalice, LocalDevServer, LocalGateway


class EveryMethodGateway(LocalGateway):
    def _has_user_defined_options_method(self, lambda_event) -> bool:
        # No CORS preflight is answered on the app's behalf: it answers OPTIONS (405).
        return True


class EveryMethodHandler(ChaliceRequestHandler):
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
