"""localstripe on loopback, in memory.

localstripe pickles its whole store to one fixed file in /tmp on every write:
slow once it holds thousands of objects, and shared by every instance on the
machine. The local stage starts from scratch every time anyway, so the store
stays in memory, and the server listens on 127.0.0.1 only.
"""
import argparse

from aiohttp import web
from localstripe import resources, server


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8420)
    args = parser.parse_args()
    resources.Store.dump_to_disk = lambda self: None
    web.run_app(server.app, host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
