"""Search outputs: plain tables first (``tables.py``), then rendered as CSV, Markdown and PNG."""
