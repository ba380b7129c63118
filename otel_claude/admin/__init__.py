"""Admin API sources: usage report, cost report, Claude Code analytics and name lists."""
