"""ShopBotly shared contract and plumbing, used by every service."""

__version__ = "0.1.0"
