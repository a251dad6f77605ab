"""The app gunicorn serves in the WebSub end-to-end test: wsgi.py's, with two test-only changes.

The hub's callbacks go to the test's FakeSubscriber (subscriber.example, a public-looking
address routed to 127.0.0.1:$TEST_SUBSCRIBER_PORT; the production address checks run
unchanged), and feeds refresh every 2 s (the environment allows 60 s at least).
"""

import os
from dataclasses import replace
from types import SimpleNamespace

from feedproxy.app import create_app
from feedproxy.config import Config
from feedproxy.upstream.callbacks import CallbackClient

from tests.fakefeeds import LoopbackNetwork
from tests.fakesubscriber import PUBLIC, WORLD, resolver

_subscriber = SimpleNamespace(tls=False, port=int(os.environ["TEST_SUBSCRIBER_PORT"]))
app = create_app(
    replace(Config.from_env(), refresh_seconds=2),
    callback_client=CallbackClient(resolver=resolver(WORLD), network=LoopbackNetwork({PUBLIC: _subscriber})),
)
