"""Service functions: the one place per resource where SQL lives."""
