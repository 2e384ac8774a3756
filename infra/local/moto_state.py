"""moto's server keeping its state across a restart of its process.

moto keeps every resource in memory, in its backends (one `BackendDict` per
service); it has no persistence of its own. Its recorder
(`/moto-api/recorder/...`) writes the requests it receives and replays them
into a fresh server, which is not the same state: the queues' receipt
handles, visibility times and message ids come out new, and requests that
raced are replayed in one order. Here the backends themselves are kept:

- on SIGTERM the server stops accepting requests (one arriving on a kept-alive
  connection is answered 503, which AWS's SDKs retry), waits until every
  request in flight has ended (counted, `_Gate`: a request answered after
  the snapshot would be acknowledged and lost), and pickles every loaded
  backend, and moto's record of the model instances
  (what `/moto-api/data.json` serves: the e-mails SES accepted), to the state
  file in one piece (written to a temporary file, then renamed);
- at start, a state file that exists is loaded back into the backends before
  the first request is served.

Locks and conditions (an SQS queue's) are not state: they are made anew,
unlocked; keys (Cognito's signing key) are kept as PEM. A process killed with SIGKILL saves nothing: the state is that of
the last orderly stop, as a database restored from its last backup would be.

    python -m infra.local.moto_server -H 127.0.0.1 -p 5000 --state-file PATH
"""
from __future__ import annotations

import importlib
import io
import os
import pickle
import signal
import sys
import threading
import time

_LOCK = type(threading.Lock())
_RLOCK = type(threading.RLock())


class _StatePickler(pickle.Pickler):
    def reducer_override(self, obj):
        if isinstance(obj, _RLOCK):
            return threading.RLock, ()
        if isinstance(obj, _LOCK):
            return threading.Lock, ()
        if isinstance(obj, threading.Condition):
            return threading.Condition, ()
        if type(obj).__module__.startswith("cryptography."):
            return _key_reducer(obj)
        return NotImplemented


def _key_reducer(key):
    """A key of cryptography's (Cognito's signing key), as PEM."""
    from cryptography.hazmat.primitives import serialization as pem

    if hasattr(key, "private_bytes"):
        return _private_key, (key.private_bytes(pem.Encoding.PEM, pem.PrivateFormat.PKCS8, pem.NoEncryption()),)
    if hasattr(key, "public_bytes"):
        return _public_key, (key.public_bytes(pem.Encoding.PEM, pem.PublicFormat.SubjectPublicKeyInfo),)
    return NotImplemented


def _private_key(data: bytes):
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    return load_pem_private_key(data, None)


def _public_key(data: bytes):
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    return load_pem_public_key(data)


def _backend_dicts() -> dict[tuple[str, str], object]:
    """Every BackendDict of the moto modules loaded so far, by (module, name)."""
    from moto.core.base_backend import BackendDict

    found: dict[tuple[str, str], object] = {}
    seen: set[int] = set()
    for module_name, module in sorted(sys.modules.items()):
        if not module_name.startswith("moto.") or module is None:
            continue
        for attribute, value in sorted(vars(module).items()):
            if isinstance(value, BackendDict) and id(value) not in seen:
                seen.add(id(value))
                found[(module_name, attribute)] = value
    return found


def snapshot() -> bytes:
    """The state of every loaded backend and moto's tracked model instances."""
    from moto.core.model_instances import model_data

    tracked = {
        (service, name): model.instances_tracked
        for service, models in model_data.items()
        for name, model in models.items()
        if model.instances_tracked
    }
    state = {"backends": {key: dict(value) for key, value in _backend_dicts().items()}, "tracked": tracked}
    buffer = io.BytesIO()
    _StatePickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(state)
    return buffer.getvalue()


def save(path: str) -> None:
    data = snapshot()
    temporary = f"{path}.tmp"
    with open(temporary, "wb") as f:
        f.write(data)
    os.replace(temporary, path)


def load(path: str) -> int:
    """Load the state file into the backends; returns how many backends."""
    from moto.core.model_instances import model_data

    with open(path, "rb") as f:
        state = pickle.load(f)
    for (module_name, attribute), accounts in state["backends"].items():
        live = getattr(importlib.import_module(module_name), attribute)
        dict.update(live, accounts)
    for (service, name), instances in state["tracked"].items():
        model = model_data.get(service, {}).get(name)
        if model is not None:
            model.instances_tracked[:] = instances
    return len(state["backends"])


class _Gate:
    """A WSGI wrapper that counts the requests in flight and, once closed,
    refuses new ones with a 503 (`Connection: close`): the SDK tries again,
    and finds the server restarted."""

    def __init__(self, app):
        self.app = app
        self._active = 0
        self._closed = False
        self._idle = threading.Condition()

    def __call__(self, environ, start_response):
        with self._idle:
            refused = self._closed
            if not refused:
                self._active += 1
        if refused:
            start_response("503 Service Unavailable", [("Content-Type", "text/plain"), ("Connection", "close"),
                                                      ("Content-Length", "19")])
            return [b"moto is restarting\n"]
        try:
            # The state changes while the app runs; its answer is made of it.
            answer = self.app(environ, start_response)
            try:
                return list(answer)
            finally:
                if hasattr(answer, "close"):
                    answer.close()
        finally:
            with self._idle:
                self._active -= 1
                self._idle.notify_all()

    def close(self, timeout: float) -> bool:
        """Refuse new requests and wait until none is in flight (a long poll
        ends within its wait time); False if some still were after `timeout`."""
        with self._idle:
            self._closed = True
            return self._idle.wait_for(lambda: self._active == 0, timeout)


def serve(host: str, port: int, state_file: str) -> None:
    """moto's server (as `moto.server.main` runs it), loading `state_file` at
    start when it exists and saving it on SIGTERM or SIGINT."""
    from werkzeug.serving import make_server

    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app

    os.environ.setdefault("MOTO_PORT", str(port))
    if os.path.exists(state_file):
        started = time.monotonic()
        count = load(state_file)
        print(f"moto: {count} backends loaded from {state_file} in {time.monotonic() - started:.2f} s", flush=True)
    app = DomainDispatcherApplication(create_backend_app)
    app.debug = True
    gate = _Gate(app)
    server = make_server(host, port, gate, threaded=True, request_handler=MotoRequestHandler)
    stopping = threading.Event()

    def stop(signum, frame):
        if not stopping.is_set():
            stopping.set()
            threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server.serve_forever()
    # No new request is accepted; those in flight (an SQS long poll lasts up
    # to its 20 s wait time) end before the state is taken.
    if not gate.close(timeout=30):
        print("moto: requests still in flight after 30 s; saving the state anyway", flush=True)
    for attempt in range(5):
        try:
            started = time.monotonic()
            save(state_file)
            print(f"moto: state saved to {state_file} in {time.monotonic() - started:.2f} s", flush=True)
            break
        except RuntimeError:  # a request still finishing changed a dict while it was pickled
            time.sleep(0.5)
    server.server_close()
