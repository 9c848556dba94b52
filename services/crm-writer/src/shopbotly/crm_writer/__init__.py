"""ShopBotly crm-writer: applies CRM commands once, in order, within the CRM's limits."""
