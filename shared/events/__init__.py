"""Domain events: their models, the rules that turn them into notifications, and the handler."""
