"""Root conftest: the real-Kafka fixtures from shopbotly.common.testing apply to every test tree."""

pytest_plugins = ["shopbotly.common.testing"]
