"""ShopBotly order-reader: millisecond order and ticket lookups from a materialized table."""
