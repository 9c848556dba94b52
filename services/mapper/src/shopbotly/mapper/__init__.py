"""ShopBotly mapper: declarative mapping and trigger rules from raw events to CRM commands."""
