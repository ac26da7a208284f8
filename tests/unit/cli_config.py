"""The config the CLI tests share: one demo storefront, two webhook factories (acme, bolt), `{db}`."""

CONFIG = """
[daemon]
database = "sqlite:///{db}"
[storefronts.shop]
adapter = "demo"
url = "https://shop.example"
token = "t"
[factories.acme]
adapter = "webhook"
url = "https://acme.example/orders"
signing_secret = "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0"
callback_secrets = ["c"]
[factories.bolt]
adapter = "webhook"
url = "https://bolt.example/orders"
signing_secret = "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0"
callback_secrets = ["c"]
"""
