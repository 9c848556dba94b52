"""The shopbotly operator CLI."""
