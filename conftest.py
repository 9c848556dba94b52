"""Root conftest: the real-Kafka fixtures from shopbotly.testkit.kafka apply to every test tree."""

pytest_plugins = ["shopbotly.testkit.kafka"]
