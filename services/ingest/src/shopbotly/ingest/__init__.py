"""ShopBotly ingest: verified, durable webhook intake and the Sync Lead API."""
