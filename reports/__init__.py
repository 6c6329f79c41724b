"""Markdown and self-contained HTML reports of a study; statistics come from harness.stats."""
