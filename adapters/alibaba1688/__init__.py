"""1688.com factory adapter: relay buys each factory order on the 1688 open platform and polls its parcels."""

from adapters.alibaba1688.adapter import Alibaba1688Factory

__all__ = ["Alibaba1688Factory"]
