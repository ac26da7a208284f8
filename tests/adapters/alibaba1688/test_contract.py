"""The factory contract suite against the 1688 adapter and its fake gateway, over real HTTP.

The fake refuses cancellations within seconds of creation like 1688 (`CLOSE_ORDER_TOO_FAST`); the suite's
`sleep` returns at once, so its fake takes cancellations at any age (the window is tested in test_alibaba1688.py).
"""

from functools import partial

from adapters.alibaba1688 import Alibaba1688Factory
from adapters.alibaba1688.fake import Fake1688Gateway
from relay.testing.contract import get_factory_test_class

TestAlibaba1688Contract = get_factory_test_class(
    Alibaba1688Factory, partial(Fake1688Gateway, cancel_min_age_s=0)
)
